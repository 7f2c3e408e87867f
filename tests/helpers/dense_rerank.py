"""The dense k-reciprocal re-ranking that reid-strong-baseline ships (utils/re_ranking.py, after
Zhong et al., CVPR 2017), restated plainly: the reference that reidlib's re_ranking must agree with.

It holds several N x N matrices (N = query + gallery): the distances, their argsort, V and its
query expansion in float16. Test and benchmark code only.
"""
from __future__ import annotations

import numpy as np
import torch

# Its float16 V and Jaccard sums make its values good to about 2e-3; a wrong k1, k2 or expansion
# rule moves them by 0.04 or more.
FLOAT16_TOLERANCE = 5e-3


def reciprocal_neighbours(initial_rank: np.ndarray, i: int, k: int) -> np.ndarray:
    """Those of ``i``'s k+1 nearest that have ``i`` among their own k+1 nearest, nearest first."""
    forward = initial_rank[i, : k + 1]
    backward = initial_rank[forward, : k + 1]
    return forward[np.where(backward == i)[0]]


def dense_re_ranking(query_feats, gallery_feats, k1: int = 20, k2: int = 6, lambda_value: float = 0.3) -> np.ndarray:
    query_feats, gallery_feats = torch.as_tensor(query_feats), torch.as_tensor(gallery_feats)
    num_query = query_feats.size(0)
    num_all = num_query + gallery_feats.size(0)
    feats = torch.cat([query_feats, gallery_feats]).float()
    squares = feats.pow(2).sum(dim=1, keepdim=True).expand(num_all, num_all)
    distances = (squares + squares.t()).addmm_(feats, feats.t(), beta=1, alpha=-2).cpu().numpy()
    original_dist = np.transpose(distances / np.max(distances, axis=0))
    del distances
    V = np.zeros_like(original_dist, dtype=np.float16)
    initial_rank = np.argsort(original_dist).astype(np.int32)

    for i in range(num_all):
        k_reciprocal = reciprocal_neighbours(initial_rank, i, k1)
        expansion = k_reciprocal
        for candidate in k_reciprocal:
            candidate_reciprocal = reciprocal_neighbours(initial_rank, candidate, int(np.around(k1 / 2)))
            if len(np.intersect1d(candidate_reciprocal, k_reciprocal)) > 2 / 3 * len(candidate_reciprocal):
                expansion = np.append(expansion, candidate_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-original_dist[i, expansion])
        V[i, expansion] = weight / np.sum(weight)

    original_dist = original_dist[:num_query]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float16)
        for i in range(num_all):
            V_qe[i] = np.mean(V[initial_rank[i, :k2]], axis=0)
        V = V_qe
        del V_qe
    del initial_rank
    inverted_index = [np.where(V[:, column] != 0)[0] for column in range(num_all)]

    jaccard_dist = np.zeros_like(original_dist, dtype=np.float16)
    for i in range(num_query):
        min_sum = np.zeros(num_all, dtype=np.float16)
        nonzero = np.where(V[i] != 0)[0]
        for column in nonzero:
            rows = inverted_index[column]
            min_sum[rows] = min_sum[rows] + np.minimum(V[i, column], V[rows, column])
        jaccard_dist[i] = 1 - min_sum / (2 - min_sum)

    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:, num_query:]
