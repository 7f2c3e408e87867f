"""Models: ``make_model(cfg, num_classes)``."""
from __future__ import annotations

from pathlib import Path

import torch

from reidlib.errors import ConfigError
from reidlib.modeling.backbones import BACKBONES, make_backbone
from reidlib.modeling.baseline import Baseline


def make_model(cfg, num_classes: int) -> Baseline:
    model = Baseline(num_classes, cfg.MODEL.NAME, cfg.MODEL.LAST_STRIDE, cfg.MODEL.NECK, cfg.TEST.NECK_FEAT,
                     stem_relu=cfg.MODEL.STEM_RELU == "yes")
    choice = cfg.MODEL.PRETRAIN_CHOICE
    if choice == "imagenet":
        _load_imagenet(model, cfg)
    elif choice == "self":
        state = _read_state_dict(cfg.MODEL.PRETRAIN_PATH)
        if "base.conv1.weight" in state and cfg.MODEL.STEM_RELU == "yes":  # upstream's layout: it has no stem ReLU
            raise ConfigError("MODEL.STEM_RELU", f"{cfg.MODEL.PRETRAIN_PATH} is a reid-strong-baseline checkpoint, "
                              "trained without the stem ReLU: expected 'no', got 'yes'")
        model.load_state_dict(_from_upstream(state))
    return model


def _from_upstream(state: dict) -> dict:
    """A reid-strong-baseline model's state dict (``base.layer1...``, ``bottleneck``, ``classifier``) in our
    layout (``base.body.4...``); ours passes through unchanged."""
    trunk = {k.partition(".")[2]: v for k, v in state.items() if k.startswith("base.") and not k.startswith("base.body.")}
    rest = {k: v for k, v in state.items() if not (k.startswith("base.") and not k.startswith("base.body."))}
    return {**rest, **{f"base.body.{k}": v for k, v in _to_sequential(trunk).items()}}


def _read_state_dict(path: str) -> dict:
    path = str(Path(path).expanduser()) if path else path
    if not path or not Path(path).is_file():
        raise ConfigError("MODEL.PRETRAIN_PATH", f"weights file not found: {path!r}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("model", state) if isinstance(state, dict) else state


def _load_imagenet(model: Baseline, cfg) -> None:
    """ImageNet weights from ``MODEL.PRETRAIN_PATH`` (torchvision layout); nothing is downloaded."""
    if not cfg.MODEL.PRETRAIN_PATH:
        raise ConfigError("MODEL.PRETRAIN_PATH", "PRETRAIN_CHOICE 'imagenet' needs a torchvision weights file here "
                          "(nothing is downloaded at run time); or set MODEL.PRETRAIN_CHOICE 'none'")
    state = _read_state_dict(cfg.MODEL.PRETRAIN_PATH)
    trunk = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.base.body.load_state_dict(_to_sequential(trunk), strict=False)
    if unexpected or len(missing) == len(list(model.base.body.state_dict())):
        raise ConfigError("MODEL.PRETRAIN_PATH", f"not a torchvision {cfg.MODEL.NAME} state dict")


def _to_sequential(state: dict) -> dict:
    order = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    out = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head in order:
            out[f"{order.index(head)}.{rest}"] = value
    return out


__all__ = ["BACKBONES", "Baseline", "make_backbone", "make_model"]
