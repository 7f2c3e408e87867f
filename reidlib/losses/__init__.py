"""Losses: label-smoothing cross entropy, batch-hard triplet and center loss, combined by ``make_loss``.

As in reid-strong-baseline, ``DATALOADER.SAMPLER`` picks the terms ('softmax': plain cross entropy,
'triplet': triplet, 'softmax_triplet': both) and ``MODEL.METRIC_LOSS_TYPE`` the metric loss;
``MODEL.IF_LABELSMOOTH`` smooths the cross entropy of 'softmax_triplet' and of the center-loss recipes.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


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

    A number is a hinge at that margin, ``max(0, ap - an + margin)`` (0 included, as upstream's
    ``MarginRankingLoss``); None the soft margin ``log(1 + exp(ap - an))`` (``SOLVER.SOFT_MARGIN``).
    """

    def __init__(self, margin: float | None):
        super().__init__()
        self.margin = margin

    def forward(self, feats: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        dist = torch.cdist(feats, feats).clamp(min=1e-12)
        same = targets.unsqueeze(0) == targets.unsqueeze(1)
        dist_ap = dist.masked_fill(~same, float("-inf")).max(dim=1).values
        dist_an = dist.masked_fill(same, float("inf")).min(dim=1).values
        if self.margin is not None:
            return F.relu(dist_ap - dist_an + self.margin).mean()
        return F.softplus(dist_ap - dist_an).mean()


class CenterLoss(nn.Module):
    """Center loss (Wen et al., ECCV 2016): squared distance of each feature to its class center.
    The centers are parameters trained by their own SGD (``SOLVER.CENTER_LR``)."""

    def __init__(self, num_classes: int, feat_dim: int):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, feats: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (feats - self.centers[targets]).pow(2).sum(dim=1).clamp(1e-12, 1e12).mean()


class Criterion(nn.Module):
    """The training loss: ``criterion(scores, feats, targets)``; ``center`` is the center loss
    module when ``MODEL.IF_WITH_CENTER`` is 'yes' (the trainer gives it its own optimiser)."""

    def __init__(self, xent: nn.Module | None, triplet: nn.Module | None, center: CenterLoss | None,
                 center_weight: float):
        super().__init__()
        self.xent, self.triplet, self.center, self.center_weight = xent, triplet, center, center_weight

    def forward(self, scores, feats, targets):
        loss = scores.new_zeros(())
        if self.xent is not None:
            loss = loss + self.xent(scores, targets)
        if self.triplet is not None:
            loss = loss + self.triplet(feats, targets)
        if self.center is not None:
            loss = loss + self.center_weight * self.center(feats, targets)
        return loss


def make_loss(cfg, num_classes: int, feat_dim: int) -> Criterion:
    """The loss for the configured sampler and metric loss, as reid-strong-baseline composes it."""
    kind, sampler = cfg.MODEL.METRIC_LOSS_TYPE, cfg.DATALOADER.SAMPLER  # valid: reidlib.config.check_config
    center = cfg.MODEL.IF_WITH_CENTER == "yes"
    # upstream's softmax-only loss is plain cross entropy whatever IF_LABELSMOOTH says
    smooth = cfg.MODEL.IF_LABELSMOOTH == "on" and (center or sampler != "softmax")
    xent = CrossEntropyLabelSmooth(num_classes) if smooth else nn.CrossEntropyLoss()
    margin = None if cfg.SOLVER.SOFT_MARGIN == "yes" else cfg.SOLVER.MARGIN
    if center:  # upstream: cross entropy + center ('center') or + triplet + center
        return Criterion(xent, TripletLoss(margin) if kind == "triplet_center" else None,
                         CenterLoss(num_classes, feat_dim), cfg.SOLVER.CENTER_LOSS_WEIGHT)
    return Criterion(xent if sampler in ("softmax", "softmax_triplet") else None,
                     TripletLoss(margin) if sampler in ("triplet", "softmax_triplet") else None,
                     None, 0.0)
