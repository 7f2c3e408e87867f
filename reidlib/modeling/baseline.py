"""The Bag of Tricks model: backbone -> global average pooling -> (BNNeck) -> classifier.

Training returns ``(class scores, pooled feature)``: cross entropy uses the scores (after the BNNeck),
triplet and center losses the feature before it. Evaluation returns the feature chosen by
``TEST.NECK_FEAT``. As reid-strong-baseline, the BNNeck's classifier has no bias and N(0, 0.001)
weights; without the neck ('no', the standard baseline) it is ``nn.Linear`` as PyTorch makes it.
"""
from __future__ import annotations

import torch
from torch import nn

from reidlib.modeling.backbones import make_backbone


def _init_kaiming(m: nn.Module) -> None:
    if isinstance(m, nn.BatchNorm1d) and m.affine:
        nn.init.constant_(m.weight, 1.0)
        nn.init.constant_(m.bias, 0.0)


def _init_classifier(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.001)


class Baseline(nn.Module):
    def __init__(self, num_classes: int, backbone: str, last_stride: int, neck: str, neck_feat: str, stem_relu: bool):
        super().__init__()
        self.base, self.in_planes = make_backbone(backbone, last_stride, stem_relu)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.neck = neck
        self.neck_feat = neck_feat
        if neck == "bnneck":
            self.bottleneck = nn.BatchNorm1d(self.in_planes)
            self.bottleneck.apply(_init_kaiming)
            self.bottleneck.bias.requires_grad_(False)  # no shift, as in the paper
            self.classifier = nn.Linear(self.in_planes, num_classes, bias=False)
            self.classifier.apply(_init_classifier)
        else:
            self.classifier = nn.Linear(self.in_planes, num_classes)

    def forward(self, x: torch.Tensor):
        global_feat = self.gap(self.base(x)).flatten(1)
        feat = self.bottleneck(global_feat) if self.neck == "bnneck" else global_feat
        if self.training:
            return self.classifier(feat), global_feat
        return feat if self.neck_feat == "after" else global_feat
