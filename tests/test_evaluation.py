import numpy as np
import pytest

from reidlib.errors import DatasetError
from reidlib.evaluation import evaluate_rank


def reference_eval(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """reid-strong-baseline's per-query eval_func, with a stable sort (ties: gallery order)."""
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    cmcs, aps, inps = [], [], []
    for i in range(num_q):
        order = np.argsort(distmat[i], kind="stable")
        keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        matches = (g_pids[order] == q_pids[i]).astype(np.int32)[keep]
        if not matches.any():
            continue
        cmc = matches.cumsum()
        last = np.where(matches == 1)[0].max()
        inps.append(cmc[last] / (last + 1.0))
        cmc[cmc > 1] = 1
        cmcs.append(cmc[:max_rank])
        precision = matches.cumsum() / (np.arange(len(matches)) + 1.0)
        aps.append((precision * matches).sum() / matches.sum())
    return np.mean(cmcs, axis=0), float(np.mean(aps)), float(np.mean(inps))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_matches_per_query_reference(seed, ties):
    rng = np.random.default_rng(seed)
    num_q, num_g, ids, cams = 30, 200, 12, 4
    q_pids, g_pids = rng.integers(ids, size=num_q), rng.integers(ids, size=num_g)
    q_camids, g_camids = rng.integers(cams, size=num_q), rng.integers(cams, size=num_g)
    distmat = rng.random((num_q, num_g))
    if ties:
        distmat = np.round(distmat * 5) / 5  # many equal distances
    cmc, mAP, mINP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20)
    ref_cmc, ref_mAP, ref_mINP = reference_eval(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20)
    np.testing.assert_allclose(cmc, ref_cmc, atol=1e-6)
    assert mAP == pytest.approx(ref_mAP, abs=1e-6)
    assert mINP == pytest.approx(ref_mINP, abs=1e-6)


def test_perfect_ranking_scores_one_and_same_camera_matches_are_ignored():
    q_pids, q_camids = np.array([1, 2]), np.array([0, 0])
    g_pids, g_camids = np.array([1, 1, 2, 3]), np.array([0, 1, 1, 1])
    # gallery 0 (same id, same camera) is nearest but must be removed by the protocol
    distmat = np.array([[0.0, 0.1, 0.9, 0.8], [0.5, 0.6, 0.1, 0.9]])
    cmc, mAP, mINP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)
    assert cmc[0] == 1.0 and mAP == 1.0 and mINP == 1.0


def test_no_valid_query_is_an_error():
    with pytest.raises(DatasetError):
        evaluate_rank(np.zeros((1, 2)), np.array([1]), np.array([1, 2]), np.array([0]), np.array([0, 0]))
