"""Training configuration: YACS defaults (every knob), a YACS file, then type-checked overrides."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from yacs.config import CfgNode

from reidlib.config.aliases import ALIASES
from reidlib.config.checks import check_rerank_parameters, check_values
from reidlib.config.defaults import _C, DEFAULT_WANDB_PROJECT
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


def check_config(cfg: CfgNode) -> None:
    """Values and combinations that cannot train (``reidlib.config.checks``), caught before any data is read."""
    check_values(dict(flat_keys(cfg)))
