"""Training configuration: YACS defaults (every knob), a YACS file, then type-checked overrides."""
from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import yaml
from yacs.config import CfgNode

from reidlib.config.aliases import ALIASES
from reidlib.config.defaults import DEFAULT_WANDB_PROJECT, _C
from reidlib.config.overrides import apply_overrides, flat_keys, resolve_key
from reidlib.errors import ConfigError, read_yaml

__all__ = ["ALIASES", "DEFAULT_WANDB_PROJECT", "check_config", "check_rerank_parameters", "config_diff", "flat_keys", "get_defaults", "load_config", "resolve_key"]


def get_defaults() -> CfgNode:
    """A fresh, unfrozen copy of the defaults."""
    return _C.clone()


def _flatten_mapping(mapping: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for name, value in mapping.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(_flatten_mapping(value, key + "."))
        else:
            flat[key] = value
    return flat


def read_config_file(config_file: str | Path) -> dict[str, Any]:
    """The YACS file's values as ``{dotted key: value}`` (not yet checked against the defaults)."""
    data = read_yaml(config_file, ConfigError, "config file") or {}
    if not isinstance(data, dict):
        raise ConfigError(str(config_file), "expected a mapping of config sections")
    return _flatten_mapping(data)


def load_config(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> CfgNode:
    """Defaults, then ``config_file``, then ``overrides`` (aliases or dotted keys); returns it frozen.

    Every key is checked against the defaults and every value converted to the default's type; an
    unknown key names the closest real one.
    """
    cfg = get_defaults()
    if config_file:
        file_values = read_config_file(config_file)
        try:
            apply_overrides(cfg, file_values)
        except ConfigError as err:
            raise ConfigError(f"{config_file}: {err.field}", err.message) from None
    apply_overrides(cfg, dict(overrides or {}))
    check_config(cfg)
    cfg.freeze()
    return cfg


def config_diff(cfg: CfgNode, base: CfgNode | None = None) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (base value, value)}`` for every key where ``cfg`` differs from ``base``
    (the defaults when not given)."""
    base_values = dict(flat_keys(base if base is not None else _C))
    return {k: (base_values.get(k), v) for k, v in flat_keys(cfg) if base_values.get(k) != v}


# Keys whose value is one of a few words (the backbone registry checks MODEL.NAME itself).
CHOICES = {
    "MODEL.DEVICE": ("auto", "cpu", "cuda"),
    "MODEL.PRETRAIN_CHOICE": ("imagenet", "self", "none"),
    "MODEL.NECK": ("bnneck", "no"),
    "MODEL.IF_WITH_CENTER": ("yes", "no"),
    "MODEL.IF_LABELSMOOTH": ("on", "off"),
    "MODEL.CHANNELS_LAST": ("yes", "no"),
    "MODEL.STEM_RELU": ("yes", "no"),
    "DATALOADER.SAMPLER": ("softmax", "triplet", "softmax_triplet"),
    "SOLVER.WARMUP_METHOD": ("linear", "constant"),
    "SOLVER.SOFT_MARGIN": ("yes", "no"),
    "SOLVER.AMP": ("no", "bf16", "fp16"),
    "SOLVER.COMPILE": ("yes", "no"),
    "TEST.RE_RANKING": ("yes", "no"),
    "TEST.NECK_FEAT": ("before", "after"),
    "TEST.FEAT_NORM": ("yes", "no"),
    "TEST.EVAL_BEFORE_TRAINING": ("yes", "no"),
}
# MODEL.METRIC_LOSS_TYPE by MODEL.IF_WITH_CENTER, as reid-strong-baseline accepts them.
LOSS_TYPES = {"no": ("softmax", "triplet"), "yes": ("center", "triplet_center")}


def check_config(cfg: CfgNode) -> None:
    """Values and combinations that cannot train, caught before any data is read."""
    values = dict(flat_keys(cfg))
    for key, allowed in CHOICES.items():
        if values[key] not in allowed:
            raise ConfigError(key, f"expected one of {', '.join(map(repr, allowed))}, got {values[key]!r}")
    loss_types = LOSS_TYPES[cfg.MODEL.IF_WITH_CENTER]
    if cfg.MODEL.METRIC_LOSS_TYPE not in loss_types:
        raise ConfigError("MODEL.METRIC_LOSS_TYPE", f"expected one of {', '.join(map(repr, loss_types))} with "
                          f"IF_WITH_CENTER {cfg.MODEL.IF_WITH_CENTER!r}, got {cfg.MODEL.METRIC_LOSS_TYPE!r}")
    s, d = cfg.SOLVER, cfg.DATALOADER
    needs_pk = d.SAMPLER in ("triplet", "softmax_triplet")
    if needs_pk and d.NUM_INSTANCE < 2:
        raise ConfigError("DATALOADER.NUM_INSTANCE", f"expected at least 2 images per identity for the PK sampler, got {d.NUM_INSTANCE}")
    if needs_pk and s.IMS_PER_BATCH % d.NUM_INSTANCE:
        raise ConfigError("SOLVER.IMS_PER_BATCH", f"expected a multiple of DATALOADER.NUM_INSTANCE ({d.NUM_INSTANCE}), got {s.IMS_PER_BATCH}")
    if needs_pk and cfg.MODEL.METRIC_LOSS_TYPE == "softmax":
        raise ConfigError("MODEL.METRIC_LOSS_TYPE", f"DATALOADER.SAMPLER {d.SAMPLER!r} trains with a triplet loss: "
                          "expected 'triplet', got 'softmax'")
    for key, value in (("SOLVER.MAX_EPOCHS", s.MAX_EPOCHS), ("SOLVER.IMS_PER_BATCH", s.IMS_PER_BATCH),
                       ("SOLVER.EVAL_PERIOD", s.EVAL_PERIOD), ("SOLVER.CHECKPOINT_PERIOD", s.CHECKPOINT_PERIOD),
                       ("TEST.IMS_PER_BATCH", cfg.TEST.IMS_PER_BATCH)):
        if value < 1:
            raise ConfigError(key, f"expected a positive integer, got {value}")
    if cfg.DATASETS.VAL_IDS < 0:
        raise ConfigError("DATASETS.VAL_IDS", f"expected a number of identities >= 0 (0 = no validation split), got {cfg.DATASETS.VAL_IDS}")
    if not s.BASE_LR > 0:
        raise ConfigError("SOLVER.BASE_LR", f"expected a positive number, got {s.BASE_LR}")
    if cfg.MODEL.IF_WITH_CENTER == "yes" and not s.CENTER_LOSS_WEIGHT > 0:
        raise ConfigError("SOLVER.CENTER_LOSS_WEIGHT", f"expected a positive number with center loss, got {s.CENTER_LOSS_WEIGHT}")
    if not 0 <= cfg.INPUT.RE_PROB <= 1 or not 0 <= cfg.INPUT.PROB <= 1:
        raise ConfigError("INPUT.RE_PROB" if not 0 <= cfg.INPUT.RE_PROB <= 1 else "INPUT.PROB", "expected a probability in [0, 1]")
    if cfg.TEST.RE_RANKING == "yes":  # else found only at the first evaluation, after training epochs
        t = cfg.TEST
        check_rerank_parameters(t.RERANK_K1, t.RERANK_K2, t.RERANK_LAMBDA, t.RERANK_MEMORY_MB)


def check_rerank_parameters(k1, k2, lambda_value, memory_mb) -> None:
    """The TEST.RERANK_* values re-ranking can run with (here, not beside re-ranking: checking a
    config must not import torch into the sweep driver)."""
    for key, value in (("TEST.RERANK_K1", k1), ("TEST.RERANK_K2", k2)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ConfigError(key, f"expected an integer >= 1, got {value!r}")
    if not 0 <= lambda_value <= 1:
        raise ConfigError("TEST.RERANK_LAMBDA", f"expected a number in [0, 1], got {lambda_value!r}")
    if not memory_mb > 0:
        raise ConfigError("TEST.RERANK_MEMORY_MB", f"expected a positive number of MB, got {memory_mb!r}")
