"""Evaluation: distance matrices and the Market-1501 ranking protocol."""
from __future__ import annotations

import numpy as np
import torch

from reidlib.evaluation.rank import evaluate_rank


def euclidean_distances(query: torch.Tensor, gallery: torch.Tensor) -> np.ndarray:
    """Squared Euclidean distances, ``query x gallery``."""
    return torch.cdist(query.float(), gallery.float()).pow_(2).cpu().numpy()


def feature_distances(q_feats, g_feats, feat_norm: bool = True) -> np.ndarray:
    """Query x gallery distances as the protocol ranks them (``TEST.FEAT_NORM`` L2-normalises first)."""
    if feat_norm:
        q_feats = torch.nn.functional.normalize(q_feats, dim=1)
        g_feats = torch.nn.functional.normalize(g_feats, dim=1)
    return euclidean_distances(q_feats, g_feats)


def evaluate_features(q_feats, g_feats, q_pids, g_pids, q_camids, g_camids,
                      feat_norm: bool = True) -> tuple[dict, np.ndarray]:
    """The trial contract's ``val/*`` metrics from query and gallery features, and the CMC curve."""
    distmat = feature_distances(q_feats, g_feats, feat_norm)
    cmc, mAP, mINP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)
    metrics = {"val/mAP": mAP, "val/mINP": mINP, "val/rank1": float(cmc[0]),
               "val/rank5": float(cmc[min(4, len(cmc) - 1)]), "val/rank10": float(cmc[min(9, len(cmc) - 1)])}
    return metrics, cmc


__all__ = ["evaluate_features", "evaluate_rank", "euclidean_distances", "feature_distances"]
