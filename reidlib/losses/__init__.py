"""Losses: label-smoothing cross entropy and batch-hard triplet, combined by ``make_loss``.

As in reid-strong-baseline, ``DATALOADER.SAMPLER`` picks the terms ('softmax': cross entropy,
'triplet': triplet, 'softmax_triplet': both) and ``MODEL.METRIC_LOSS_TYPE`` the metric loss.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from reidlib.errors import ConfigError

LOSS_TYPES = ("softmax", "triplet")


class CrossEntropyLabelSmooth(nn.Module):
    """Cross entropy against ``(1 - epsilon) * one_hot + epsilon / num_classes`` (Szegedy et al.)."""

    def __init__(self, num_classes: int, epsilon: float = 0.1):
        super().__init__()
        self.num_classes, self.epsilon = num_classes, epsilon

    def forward(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_probs = F.log_softmax(scores, dim=1)
        smooth = torch.full_like(log_probs, self.epsilon / self.num_classes)
        smooth.scatter_(1, targets.unsqueeze(1), 1 - self.epsilon + self.epsilon / self.num_classes)
        return (-smooth * log_probs).sum(dim=1).mean()


class TripletLoss(nn.Module):
    """Batch-hard triplet loss (Hermans et al.): hardest positive and negative per anchor.

    ``margin`` > 0 uses a hinge; 0 or None the soft margin ``log(1 + exp(ap - an))``.
    """

    def __init__(self, margin: float | None):
        super().__init__()
        self.margin = margin

    def forward(self, feats: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        dist = torch.cdist(feats, feats).clamp(min=1e-12)
        same = targets.unsqueeze(0) == targets.unsqueeze(1)
        dist_ap = dist.masked_fill(~same, float("-inf")).max(dim=1).values
        dist_an = dist.masked_fill(same, float("inf")).min(dim=1).values
        if self.margin:
            return F.relu(dist_ap - dist_an + self.margin).mean()
        return F.softplus(dist_ap - dist_an).mean()


def make_loss(cfg, num_classes: int) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``loss(scores, feats, targets)`` for the configured sampler and metric loss."""
    kind, sampler = cfg.MODEL.METRIC_LOSS_TYPE, cfg.DATALOADER.SAMPLER
    if kind not in LOSS_TYPES:
        raise ConfigError("MODEL.METRIC_LOSS_TYPE", f"expected one of {list(LOSS_TYPES)}, got {kind!r}")
    if cfg.MODEL.IF_LABELSMOOTH not in ("on", "off"):
        raise ConfigError("MODEL.IF_LABELSMOOTH", f"expected 'on' or 'off', got {cfg.MODEL.IF_LABELSMOOTH!r}")
    xent = CrossEntropyLabelSmooth(num_classes) if cfg.MODEL.IF_LABELSMOOTH == "on" else nn.CrossEntropyLoss()
    triplet = TripletLoss(cfg.SOLVER.MARGIN)

    def loss(scores, feats, targets):
        if sampler == "softmax":
            return xent(scores, targets)
        if sampler == "triplet":
            return triplet(feats, targets)
        return xent(scores, targets) + triplet(feats, targets)

    return loss
