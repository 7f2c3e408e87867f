import numpy as np
import pytest
import torch
from helpers.dense_rerank import FLOAT16_TOLERANCE, dense_re_ranking

from reidlib.config import load_config
from reidlib.errors import ConfigError
from reidlib.evaluation import evaluate_features, re_ranking, rerank_options


def clustered(num_query, num_gallery, ids=20, dim=32, noise=1.0, seed=0):
    """L2-normalised features around one random centre per identity, and the identities."""
    rng = np.random.default_rng(seed)
    pids = rng.integers(ids, size=num_query + num_gallery)
    feats = rng.standard_normal((ids, dim))[pids] + noise * rng.standard_normal((len(pids), dim))
    feats = torch.nn.functional.normalize(torch.tensor(feats, dtype=torch.float32), dim=1)
    return feats[:num_query], feats[num_query:], pids


@pytest.mark.parametrize("k1, k2, lambda_value", [(20, 6, 0.3), (5, 1, 0.5), (7, 3, 0.0), (3, 10, 1.0)])
def test_matches_the_dense_algorithm(k1, k2, lambda_value):
    query, gallery, _ = clustered(60, 300)
    ours = re_ranking(query, gallery, k1=k1, k2=k2, lambda_value=lambda_value)
    assert ours.shape == (60, 300) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, dense_re_ranking(query, gallery, k1, k2, lambda_value), atol=FLOAT16_TOLERANCE)


def test_a_tiny_memory_budget_gives_the_same_distances():
    query, gallery, _ = clustered(40, 200, seed=1)
    roomy = re_ranking(query, gallery)
    tiny = re_ranking(query.numpy(), gallery.numpy(), memory_mb=0.01)  # chunks of one row, one query
    np.testing.assert_allclose(tiny, roomy, atol=1e-5)


def test_re_ranking_through_the_trial_metrics_improves_map_on_clustered_features():
    rng = np.random.default_rng(0)
    ids, per_id = 30, 12
    pids = np.repeat(np.arange(ids), per_id)
    cams = np.tile(np.arange(4), ids * per_id // 4)
    feats = torch.tensor(rng.standard_normal((ids, 16))[pids] + rng.standard_normal((len(pids), 16)),
                         dtype=torch.float32)
    is_query = np.arange(len(pids)) % per_id == 0  # one query per identity
    split = (feats[is_query], feats[~is_query], pids[is_query], pids[~is_query], cams[is_query], cams[~is_query])
    cfg = load_config(overrides={"TEST.RE_RANKING": "yes"})
    plain, _ = evaluate_features(*split, rerank=rerank_options(load_config().TEST))
    reranked, _ = evaluate_features(*split, rerank=rerank_options(cfg.TEST, device="cpu"))
    assert reranked["val/mAP"] > plain["val/mAP"] + 0.05  # about 0.50 -> 0.63


@pytest.mark.parametrize("key, options", [("TEST.RERANK_K1", {"k1": 0}), ("TEST.RERANK_K2", {"k2": 2.5}),
                                          ("TEST.RERANK_LAMBDA", {"lambda_value": 1.5}),
                                          ("TEST.RERANK_MEMORY_MB", {"memory_mb": 0})])
def test_impossible_parameters_name_their_config_key(key, options):
    query, gallery, _ = clustered(5, 20)
    with pytest.raises(ConfigError) as err:
        re_ranking(query, gallery, **options)
    assert err.value.field == key
