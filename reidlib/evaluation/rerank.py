"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) without N x N matrices (N = query + gallery).

The dense algorithm (reid-strong-baseline's ``utils/re_ranking.py``) argsorts an N x N distance
matrix and holds the k-reciprocal encoding V and its query expansion as N x N float16 matrices:
7 GB at Market-1501 size, about 180 GB at MSMT17 size. Only each item's few nearest neighbours
matter, so here:

1. one pass over the distances, in strips of rows, keeps each item's nearest neighbours and its
   largest distance (the dense code divides each row by it) and writes the query x gallery
   distances into the result. The distances are symmetric: a strip computes only the columns from
   its own first row on and gives the rows of the columns beyond it their share from the transpose,
   so about half the matrix products;
2. the k-reciprocal sets, their expansion and V are built from the neighbour lists, V held as
   sparse rows (tens to a few hundred non-zeros each);
3. query expansion averages the sparse rows of each item's k2 nearest;
4. the Jaccard distance of each query to each gallery item sums min(V_q, V_g) over their shared
   columns through an inverted index of the gallery rows, in chunks of queries.

The result agrees with the dense algorithm to float16 precision (it stores V in float16; V is
float32 here). ``memory_mb`` bounds the working memory by sizing every chunk; it does not count the
inputs, the neighbour lists, the sparse V and the query x gallery result itself.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from reidlib.config import check_rerank_parameters

# Strips of at most this many rows: smaller strips leave more of the matrix to the transpose, and
# 2048-row matrix products still run at full speed.
MAX_STRIP_ROWS = 2048
# Feature pairs gathered at a time to compute V's weights.
PAIR_CHUNK = 1024


@dataclass
class _SparseRows:
    """A sparse matrix by rows: row ``r`` holds ``cols[ptr[r]:ptr[r + 1]]`` (ascending) and ``vals`` there."""

    ptr: torch.Tensor
    cols: torch.Tensor
    vals: torch.Tensor

    @classmethod
    def from_sorted(cls, rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, num_rows: int) -> _SparseRows:
        """From entries already ordered by row, then column."""
        ptr = torch.zeros(num_rows + 1, dtype=torch.long, device=rows.device)
        ptr[1:] = torch.bincount(rows, minlength=num_rows).cumsum(0)
        return cls(ptr, cols, vals)

    def row_ids(self) -> torch.Tensor:
        """The row of each stored entry."""
        return torch.repeat_interleave(torch.arange(len(self.ptr) - 1, device=self.ptr.device), self.ptr.diff())


def _segment_positions(ptr: torch.Tensor, segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The positions ``ptr[s]:ptr[s + 1]`` of each ``s`` in ``segments``, concatenated, and for each
    position the index in ``segments`` it came from."""
    starts = ptr[segments]
    counts = ptr[segments + 1] - starts
    owner = torch.repeat_interleave(torch.arange(len(segments), device=ptr.device), counts)
    first = counts.cumsum(0) - counts  # where each segment begins in the concatenation
    return torch.arange(len(owner), device=ptr.device) - first[owner] + starts[owner], owner


def _cost_chunks(costs: torch.Tensor, budget: float) -> list[tuple[int, int]]:
    """Consecutive ``[start, stop)`` ranges whose costs sum to at most ``budget`` (one item at least)."""
    total = np.cumsum(costs.double().cpu().numpy())
    bounds = [0]
    while bounds[-1] < len(total):
        spent = total[bounds[-1] - 1] if bounds[-1] else 0.0
        bounds.append(max(int(np.searchsorted(total, spent + budget, side="right")), bounds[-1] + 1))
    return list(itertools.pairwise(bounds))


def _row_chunks(num_rows: int, bytes_per_row: float, budget: float, most: int | None = None) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of equally costly rows, each within ``budget`` bytes (one row at least)."""
    step = max(1, int(budget // bytes_per_row))
    step = min(step, most) if most else step
    return [(start, min(start + step, num_rows)) for start in range(0, num_rows, step)]


def _nearest_and_query_distances(feats: torch.Tensor, num_query: int, num_nearest: int, budget: float):
    """Each item's ``num_nearest`` nearest items (ascending distance; itself first) and their squared
    distances, each item's largest squared distance, and the query x gallery squared distances."""
    num_all = len(feats)
    squares = feats.pow(2).sum(1)
    best = torch.full((num_all, num_nearest), float("inf"), device=feats.device)
    best_ids = torch.zeros((num_all, num_nearest), dtype=torch.long, device=feats.device)
    row_max = torch.full((num_all,), -float("inf"), device=feats.device)
    query_gallery = torch.empty((num_query, num_all - num_query), device=feats.device)

    def keep_nearest(rows: slice, dist: torch.Tensor, ids: torch.Tensor) -> None:
        merged, merged_ids = torch.cat([best[rows], dist], 1), torch.cat([best_ids[rows], ids], 1)
        best[rows], nearest = torch.topk(merged, num_nearest, dim=1, largest=False)
        best_ids[rows] = merged_ids.gather(1, nearest)

    # a strip's distances, the transposed topk's copy and the sums beside it: 3 floats per column
    for start, stop in _row_chunks(num_all, 12 * num_all, budget, most=MAX_STRIP_ROWS):
        # the dense code's formula (|a|^2 + |b|^2 - 2ab), so both see the same distances
        dist = squares[start:stop, None] + squares[None, start:]
        dist.addmm_(feats[start:stop], feats[start:].t(), alpha=-2)
        row_max[start:stop] = torch.maximum(row_max[start:stop], dist.max(1).values)
        near, near_ids = torch.topk(dist, min(num_nearest, num_all - start), dim=1, largest=False)
        keep_nearest(slice(start, stop), near, near_ids + start)
        if stop < num_all:  # the rows of the columns beyond the strip: their distances to the strip's rows
            beyond = dist[:, stop - start:]
            row_max[stop:] = torch.maximum(row_max[stop:], beyond.max(0).values)
            near, near_ids = torch.topk(beyond, min(num_nearest, stop - start), dim=0, largest=False)
            keep_nearest(slice(stop, None), near.t(), near_ids.t() + start)
        if start < num_query:  # queries come first, so a query's strip holds all its gallery columns
            query_stop = min(stop, num_query)
            query_gallery[start:query_stop] = dist[: query_stop - start, num_query - start:]
    return best_ids, best, row_max, query_gallery


def _reciprocal(nearest: torch.Tensor, budget: float) -> torch.Tensor:
    """``mask[i, a]``: item ``nearest[i, a]`` has ``i`` among its own ``nearest`` too."""
    num_all, width = nearest.shape
    mask = torch.empty(nearest.shape, dtype=torch.bool, device=nearest.device)
    for start, stop in _row_chunks(num_all, 9 * width * width, budget):
        own = torch.arange(start, stop, device=nearest.device)[:, None, None]
        mask[start:stop] = (nearest[nearest[start:stop]] == own).any(-1)
    return mask


def _expanded_sets(near: torch.Tensor, near_ok: torch.Tensor, half: torch.Tensor, half_ok: torch.Tensor,
                  budget: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(item, member) pairs, by item then member: each item's k-reciprocal set ``near[near_ok]``
    joined by the half-size set of each member whose half set lies more than 2/3 inside it."""
    num_all, width = near.shape
    half_width = half.shape[1]
    items, members = [], []
    # the membership test's booleans, the gathered half sets and the candidate list, per row
    for start, stop in _row_chunks(num_all, width * half_width * (width + 40), budget):
        own, own_ok = near[start:stop], near_ok[start:stop]
        candidates, candidates_ok = half[own], half_ok[own] & own_ok[..., None]
        inside = ((candidates[..., None] == own[:, None, None, :]) & own_ok[:, None, None, :]).any(-1)
        overlap, size = (inside & candidates_ok).sum(-1), candidates_ok.sum(-1)
        taken = candidates_ok & (3 * overlap > 2 * size)[..., None]  # integer form of "> 2/3 of its size"
        joined = torch.cat([own.masked_fill(~own_ok, num_all), candidates.masked_fill(~taken, num_all).flatten(1)], 1)
        joined = joined.sort(1).values
        fresh = joined < num_all  # the fill value sorts last
        fresh[:, 1:] &= joined[:, 1:] != joined[:, :-1]
        rows, slots = fresh.nonzero(as_tuple=True)
        items.append(rows + start)
        members.append(joined[rows, slots])
    return torch.cat(items), torch.cat(members)


def _pair_distances(feats: torch.Tensor, nearest: torch.Tensor, nearest_dist: torch.Tensor, items: torch.Tensor,
                   members: torch.Tensor, budget: float) -> torch.Tensor:
    """Squared distance of each (item, member) pair: the first pass's where the member is among the
    item's nearest (most are), computed from the features for the rest."""
    dist = torch.empty(len(items), device=feats.device)
    for start, stop in _row_chunks(len(items), 24 * nearest.shape[1], budget):  # gathered ids and matches
        i = items[start:stop]
        match = nearest[i] == members[start:stop, None]
        known = nearest_dist[i].gather(1, match.byte().argmax(1, keepdim=True))[:, 0]
        dist[start:stop] = torch.where(match.any(1), known, torch.nan)
    missing = torch.isnan(dist).nonzero()[:, 0]
    squares = feats.pow(2).sum(1)
    # the features gathered into two buffers made once: a fresh large buffer per chunk would cost a
    # page fault per 4 KB, and chunks of PAIR_CHUNK pairs stay in cache
    chunks = _row_chunks(len(missing), 8 * feats.shape[1], budget, most=PAIR_CHUNK)
    width = chunks[0][1] if chunks else 0
    item_feats, member_feats = (torch.empty((width, feats.shape[1]), device=feats.device) for _ in range(2))
    for start, stop in chunks:
        pairs = missing[start:stop]
        i, m = items[pairs], members[pairs]
        a = torch.index_select(feats, 0, i, out=item_feats[: stop - start])
        b = torch.index_select(feats, 0, m, out=member_feats[: stop - start])
        dist[pairs] = squares[i] + squares[m] - 2 * torch.bmm(a[:, None], b[:, :, None]).view(-1)
    return dist


def _encoding(items: torch.Tensor, members: torch.Tensor, scaled_dist: torch.Tensor, num_all: int) -> _SparseRows:
    """V: exp(-scaled distance) on each (item, member) pair, each row summing to 1."""
    weights = torch.exp(-scaled_dist)
    totals = torch.zeros(num_all, device=weights.device).index_add_(0, items, weights)
    return _SparseRows.from_sorted(items, members, weights / totals[items], num_all)


def _query_expansion(v: _SparseRows, nearest: torch.Tensor, budget: float) -> _SparseRows:
    """Each row of V replaced by the mean of the rows of the item's ``nearest`` (itself included)."""
    num_all, count = nearest.shape
    rows, cols, vals = [], [], []
    entries_per_row = v.ptr.diff()[nearest].sum(1)
    for start, stop in _cost_chunks(entries_per_row * 48, budget):  # gathered entries, keys, sort buffers
        positions, owner = _segment_positions(v.ptr, nearest[start:stop].flatten())
        keys = (owner // count) * num_all + v.cols[positions]  # (row in chunk, column)
        unique_keys, slot = torch.unique(keys, return_inverse=True)  # sorted: by row, then column
        sums = torch.zeros(len(unique_keys), device=keys.device).index_add_(0, slot, v.vals[positions])
        rows.append(unique_keys // num_all + start)
        cols.append(unique_keys % num_all)
        vals.append(sums / count)
    return _SparseRows.from_sorted(torch.cat(rows), torch.cat(cols), torch.cat(vals), num_all)


def _blend_jaccard(result: torch.Tensor, v: _SparseRows, original_weight: torch.Tensor, jaccard_weight: float,
                  budget: float) -> None:
    """``result[q] = result[q] * original_weight[q] + jaccard_weight * jaccard(V_q, V_g)`` for every
    query q and gallery item g, where jaccard = 1 - s / (2 - s) and s = sum of min(V_q, V_g)."""
    num_query, num_gallery = result.shape
    num_all = num_query + num_gallery
    # the inverted index: for each column, the gallery rows with a non-zero there
    gallery_from = int(v.ptr[num_query])
    gallery_cols = v.cols[gallery_from:]
    by_column = torch.argsort(gallery_cols, stable=True)
    rows = v.row_ids()
    gallery_rows = rows[gallery_from:] - num_query
    inverted = _SparseRows.from_sorted(gallery_cols[by_column], gallery_rows[by_column],
                                      v.vals[gallery_from:][by_column], num_all)
    query_rows = rows[:gallery_from]
    query_cols, query_vals = v.cols[:gallery_from], v.vals[:gallery_from]
    triples = torch.zeros(num_query, dtype=torch.long, device=result.device)
    triples.index_add_(0, query_rows, inverted.ptr.diff()[query_cols])
    # per (query, column, gallery) triple: positions, owners, keys, minima; per query: s and its temporaries
    for start, stop in _cost_chunks(triples * 48 + 12 * num_gallery, budget):
        entries = slice(int(v.ptr[start]), int(v.ptr[stop]))
        positions, owner = _segment_positions(inverted.ptr, query_cols[entries])
        keys = (query_rows[entries][owner] - start) * num_gallery + inverted.cols[positions]
        shared = torch.zeros((stop - start) * num_gallery, device=result.device)
        shared.index_add_(0, keys, torch.minimum(query_vals[entries][owner], inverted.vals[positions]))
        shared = shared.view(stop - start, num_gallery)
        jaccard = 1 - shared / (2 - shared)
        result[start:stop].mul_(original_weight[start:stop, None]).add_(jaccard, alpha=jaccard_weight)


def re_ranking(query_feats, gallery_feats, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
               memory_mb: float = 256, device=None) -> np.ndarray:
    """Re-ranked ``query x gallery`` distances (float32): ``(1 - lambda) * Jaccard distance of the
    k-reciprocal encodings + lambda * squared distance / the query's largest distance``.

    Features are tensors or arrays, compared as given (normalise them first if the protocol does).
    ``device``: where to compute ('cuda', 'cpu', ...); by default the query features' device.
    ``memory_mb``: the working-memory budget the chunks are sized to.
    """
    return re_ranked_distances(query_feats, gallery_feats, k1, k2, lambda_value, memory_mb, device).cpu().numpy()


@torch.no_grad()
def re_ranked_distances(query_feats, gallery_feats, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                        memory_mb: float = 256, device=None) -> torch.Tensor:
    """``re_ranking``'s distances as a tensor left on the device that computed them."""
    check_rerank_parameters(k1, k2, lambda_value, memory_mb)
    if device is None:
        device = query_feats.device if isinstance(query_feats, torch.Tensor) else "cpu"
    feats = torch.cat([torch.as_tensor(f).to(device, torch.float32) for f in (query_feats, gallery_feats)])
    num_query, num_all = len(query_feats), len(feats)
    budget = memory_mb * 2**20
    half_k = round(k1 / 2)  # rounds half to even, as the dense code's np.around
    nearest, nearest_dist, row_max, result = _nearest_and_query_distances(
        feats, num_query, min(max(k1 + 1, k2), num_all), budget)
    near, half = nearest[:, : k1 + 1], nearest[:, : half_k + 1]
    items, members = _expanded_sets(near, _reciprocal(near, budget), half, _reciprocal(half, budget), budget)
    dist = _pair_distances(feats, nearest, nearest_dist, items, members, budget)
    v = _encoding(items, members, dist / row_max[items], num_all)
    del items, members, dist
    if k2 != 1:  # with k2 = 1 the dense code skips the expansion
        v = _query_expansion(v, nearest[:, :k2], budget)
    _blend_jaccard(result, v, lambda_value / row_max[:num_query], 1 - lambda_value, budget)
    return result
