import re

import numpy as np
import pytest
import torch
from helpers.reference_rank import reference_eval

from reidlib.errors import DatasetError
from reidlib.evaluation import evaluate_rank, rank


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


def _problem(seed, num_q=25, num_g=150, ids=8, cams=3):
    rng = np.random.default_rng(seed)
    return (rng.random((num_q, num_g)), rng.integers(ids, size=num_q), rng.integers(ids, size=num_g),
            rng.integers(cams, size=num_q), rng.integers(cams, size=num_g))


def _awkward(distmat):
    """Distance matrices the binning must rank like a sort: (name, matrix as given, as the reference sees it)."""
    constant_rows = distmat.copy()
    constant_rows[::3] = 0.25  # a row of equal distances has no width to bin
    with_inf = distmat.copy()
    with_inf[1, ::7], with_inf[2, ::5] = np.inf, -np.inf
    huge = distmat * 3e38 - 1.5e38  # the row's width overflows float32
    as_half = torch.from_numpy(distmat).half()
    as_int = np.round(distmat * 4).astype(np.int64)  # integer distances, many ties
    return [
        ("negative", distmat - 0.7, distmat - 0.7),
        ("constant rows", constant_rows, constant_rows),
        ("infinities", with_inf, with_inf),
        ("float32 overflow", torch.from_numpy(huge).float(), huge.astype(np.float32)),
        ("float16 tensor", as_half, as_half.float().numpy()),
        ("integers", as_int, as_int),
        ("near ties", 0.5 + distmat * 1e-7, 0.5 + distmat * 1e-7),
        ("tiny spread (bin width overflows)", distmat * 1e-306, distmat * 1e-306),
        ("tiny float32 spread", torch.from_numpy(distmat * 1e-38).float(), (distmat * 1e-38).astype(np.float32)),
        ("reversed columns (negative strides)", distmat[:, ::-1], distmat[:, ::-1]),
    ]


@pytest.mark.parametrize("case", range(10))
def test_awkward_distances_rank_like_a_stable_sort(case):
    distmat, *ids = _problem(case)
    name, given, seen = _awkward(distmat)[case]
    cmc, mAP, mINP = evaluate_rank(given, *ids)
    ref_cmc, ref_mAP, ref_mINP = reference_eval(seen, *ids)
    np.testing.assert_allclose(cmc, ref_cmc, atol=1e-6, err_msg=name)
    assert (mAP, mINP) == pytest.approx((ref_mAP, ref_mINP), abs=1e-6), name


def test_rows_split_into_chunks_and_few_bins_give_the_same_result(monkeypatch):
    """Chunk edges (and chunks whose queries have no match) must not change a count."""
    distmat, q_pids, g_pids, q_camids, g_camids = _problem(7, num_q=60, ids=30)
    q_pids[10:25] = 999  # a run of queries with no gallery match: whole chunks without a match
    expected = reference_eval(distmat, q_pids, g_pids, q_camids, g_camids)
    monkeypatch.setitem(rank.CHUNK_ELEMENTS, "cpu", 2 * distmat.shape[1])
    monkeypatch.setattr(rank, "BINS_PER_ROW", 3)  # most items share a bin with a match
    cmc, mAP, mINP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)
    np.testing.assert_allclose(cmc, expected[0], atol=1e-6)
    assert (mAP, mINP) == pytest.approx(expected[1:], abs=1e-6)


def test_tensors_are_ranked_on_their_device_with_the_same_result():
    distmat, q_pids, g_pids, q_camids, g_camids = _problem(3)
    as_arrays = evaluate_rank(distmat.astype(np.float32), q_pids, g_pids, q_camids, g_camids)
    as_tensors = evaluate_rank(*(torch.from_numpy(a) for a in (distmat.astype(np.float32), q_pids, g_pids,
                                                               q_camids, g_camids)))
    np.testing.assert_array_equal(as_arrays[0], as_tensors[0])
    assert as_arrays[1:] == as_tensors[1:]


def test_nan_distance_is_an_error_naming_the_row():
    distmat, *ids = _problem(0)
    distmat[4, 9] = np.nan
    with pytest.raises(ValueError, match="distmat: .*NaN.* row 4"):
        evaluate_rank(distmat, *ids)


def test_ids_of_any_kind_compare_exactly():
    """Ids are compared as values: strings work, and ids that differ only past float64's precision differ."""
    distmat, q_pids, g_pids, q_camids, g_camids = _problem(5)
    expected = reference_eval(distmat, q_pids, g_pids, q_camids, g_camids)
    as_strings = evaluate_rank(distmat, [f"p{p}" for p in q_pids], [f"p{p}" for p in g_pids],
                               q_camids.astype(str), g_camids.astype(str))
    assert as_strings[1:] == pytest.approx(expected[1:], abs=1e-6)
    big = 2**62
    assert evaluate_rank(np.array([[0.1, 0.2]]), [big], [big + 1, big], [0], [1, 1])[1] == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs, message", [
    ({"q_pids": np.arange(6)}, "q_pids: expected 5 ids (one per distmat row), got 6"),
    ({"g_camids": np.zeros(3)}, "g_camids: expected 4 ids (one per distmat column), got 3"),
    ({"max_rank": 0}, "max_rank: expected a positive integer, got 0"),
])
def test_inputs_that_do_not_fit_name_the_argument(kwargs, message):
    args = {"distmat": np.zeros((5, 4)), "q_pids": np.arange(5), "g_pids": np.arange(4),
            "q_camids": np.zeros(5), "g_camids": np.ones(4)}
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluate_rank(**{**args, **kwargs})
