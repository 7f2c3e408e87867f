"""The Market-1501 ranking protocol (CMC, mAP, mINP) without sorting the gallery.

For each query, gallery items with the same person id *and* camera are removed; queries whose id has
no remaining gallery match are skipped. Only the ranks of the true matches matter, and the rank of a
match is 1 + the kept gallery items nearer than it: counted by ``searchsorted`` against the few match
distances, not by sorting 15,913 distances per query. Ties in distance are broken by gallery order (a
stable sort's rule); a query whose match ties with a non-match uses the stable sort itself.
"""
from __future__ import annotations

import numpy as np

from reidlib.errors import DatasetError


def _stable_ranks(dist: np.ndarray, hits: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Ranks by a full stable sort: the reference rule, used when a match ties with a non-match."""
    keep = np.ones(len(dist), dtype=bool)
    keep[removed] = False
    is_hit = np.zeros(len(dist), dtype=bool)
    is_hit[hits] = True
    order = np.argsort(dist, kind="stable")
    return np.flatnonzero(is_hit[order][keep[order]]) + 1


def _match_ranks(dist: np.ndarray, same: np.ndarray, hits: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Ascending 1-based ranks of a query's matches among the kept gallery items.

    ``same``: gallery indices with the query's id; ``hits``: those in other cameras (the matches);
    ``removed``: those in the query's camera (not ranked).
    """
    match_d = np.sort(dist[hits])
    right = np.searchsorted(match_d, dist, side="right")  # matches at or below each gallery distance
    tied = (right > 0) & (dist == match_d[np.maximum(right - 1, 0)])
    if tied.sum() > tied[same].sum():  # a non-match at exactly a match's distance: order by index
        return _stable_ranks(dist, hits, removed)
    others = np.bincount(right, minlength=len(match_d) + 1) - np.bincount(right[same], minlength=len(match_d) + 1)
    return np.cumsum(others)[: len(match_d)] + np.arange(1, len(match_d) + 1)


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50):
    """Return ``(cmc, mAP, mINP)``: ``cmc[k]`` is rank-(k+1) accuracy, all in [0, 1]."""
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    max_rank = min(max_rank, distmat.shape[1])
    order = np.argsort(g_pids, kind="stable")
    pids, starts = np.unique(g_pids[order], return_index=True)
    by_pid = dict(zip(pids.tolist(), np.split(order, starts[1:])))
    first_hits, aps, inps = [], [], []
    for q, (pid, cam) in enumerate(zip(q_pids.tolist(), q_camids.tolist())):
        same = by_pid.get(pid)
        if same is None:
            continue
        in_cam = g_camids[same] == cam
        hits, removed = same[~in_cam], same[in_cam]
        if not len(hits):
            continue
        ranks = _match_ranks(distmat[q], same, hits, removed)
        first_hits.append(ranks[0])
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
        inps.append(len(ranks) / ranks[-1])
    if not aps:
        raise DatasetError("query", "no query has a matching gallery image in another camera")
    cmc = (np.asarray(first_hits)[:, None] <= np.arange(1, max_rank + 1)[None, :]).mean(axis=0)
    return cmc.astype(np.float32), float(np.mean(aps)), float(np.mean(inps))
