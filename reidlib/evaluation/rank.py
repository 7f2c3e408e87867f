"""The Market-1501 ranking protocol (CMC, mAP, mINP), vectorised over queries.

For each query, gallery items with the same person id *and* camera are removed; queries whose id has
no remaining gallery match are skipped. Ties in distance are broken by gallery order (stable sort),
as a per-query ``np.argsort(kind="stable")`` would.
"""
from __future__ import annotations

import numpy as np

from reidlib.errors import DatasetError


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50):
    """Return ``(cmc, mAP, mINP)``: ``cmc[k]`` is rank-(k+1) accuracy, all in [0, 1]."""
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    num_g = distmat.shape[1]
    max_rank = min(max_rank, num_g)
    order = np.argsort(distmat, axis=1, kind="stable")
    same_pid = g_pids[order] == q_pids[:, None]
    keep = ~(same_pid & (g_camids[order] == q_camids[:, None]))
    hits = same_pid & keep
    num_hits = hits.sum(axis=1)
    valid = num_hits > 0
    if not valid.any():
        raise DatasetError("query", "no query has a matching gallery image in another camera")
    hits, keep, num_hits = hits[valid], keep[valid], num_hits[valid]
    kept_rank = np.maximum(np.cumsum(keep, axis=1), 1)  # 1-based rank among kept items (removed ones never hit)
    hits_so_far = np.cumsum(hits, axis=1)
    ap = (hits * hits_so_far / kept_rank).sum(axis=1) / num_hits
    first_hit = np.where(hits.any(axis=1), kept_rank[np.arange(len(hits)), hits.argmax(axis=1)], num_g + 1)
    last_hit = kept_rank[np.arange(len(hits)), num_g - 1 - hits[:, ::-1].argmax(axis=1)]
    cmc = (first_hit[:, None] <= np.arange(1, max_rank + 1)[None, :]).mean(axis=0)
    inp = num_hits / last_hit
    return cmc.astype(np.float32), float(ap.mean()), float(inp.mean())
