"""The Market-1501 ranking protocol (CMC, mAP, mINP) without sorting the gallery.

For each query, gallery items with the same person id *and* camera are removed; queries whose id has
no remaining gallery match are skipped. Only the ranks of the true matches matter: a match's rank is
1 + the kept gallery items before it. Ties in distance are broken by gallery index (the rule of
reid-strong-baseline's ``eval_func`` with a stable argsort), so "before" means a smaller
``(distance, gallery index)`` pair.

The counting avoids sorting each row (15,913 distances per query at Market-1501 size). Each row is
cut into equal-width distance bins; binning is monotone, so a per-row histogram's running sum counts
every item in a lower bin than the match, and only the items that share a bin with a match (about 1%
of the matrix) are compared exactly. It is tensor code: it runs where the distances are, on the GPU
when they are there.
"""
from __future__ import annotations

import numpy as np
import torch

from reidlib.errors import DatasetError

BINS_PER_ROW = 4096  # more bins: fewer items compared exactly, a larger histogram
# distances binned at once: on the CPU a chunk (~12 MB of work) stays in cache; on a GPU larger chunks
# mean fewer kernel launches (~200 MB of work)
CHUNK_ELEMENTS = {"cpu": 2**20, "cuda": 2**24}


def _as_distances(distmat) -> torch.Tensor:
    if not isinstance(distmat, torch.Tensor):
        distmat = torch.from_numpy(np.ascontiguousarray(distmat))
    if distmat.ndim != 2:
        raise ValueError(f"distmat: expected a query x gallery matrix, got shape {tuple(distmat.shape)}")
    if not distmat.is_floating_point():
        distmat = distmat.double()  # integers beyond 2**53 would tie
    elif distmat.dtype in (torch.float16, torch.bfloat16):
        distmat = distmat.float()  # exact; bins in half precision would be too coarse
    return distmat.contiguous()


def _codes(names: tuple[str, str], values: tuple, shape, device) -> list[torch.Tensor]:
    """Query and gallery ids of any kind (ints, strings, ...) as int64 codes on ``device``, equal
    exactly where the ids are; checked to number one per distmat row and column."""
    for name, ids, length, axis in zip(names, values, shape, ("row", "column")):
        if len(ids) != length:
            raise ValueError(f"{name}: expected {length} ids (one per distmat {axis}), got {len(ids)}")
    if all(isinstance(v, torch.Tensor) for v in values):
        _, codes = torch.unique(torch.cat([v.reshape(-1).to(device) for v in values]), return_inverse=True)
    else:
        arrays = [v.cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in values]
        codes = torch.from_numpy(np.unique(np.concatenate(arrays), return_inverse=True)[1].reshape(-1)).to(device)
    return list(torch.split(codes.long(), [len(v) for v in values]))


def _count_before(groups, values, index, is_probe) -> torch.Tensor:
    """For each probe (in order): the non-probes of its group that come before it in
    ``(value, index)`` order. An item equal to the probe in both (the probe itself) is not before it."""
    # lexicographic (group, value, index, probe first) by stable sorts, least significant key first
    order = torch.argsort(index * 2 + (~is_probe).long(), stable=True)
    order = order[torch.argsort(values[order], stable=True)]
    order = order[torch.argsort(groups[order], stable=True)]
    counted = (~is_probe[order]).long()
    before = counted.cumsum(0) - counted
    sorted_groups = groups[order]
    starts = torch.ones_like(sorted_groups, dtype=torch.bool)
    starts[1:] = sorted_groups[1:] != sorted_groups[:-1]
    group_base = torch.where(starts, before, 0).cummax(0).values  # `before` never decreases
    result = torch.empty_like(before)
    result[order] = before - group_base
    return result[is_probe]


def _items_before(distmat: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """For each (row, col) of sorted ``rows``: the items of that row before it (all gallery items)."""
    num_rows, num_cols = distmat.shape
    device = distmat.device
    keys_per_row = BINS_PER_ROW + 1  # bins 0..BINS_PER_ROW: the row's maximum may round to the last
    chunk_elements = CHUNK_ELEMENTS.get(device.type, CHUNK_ELEMENTS["cpu"])
    # a chunk's distances and its histogram both fit the budget; 2**16 rows of keys fit in int32
    step = max(1, min(chunk_elements // max(num_cols, keys_per_row), 2**16))
    counts = torch.empty(len(rows), dtype=torch.long, device=device)
    bounds = torch.searchsorted(rows, torch.arange(0, num_rows + step, step, device=device)).tolist()
    for start, first, last in zip(range(0, num_rows, step), bounds, bounds[1:]):
        if first == last:
            continue
        chunk = distmat[start:start + step]
        low, high = chunk.amin(1), chunk.amax(1)  # (aminmax along rows is far slower on the CPU)
        if torch.isnan(low).any() or torch.isnan(high).any():
            bad = start + int(torch.nonzero(torch.isnan(low) | torch.isnan(high))[0])
            raise ValueError(f"distmat: expected distances, got NaN in query row {bad}")
        width = high - low
        scale = BINS_PER_ROW / width
        scale = torch.where(torch.isfinite(scale) & (width > 0), scale, 0)  # (a width of 1e-40 overflows it)
        # separate subtract and multiply, each correctly rounded, keep the binning monotone
        keys = (chunk - low[:, None]).mul_(scale[:, None]).int()  # int32: int64 keys cost 3x here
        keys[scale == 0] = 0  # an all-equal or unbounded row: one bin, compared exactly
        keys += torch.arange(len(chunk), device=device, dtype=torch.int32)[:, None] * keys_per_row
        keys = keys.view(-1)
        histogram = torch.bincount(keys, minlength=len(chunk) * keys_per_row)
        in_lower_bins = histogram.view(len(chunk), -1).cumsum(1).view(-1) - histogram
        local = (rows[first:last] - start) * num_cols + cols[first:last]
        probe_keys = keys[local]
        shared = torch.zeros_like(histogram, dtype=torch.bool)
        shared[probe_keys] = True
        near = torch.index_select(shared, 0, keys).nonzero().squeeze(1)  # items sharing a probe's bin
        flat = chunk.view(-1)
        is_probe = torch.zeros(len(local) + len(near), dtype=torch.bool, device=device)
        is_probe[: len(local)] = True
        exact = _count_before(torch.cat([probe_keys, keys[near]]), torch.cat([flat[local], flat[near]]),
                              torch.cat([cols[first:last], near % num_cols]), is_probe)
        counts[first:last] = in_lower_bins[probe_keys] + exact
    return counts


@torch.no_grad()
def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50):
    """Return ``(cmc, mAP, mINP)``: ``cmc[k]`` is rank-(k+1) accuracy, all in [0, 1].

    ``distmat``: query x gallery distances, an array or a tensor (computed on its device). Ids and
    cameras: arrays, lists or tensors of any values that compare equal (ints, strings, ...).
    """
    distmat = _as_distances(distmat)
    device = distmat.device
    num_q, num_g = distmat.shape
    if max_rank < 1:
        raise ValueError(f"max_rank: expected a positive integer, got {max_rank}")
    max_rank = min(max_rank, num_g)
    q_pids, g_pids = _codes(("q_pids", "g_pids"), (q_pids, g_pids), distmat.shape, device)
    q_camids, g_camids = _codes(("q_camids", "g_camids"), (q_camids, g_camids), distmat.shape, device)
    # every (query, gallery item) pair with the same id, grouped by query
    by_pid = torch.argsort(g_pids, stable=True)
    sorted_pids = g_pids[by_pid]
    first = torch.searchsorted(sorted_pids, q_pids)
    same_count = torch.searchsorted(sorted_pids, q_pids, right=True) - first
    pair_q = torch.repeat_interleave(torch.arange(num_q, device=device), same_count)
    pair_starts = torch.repeat_interleave(same_count.cumsum(0) - same_count, same_count)
    pair_g = by_pid[torch.repeat_interleave(first, same_count) + torch.arange(len(pair_q), device=device)
                    - pair_starts]
    removed = g_camids[pair_g] == q_camids[pair_q]
    match_q, match_g = pair_q[~removed], pair_g[~removed]
    num_matches = torch.bincount(match_q, minlength=num_q)
    if not bool((num_matches > 0).any()):
        raise DatasetError("query", "no query has a matching gallery image in another camera")
    removed_q, removed_g = pair_q[removed], pair_g[removed]
    # 1-based rank among the kept items: all items before the match, less the removed ones before it
    is_probe = torch.cat([torch.ones_like(match_q, dtype=torch.bool), torch.zeros_like(removed_q, dtype=torch.bool)])
    removed_before = _count_before(torch.cat([match_q, removed_q]),
                                   torch.cat([distmat[match_q, match_g], distmat[removed_q, removed_g]]),
                                   torch.cat([match_g, removed_g]), is_probe)
    ranks = 1 + _items_before(distmat, match_q, match_g) - removed_before
    # each query's matches in rank order: the k-th one has precision k / rank
    order = torch.argsort(match_q * (num_g + 1) + ranks)
    match_q, ranks = match_q[order], ranks[order]
    query_start = num_matches.cumsum(0) - num_matches
    kth = torch.arange(len(ranks), device=device) - query_start[match_q] + 1
    precision_sum = torch.zeros(num_q, dtype=torch.float64, device=device)
    precision_sum.index_add_(0, match_q, kth.double() / ranks.double())
    valid = num_matches > 0
    first_rank = ranks[query_start[valid]]
    last_rank = ranks[(query_start + num_matches - 1)[valid]]
    mAP = (precision_sum[valid] / num_matches[valid]).mean()
    mINP = (num_matches[valid].double() / last_rank.double()).mean()
    cmc = (first_rank[:, None] <= torch.arange(1, max_rank + 1, device=device)[None, :]).double().mean(0)
    return cmc.float().cpu().numpy(), float(mAP), float(mINP)
