"""Evaluation: distance matrices, k-reciprocal re-ranking and the Market-1501 ranking protocol."""
from __future__ import annotations

import numpy as np
import torch

from reidlib.evaluation.rank import evaluate_rank
from reidlib.evaluation.rerank import re_ranked_distances, re_ranking


def euclidean_distances(query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances, ``query x gallery``, on the features' device: reid-strong-baseline's
    ``|q|^2 + |g|^2 - 2 q.g`` (one matrix product, no square root taken and squared again)."""
    query, gallery = query.float(), gallery.float()
    squares = query.pow(2).sum(1, keepdim=True) + gallery.pow(2).sum(1)
    return squares.addmm_(query, gallery.t(), alpha=-2)


def feature_distances(q_feats, g_feats, feat_norm: bool = True, rerank: dict | None = None) -> torch.Tensor:
    """Query x gallery distances as the protocol ranks them (``TEST.FEAT_NORM`` L2-normalises first),
    on the features' device, where ``evaluate_rank`` then ranks them.

    ``rerank``: when given, ``re_ranking``'s keyword arguments (``TEST.RE_RANKING`` 'yes'), and the
    distances are the re-ranked ones.
    """
    if feat_norm:
        q_feats = torch.nn.functional.normalize(q_feats, dim=1)
        g_feats = torch.nn.functional.normalize(g_feats, dim=1)
    if rerank is not None:
        return re_ranked_distances(q_feats, g_feats, **rerank)
    return euclidean_distances(q_feats, g_feats)


def rerank_options(test_cfg, device=None) -> dict | None:
    """``re_ranking``'s keyword arguments from a config's ``TEST`` node; None when ``RE_RANKING`` is 'no'."""
    if test_cfg.RE_RANKING != "yes":
        return None
    return {"k1": test_cfg.RERANK_K1, "k2": test_cfg.RERANK_K2, "lambda_value": test_cfg.RERANK_LAMBDA,
            "memory_mb": test_cfg.RERANK_MEMORY_MB, "device": device}


def evaluate_features(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids, feat_norm: bool = True,
                      rerank: dict | None = None, split: str = "val") -> tuple[dict, np.ndarray]:
    """The trial contract's ``<split>/*`` metrics (mAP, mINP, rank-1/5/10) from query and gallery
    features, and the CMC curve."""
    distmat = feature_distances(q_feats, g_feats, feat_norm, rerank)
    cmc, mAP, mINP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)
    metrics = {"mAP": mAP, "mINP": mINP, "rank1": float(cmc[0]),
               "rank5": float(cmc[min(4, len(cmc) - 1)]), "rank10": float(cmc[min(9, len(cmc) - 1)])}
    return {f"{split}/{name}": value for name, value in metrics.items()}, cmc


__all__ = [
    "euclidean_distances",
    "evaluate_features",
    "evaluate_rank",
    "feature_distances",
    "re_ranked_distances",
    "re_ranking",
    "rerank_options",
]
