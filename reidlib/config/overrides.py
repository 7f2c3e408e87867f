"""Type-checked overrides: every value reaches YACS as its own key and value, converted to the type
of the default it replaces (the old scripts' ``"KEY value"`` strings cannot happen here)."""
from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Iterable, Iterator
from typing import Any

from yacs.config import CfgNode

from reidlib.config.aliases import ALIASES
from reidlib.errors import ConfigError

# Upstream spells switches as strings; YAML 1.1 reads unquoted on/off/yes/no as booleans.
_SWITCH_WORDS = {("on", "off"), ("yes", "no")}


def flat_keys(cfg: CfgNode, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(dotted_key, value)`` for every leaf of ``cfg``."""
    for name, value in cfg.items():
        key = f"{prefix}{name}"
        if isinstance(value, CfgNode):
            yield from flat_keys(value, key + ".")
        else:
            yield key, value


def resolve_key(cfg: CfgNode, name: str) -> str:
    """Map an alias (``base_lr``) or a dotted key (``SOLVER.BASE_LR``) to the dotted key.

    Unknown names raise ``ConfigError`` naming the closest real alias or key.
    """
    if name in ALIASES:
        return ALIASES[name]
    known = dict(flat_keys(cfg))
    if name in known:
        return name
    raise ConfigError(name, f"not a config key or alias{did_you_mean(name, list(ALIASES) + list(known))}")


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate a misspelt or shortened ``name`` most likely means: the same in another case,
    the nearest spelling (difflib), or the first whose last word it is (``lr``: ``base_lr``)."""
    candidates = list(candidates)
    upper = {c.upper(): c for c in candidates}
    if name.upper() in upper:
        return upper[name.upper()]
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if close:
        return close[0]
    return next((c for c in candidates if re.split(r"[._]", c.upper())[-1] == name.upper()), None)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` naming ``closest(name, candidates)``, or ``""``."""
    close = closest(name, candidates)
    return f"; did you mean {close!r}?" if close else ""


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", tuple: "a list"}.get(type(value), type(value).__name__)


def coerce(key: str, value: Any, default: Any) -> Any:
    """Convert ``value`` to the type of ``default`` or raise ``ConfigError`` naming key and value."""

    def fail() -> ConfigError:
        return ConfigError(key, f"expected {_type_name(default)} (like {default!r}), got {value!r}")

    if isinstance(value, str) and not isinstance(default, str):
        # YACS decodes string values with literal_eval; so do we ("[40, 70]", "1e-4", "True").
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            if isinstance(default, (list, tuple)) and "," in value:
                value = [v.strip() for v in value.split(",")]
            else:
                raise fail() from None
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise fail()
    if isinstance(default, int):
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise fail()
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise fail()
    if isinstance(default, str):
        if isinstance(value, bool):
            for yes, no in _SWITCH_WORDS:
                if default in (yes, no):
                    return yes if value else no
            raise fail()
        if isinstance(value, str):
            # Upstream files write NAMES: ('market1501'); YACS literal-evaluates that to a string.
            try:
                decoded = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                return value
            return decoded if isinstance(decoded, str) else value
        raise fail()
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise fail()
        if default:
            items = [coerce(f"{key}[{i}]", v, default[0]) for i, v in enumerate(value)]
        else:
            items = list(value)
        return type(default)(items)
    raise fail()


def apply_overrides(cfg: CfgNode, overrides: dict[str, Any], source: str = "overrides") -> None:
    """Set each ``{alias or dotted key: value}`` on the (unfrozen) ``cfg``, type-checked."""
    if not isinstance(overrides, dict):
        raise ConfigError(source, f"expected a mapping of config keys to values, got {overrides!r}")
    for name, value in overrides.items():
        key = resolve_key(cfg, str(name))
        *parents, leaf = key.split(".")
        node = cfg
        for part in parents:
            node = node[part]
        node[leaf] = coerce(key, value, node[leaf])
