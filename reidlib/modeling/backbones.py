"""Backbone registry: torchvision ResNets cut before pooling, with the last stage's stride set by
``MODEL.LAST_STRIDE``. Another torchvision ResNet is one name in ``reidlib.config.checks.BACKBONE_NAMES``."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision import models

from reidlib.config.checks import BACKBONE_NAMES

# name -> torchvision constructor; the names are declared torch-free, where MODEL.NAME is checked
BACKBONES: dict[str, Callable[..., models.ResNet]] = {name: getattr(models, name) for name in BACKBONE_NAMES}


class ResNetTrunk(nn.Module):
    """A ResNet without its pooling and classifier: image -> feature map.

    ``stem_relu`` False runs the stem as reid-strong-baseline's ResNet does, conv1 -> bn1 -> maxpool
    (its ReLU after bn1 is commented out: every published number and checkpoint of it was made so)."""

    def __init__(self, resnet: models.ResNet, last_stride: int, stem_relu: bool):
        super().__init__()
        block = resnet.layer4[0]
        # The stride of the first block of layer4 lives in its 3x3 conv (conv2 in Bottleneck, conv1 in BasicBlock).
        conv = block.conv2 if isinstance(block, models.resnet.Bottleneck) else block.conv1
        conv.stride = (last_stride, last_stride)
        if block.downsample is not None:
            block.downsample[0].stride = (last_stride, last_stride)
        # nn.Identity keeps the layers' indices, so both stems have one state-dict layout
        self.body = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu if stem_relu else nn.Identity(), resnet.maxpool,
                                  resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def make_backbone(name: str, last_stride: int, stem_relu: bool = True) -> tuple[ResNetTrunk, int]:
    """The named backbone with random weights, and its output channels (torchvision's stem unless
    ``stem_relu`` is False). ``name`` and ``last_stride`` are checked with the config (MODEL.NAME,
    MODEL.LAST_STRIDE)."""
    resnet = BACKBONES[name](weights=None)
    return ResNetTrunk(resnet, last_stride, stem_relu), resnet.fc.in_features
