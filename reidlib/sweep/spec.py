"""Sweep specs: load a W&B-schema YAML (or the old scripts' shorthand), normalise and validate it.

Normalisation:
- ``name: [a, b]`` means ``{values: [a, b]}`` and ``name: 3`` means ``{value: 3}`` (the old shorthand);
- nested ``parameters`` stand for dotted keys (``SOLVER: {parameters: {BASE_LR: ...}}`` is ``SOLVER.BASE_LR``);
- a missing ``metric`` means ``val/mAP``, maximize.

Our own keys (``config_file``, ``notebook``, ``count``, ``results_dir_base``, ``defaults``, ``seed``,
``keep_checkpoints`` (``reidlib.sweep.checkpoints``), and ``from``: an evaluation sweep of a trained run,
``reidlib.sweep.evaluation_spec``) live beside W&B's;
``Spec.search_config`` is the normalised spec without them, what W&B or ``sweeps`` receives.
Two methods are Optuna's (``tpe``, ``gp``, run by ``reidlib.sweep.optuna_search``), not W&B's.

Conditional parameters, as the old scripts wrote them: ``parent: <parameter>`` and ``parent_values:
[...]`` on a parameter make it present in a trial only when its parent is present with one of those
values (W&B has no such keys: they live in ``Spec.conditions``, not in ``search_config``). A parent is
named by its dotted name, or by its name beside the child among nested ``parameters``.
Every error names its field path, e.g. ``parameters.base_lr.min: expected a number, got 'abc'``.
"""
from __future__ import annotations

import copy
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reidlib.config import flat_keys, load_config, resolve_key
from reidlib.config.checks import COMBINED_KEYS, check_combination, check_value
from reidlib.config.overrides import coerce, did_you_mean
from reidlib.data import check_dataset
from reidlib.errors import ConfigError, DatasetError, SpecError, read_yaml

WANDB_METHODS = ("grid", "random", "bayes")  # W&B's own: its server and the `sweeps` package run them
OPTUNA_METHODS = ("tpe", "gp")  # Optuna's samplers, run locally (reidlib.sweep.optuna_search)
METHODS = WANDB_METHODS + OPTUNA_METHODS
DISTRIBUTIONS = (
    "constant", "categorical", "categorical_w_probabilities", "int_uniform", "uniform", "q_uniform",
    "log_uniform", "log_uniform_values", "q_log_uniform", "q_log_uniform_values", "inv_log_uniform",
    "inv_log_uniform_values", "normal", "q_normal", "log_normal", "q_log_normal", "beta", "q_beta",
)
DISCRETE = {"constant", "categorical", "categorical_w_probabilities", "int_uniform"}
W_AND_B_KEYS = {"method", "parameters", "metric", "early_terminate", "run_cap", "name", "description",
                "project", "entity", "program", "command"}
OUR_KEYS = {"config_file", "notebook", "count", "results_dir_base", "defaults", "from", "seed", "keep_checkpoints"}
# How many finished trials keep their checkpoint (the best by the spec's metric); ``all`` keeps every one.
DEFAULT_KEEP_CHECKPOINTS = 3
NUMERIC_FIELDS = ("min", "max", "mu", "sigma", "q", "a", "b")
PARAMETER_KEYS = ("values", "value", "distribution", *NUMERIC_FIELDS, "probabilities", "parent", "parent_values")
# Ranges whose values lie between min and max (normal, log_normal and beta have no ends to check;
# W&B's schema refuses the log-space log_uniform, q_log_uniform and inv_log_uniform)
VALUE_ENDS = {"uniform", "q_uniform", "log_uniform_values", "q_log_uniform_values", "inv_log_uniform_values"}
# Combinations of a sweep's values checked against the rules between config keys, at most (every
# value has been checked against its own key's rules already)
MAX_COMBINATIONS = 10_000
DEFAULT_METRIC = {"name": "val/mAP", "goal": "maximize"}
DEFAULT_NOTEBOOK = "notebooks/train.ipynb"
EVALUATION_NOTEBOOK = "notebooks/evaluate.ipynb"  # the notebook of a spec with ``from``
# Keys the driver sets for every trial: a sweep cannot search over them.
DRIVER_KEYS = {"OUTPUT_DIR": "the driver gives each trial its own output directory (runs/<id>/trials/<trial>)",
               "WANDB.ENABLE": "the driver owns each trial's W&B run; the notebook must not open another"}


Keys = tuple  # a leaf parameter's keys from the top of ``parameters``: ("SOLVER", "BASE_LR") when nested


@dataclass(frozen=True)
class Condition:
    """``child`` is present only when ``parent`` is present with one of ``values``."""

    child: Keys
    parent: Keys
    values: list


@dataclass
class Spec:
    """A validated sweep: the search config for W&B/``sweeps`` plus what our driver needs."""

    search_config: dict
    config_file: str | None = None
    notebook: str = DEFAULT_NOTEBOOK
    count: int | None = None
    runs_dir: str | None = None
    defaults: dict = field(default_factory=dict)
    source: str = "<spec>"
    evaluates: str | None = None  # ``from``: the trained run an evaluation sweep evaluates
    seed: int | None = None
    conditions: list[Condition] = field(default_factory=list)  # parents before their children
    keep_checkpoints: int | str = DEFAULT_KEEP_CHECKPOINTS  # a number of trials, or "all"

    @property
    def name(self) -> str:
        return self.search_config.get("name") or Path(self.source).stem

    @property
    def metric(self) -> dict:
        return self.search_config["metric"]

    def to_dict(self) -> dict:
        """Everything, ours included (conditions back in their parameters), as stored in the ledger."""
        search = copy.deepcopy(self.search_config)
        for condition in self.conditions:
            leaf = _leaf(search["parameters"], condition.child)
            leaf.update(parent=".".join(condition.parent), parent_values=condition.values)
        return {**search, "config_file": self.config_file, "notebook": self.notebook, "count": self.count,
                "results_dir_base": self.runs_dir, "defaults": self.defaults, "seed": self.seed,
                "keep_checkpoints": self.keep_checkpoints, **({"from": self.evaluates} if self.evaluates else {})}

    def flat(self, params: dict) -> dict:
        """``{Keys: value}`` of a trial's parameters; a nested dict is a nested group only where the spec
        has one (a parameter's value may be a dict, e.g. ``overrides``)."""
        return _flat(params, self.search_config["parameters"])

    def prune(self, params: dict) -> dict:
        """A trial's parameters without the conditional ones whose parent is absent or has another value."""
        flat = self.flat(params)
        for condition in self.conditions:  # parents first, so an absent parent's children go too
            if condition.child in flat and not is_active(condition, flat):
                del flat[condition.child]
        return nest(flat)


def is_active(condition: Condition, flat: dict) -> bool:
    """Whether ``condition.child`` belongs in a trial whose parameters so far are ``flat`` (``Keys``: value)."""
    return condition.parent in flat and any(flat[condition.parent] == v for v in condition.values)


def _flat(params: dict, parameters: dict | None, prefix: Keys = ()) -> dict:
    flat = {}
    for name, value in params.items():
        group = ((parameters or {}).get(name) or {}).get("parameters")
        if group is not None and isinstance(value, dict):
            flat.update(_flat(value, group, prefix + (name,)))
        else:
            flat[prefix + (name,)] = value
    return flat


def nest(flat: dict) -> dict:
    """The inverse of ``Spec.flat``: trial parameters with nested groups as dicts."""
    params: dict = {}
    for keys, value in flat.items():
        node = params
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return params


def _leaf(parameters: dict, keys: Keys) -> dict:
    for key in keys[:-1]:
        parameters = parameters[key]["parameters"]
    return parameters[keys[-1]]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _normalise_parameter(path: str, value: Any) -> dict:
    if isinstance(value, list):
        value = {"values": value}
    elif not isinstance(value, dict):
        value = {"value": value}
    if "parameters" in value:
        nested = value["parameters"]
        if not isinstance(nested, dict) or not nested:
            raise SpecError(f"{path}.parameters", "expected a mapping of at least one parameter")
        if "parent" in value or "parent_values" in value:
            raise SpecError(f"{path}.parent", "a group of nested parameters cannot have a parent: give it to its parameters")
        if len(value) > 1:
            other = next(k for k in value if k != "parameters")
            raise SpecError(f"{path}.{other}", "a group of nested parameters holds only 'parameters'")
        return {"parameters": {k: _normalise_parameter(f"{path}.parameters.{k}", v) for k, v in nested.items()}}
    value = dict(value)
    if "values" in value:
        if not isinstance(value["values"], list) or not value["values"]:
            raise SpecError(f"{path}.values", f"expected a non-empty list, got {value['values']!r}")
    elif "value" not in value and not ("min" in value and "max" in value) and "distribution" not in value:
        raise SpecError(path, "expected 'values', 'value', or 'min' and 'max' (with an optional 'distribution')")
    for key in value:
        if key not in PARAMETER_KEYS:  # else W&B's schema check below answers with a dump of the parameter
            raise SpecError(f"{path}.{key}", "not a parameter key" + (did_you_mean(str(key), PARAMETER_KEYS)
                                                                      or f"; expected one of {', '.join(PARAMETER_KEYS)}"))
    for key in NUMERIC_FIELDS:
        if key in value and not _is_number(value[key]):
            raise SpecError(f"{path}.{key}", f"expected a number, got {value[key]!r}")
    # W&B keeps a sweep as JSON, which has no infinities or NaN: its server refuses them
    numbers = {key: value[key] for key in (*NUMERIC_FIELDS, "value") if key in value}
    numbers.update({f"values[{i}]": v for i, v in enumerate(value.get("values", []))})
    for key, number in numbers.items():
        if isinstance(number, float) and not math.isfinite(number):
            raise SpecError(f"{path}.{key}", f"expected a finite number, got {number}")
    if "min" in value and "max" in value and value["min"] > value["max"]:
        raise SpecError(f"{path}.min", f"expected min <= max, got {value['min']} > {value['max']}")
    dist = value.get("distribution")
    if dist is not None and dist not in DISTRIBUTIONS:
        raise SpecError(f"{path}.distribution", f"expected one of {', '.join(DISTRIBUTIONS)}, got {dist!r}")
    if dist is None and "min" in value and "max" in value:
        both_int = isinstance(value["min"], int) and isinstance(value["max"], int)
        value["distribution"] = "int_uniform" if both_int else "uniform"  # W&B's inference
    if dist in ("log_uniform_values", "q_log_uniform_values", "inv_log_uniform_values") and value.get("min", 1) <= 0:
        raise SpecError(f"{path}.min", f"expected a positive number for {dist}, got {value['min']}")
    return value


def leaf_items(parameters: dict, prefix: Keys = (), path: str = "parameters") -> list[tuple[str, Keys, dict]]:
    """``(field path, keys, parameter)`` for every leaf parameter."""
    out = []
    for name, value in parameters.items():
        if "parameters" in value:
            out.extend(leaf_items(value["parameters"], prefix + (name,), f"{path}.{name}.parameters"))
        else:
            out.append((f"{path}.{name}", prefix + (name,), value))
    return out


def leaves(parameters: dict) -> list[tuple[str, str, dict]]:
    """``(field path, dotted name, parameter)`` for every leaf parameter."""
    return [(path, ".".join(keys), value) for path, keys, value in leaf_items(parameters)]


def discrete_values(parameter: dict) -> list | None:
    """Every value a discrete parameter can take (in W&B's grid order), or None for a continuous one."""
    if "values" in parameter and parameter.get("distribution", "categorical") in DISCRETE:
        return list(parameter["values"])
    if "value" in parameter:
        return [parameter["value"]]
    if parameter.get("distribution") == "int_uniform":
        return list(range(parameter["min"], parameter["max"] + 1))
    return None


def _conditions(parameters: dict) -> list[Condition]:
    """Take ``parent``/``parent_values`` out of the leaf parameters; check them; parents first."""
    items = leaf_items(parameters)
    by_name = {".".join(keys): (path, keys, value) for path, keys, value in items}
    found: dict[Keys, tuple[str, Condition]] = {}
    for path, keys, value in items:
        if "parent" not in value and "parent_values" not in value:
            continue
        parent, parent_values = value.pop("parent", None), value.pop("parent_values", None)
        if parent is None:
            raise SpecError(f"{path}.parent", "parent_values needs a parent: the parameter this one depends on")
        if not isinstance(parent_values, list) or not parent_values:
            raise SpecError(f"{path}.parent_values", f"expected a non-empty list of values of {parent!r}, got {parent_values!r}")
        target = by_name.get(".".join(keys[:-1] + (str(parent),))) or by_name.get(str(parent))
        if target is None or target[1] == keys:
            others = [n for n in by_name if n != ".".join(keys)]
            raise SpecError(f"{path}.parent", f"unknown parameter {parent!r}; expected one of {', '.join(others)}")
        _, parent_keys, parent_spec = target
        choices = discrete_values(parent_spec)
        if choices is None:
            raise SpecError(f"{path}.parent", f"{parent!r} is continuous; a parent needs discrete values "
                                              "('values', 'value' or an int_uniform range)")
        for i, v in enumerate(parent_values):
            if not any(v == c for c in choices):
                shown = choices if len(choices) <= 10 else f"{choices[0]}..{choices[-1]}"
                raise SpecError(f"{path}.parent_values[{i}]", f"{parent!r} never takes {v!r} (its values: {shown})")
        found[keys] = (path, Condition(keys, parent_keys, parent_values))
    ordered: list[Condition] = []

    def visit(keys: Keys, chain: list[Keys]) -> None:
        if keys not in found or found[keys][1] in ordered:
            return
        if keys in chain:
            cycle = " -> ".join(".".join(k) for k in chain[chain.index(keys):] + [keys])
            raise SpecError(f"{found[keys][0]}.parent", f"parents form a cycle: {cycle}")
        visit(found[keys][1].parent, chain + [keys])
        ordered.append(found[keys][1])

    for keys in found:
        visit(keys, [])
    return ordered


def normalise(raw: Any, source: str = "<spec>") -> Spec:
    """Validate and normalise a spec mapping (from YAML) into a ``Spec``."""
    if not isinstance(raw, dict) or "<top>" in raw:
        raise SpecError(source, "expected a mapping with 'method' and 'parameters'")
    unknown = set(raw) - W_AND_B_KEYS - OUR_KEYS
    if unknown:
        raise SpecError(sorted(unknown)[0], f"unknown sweep key; expected one of {', '.join(sorted(W_AND_B_KEYS | OUR_KEYS))}")
    method = raw.get("method")
    if method not in METHODS:
        raise SpecError("method", f"expected one of {', '.join(METHODS)}, got {method!r}")
    params = raw.get("parameters")
    if not isinstance(params, dict) or not params:
        raise SpecError("parameters", "expected a mapping of at least one parameter")
    search = {k: copy.deepcopy(v) for k, v in raw.items() if k in W_AND_B_KEYS}
    search["parameters"] = {str(k): _normalise_parameter(f"parameters.{k}", v) for k, v in params.items()}
    conditions = _conditions(search["parameters"])
    metric = search.setdefault("metric", dict(DEFAULT_METRIC))
    if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
        raise SpecError("metric.name", f"expected a metric name such as 'val/mAP', got {metric!r}")
    if metric["name"].startswith("test/"):
        raise SpecError("metric.name", f"expected a val/* metric, got {metric['name']!r}: test/* (query/gallery) is "
                        "evaluated once per trial and never searched on; val/* is the held-out identities")
    metric.setdefault("goal", "maximize")
    if metric["goal"] not in ("maximize", "minimize"):
        raise SpecError("metric.goal", f"expected 'maximize' or 'minimize', got {metric['goal']!r}")
    if method == "grid":
        for path, _, value in leaves(search["parameters"]):
            if value.get("distribution", "categorical") not in DISCRETE:
                raise SpecError(path, "grid search needs discrete values: use 'values', 'value' or an int_uniform range")
    _check_early_terminate(search.get("early_terminate"))
    for key, least in (("count", 1), ("run_cap", 1), ("seed", 0)):
        value = raw.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
            raise SpecError(key, f"expected a {'positive' if least else 'non-negative'} integer, got {value!r}")
    keep = raw.get("keep_checkpoints", DEFAULT_KEEP_CHECKPOINTS)
    if keep != "all" and (not isinstance(keep, int) or isinstance(keep, bool) or keep < 1):
        raise SpecError("keep_checkpoints", f"expected a number of trials >= 1 (the best one's checkpoint always "
                                            f"stays) or 'all', got {keep!r}")
    _check_schema(search)
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise SpecError("defaults", f"expected a mapping of trial parameters, got {defaults!r}")
    notebook = raw.get("notebook") or (EVALUATION_NOTEBOOK if raw.get("from") else DEFAULT_NOTEBOOK)
    return Spec(search_config=search, config_file=raw.get("config_file"), notebook=notebook, count=raw.get("count"),
                runs_dir=raw.get("results_dir_base"), defaults=defaults, source=source, evaluates=raw.get("from"),
                seed=raw.get("seed"), conditions=conditions, keep_checkpoints=keep)


def _check_early_terminate(et: Any) -> None:
    if et is None:
        return
    if not isinstance(et, dict) or et.get("type") != "hyperband":
        raise SpecError("early_terminate.type", f"expected 'hyperband', got {et!r}")
    if "min_iter" not in et and "max_iter" not in et:
        raise SpecError("early_terminate", "hyperband needs 'min_iter', or 'max_iter' with 's'")
    for key in ("min_iter", "max_iter", "s", "eta"):
        if key in et and (not isinstance(et[key], int) or isinstance(et[key], bool) or et[key] < 1):
            raise SpecError(f"early_terminate.{key}", f"expected a positive integer, got {et[key]!r}")


def _check_schema(search: dict) -> None:
    """W&B's own JSON schema, as a backstop to the checks above (which carry better field paths)."""
    from sweeps import schema_violations_from_proposed_config

    if search["method"] in OPTUNA_METHODS:  # W&B's schema knows its own methods only; the rest is the same
        search = {**search, "method": "random"}
    violations = schema_violations_from_proposed_config(search)
    if violations:
        raise SpecError("spec", "; ".join(dict.fromkeys(violations)))


def read_spec_file(path: str | Path) -> dict:
    """The YAML mapping of a spec file, not yet validated."""
    raw = read_yaml(path, SpecError, "sweep file")
    return raw if isinstance(raw, dict) else {"<top>": raw}


def amend(raw: dict, method: str | None = None, name: str | None = None, metric: str | None = None,
          config_file: str | None = None, custom_params: str | None = None, values: list[str] | None = None) -> dict:
    """The old scripts' command-line knobs applied to a spec mapping (before validation).

    ``metric`` is ``NAME[:minimize|maximize]``; ``custom_params`` a JSON mapping of parameters that are
    added or replaced; each of ``values`` is ``NAME=v1,v2,...`` (the old ``--lr_values``). A parameter given
    so replaces the spec's parameter and default for the same config key, whether either is spelt as an
    alias or as a dotted key (``SOLVER.BASE_LR`` replaces a preset's ``base_lr``).
    """
    raw = copy.deepcopy(raw)
    if method:
        raw["method"] = method
    if name:
        raw["name"] = name
    if config_file:
        raw["config_file"] = config_file
    if metric:
        metric_name, _, goal = metric.partition(":")
        raw["metric"] = {**(raw.get("metric") or {}), "name": metric_name, **({"goal": goal} if goal else {})}
    params = raw.setdefault("parameters", {})
    extra = {}
    if custom_params:
        try:
            extra = json.loads(custom_params)
        except json.JSONDecodeError as err:
            raise SpecError("--custom-params", f"expected a JSON mapping of parameters ({err.msg})") from None
        if not isinstance(extra, dict):
            raise SpecError("--custom-params", f"expected a JSON mapping of parameters, got {extra!r}")
    for item in values or []:
        key, sep, listed = item.partition("=")
        if not sep or not key or not listed:
            raise SpecError("--values", f"expected NAME=v1,v2,..., got {item!r}")
        extra[key] = {"values": [yaml.safe_load(v) for v in listed.split(",")]}
    if extra and isinstance(params, dict):
        replaced = {_config_key(name) for name in _raw_leaf_names(extra)}
        _drop_keys(params, replaced)
        if isinstance(raw.get("defaults"), dict):
            _drop_keys(raw["defaults"], replaced)
        params.update(extra)
    return raw


def _config_key(name: str) -> str:
    """The dotted YACS key a parameter name stands for (an alias's key, else the name itself)."""
    from reidlib.config import ALIASES

    return ALIASES.get(name, name)


def _raw_leaf_names(parameters: dict, prefix: str = "") -> list[str]:
    """The dotted names of a spec mapping's leaf parameters, before normalisation (nested groups expanded)."""
    names = []
    for name, value in parameters.items():
        if isinstance(value, dict) and isinstance(value.get("parameters"), dict):
            names += _raw_leaf_names(value["parameters"], f"{prefix}{name}.")
        else:
            names.append(f"{prefix}{name}")
    return names


def _drop_keys(parameters: dict, keys: set[str], prefix: str = "") -> None:
    """Remove from a spec mapping's parameters (or defaults, ``overrides`` included) every one that stands
    for one of ``keys``, however it is spelt: a command-line parameter replaces the spec's for its key."""
    for name, value in list(parameters.items()):
        if isinstance(value, dict) and isinstance(value.get("parameters"), dict):
            _drop_keys(value["parameters"], keys, f"{prefix}{name}.")
            if not value["parameters"]:
                del parameters[name]
        elif name == "overrides" and not prefix and isinstance(value, dict) and "value" not in value and "values" not in value:
            for key in keys & set(value):  # a defaults' overrides: dotted keys already
                del value[key]
        elif _config_key(f"{prefix}{name}") in keys:
            del parameters[name]


def load_spec(path: str | Path, **amendments) -> Spec:
    """Read, amend (see ``amend``), validate and normalise a spec file."""
    raw = amend(read_spec_file(path), **amendments) if amendments else read_spec_file(path)
    try:
        return normalise(raw, source=str(path))
    except SpecError as err:
        raise SpecError(f"{path}: {err.field}", err.message) from None


def check_against_config(spec: Spec) -> None:
    """Refuse, before the first trial, a sweep with trials that can only fail: every parameter name
    must be an alias or a config key; every value a trial can get (each of a discrete parameter's
    values, a range's two ends) must fit its key's type and rules; every combination of the values
    that rules between keys read must pass them (``reidlib.config.checks``); the per-sweep defaults
    must load and the dataset's folders exist."""
    try:
        base = load_config(spec.config_file, flatten_parameters(spec.defaults))
    except ConfigError as err:
        raise SpecError(err.field, err.message) from None
    _check_one_name_per_key(spec)
    base_values = dict(flat_keys(base))
    grid = spec.search_config["method"] == "grid"
    options = {keys: _parameter_options(path, ".".join(keys), parameter, base, base_values, grid)
               for path, keys, parameter in leaf_items(spec.search_config["parameters"])}
    _check_combinations(spec, options, base_values)
    try:
        check_dataset(base)
    except DatasetError as err:
        raise SpecError(err.field, f"{err.message}; every trial would fail on it") from None


def _check_one_name_per_key(spec: Spec) -> None:
    """A config key spelt two ways in one trial (``base_lr`` and ``SOLVER.BASE_LR``, as parameters or as a
    default and a parameter) would reach the trial twice, which refuses it: every trial would fail."""
    seen: dict[str, tuple[str, str]] = {}  # config key -> (field path, name as spelt)
    named = [(f"defaults.{name}", name) for name in flatten_parameters(spec.defaults)]
    named += [(path, name) for path, name, _ in leaves(spec.search_config["parameters"]) if name != "overrides"]
    for path, name in named:
        key = _config_key(name)
        first = seen.setdefault(key, (path, name))
        if first[1] != name:
            raise SpecError(path, f"{key} is also given as {first[0]}; keep one of the two names")


def _values_to_check(parameter: dict, grid: bool) -> list:
    """The values of a parameter that, checked, stand for all it can take: a discrete parameter's
    every value (an int_uniform range's, in a grid), else a range's two ends."""
    dist = parameter.get("distribution")
    if dist == "int_uniform" and not (grid and parameter["max"] - parameter["min"] < MAX_COMBINATIONS):
        return [parameter["min"], parameter["max"]]
    values = discrete_values(parameter)
    if values is not None:
        return values
    return [parameter["min"], parameter["max"]] if dist in VALUE_ENDS else []


def _parameter_options(path: str, name: str, parameter: dict, base, base_values: dict, grid: bool) -> list[tuple]:
    """``(value, {dotted key: typed value})`` for each value of ``_values_to_check``, each checked
    against its key's type and rules."""
    options = []
    for i, value in enumerate(_values_to_check(parameter, grid)):
        if name == "overrides":  # each value is a set of dotted keys (e.g. the ablation's tricks)
            if not isinstance(value, dict) and value is not None:
                raise SpecError(f"{path}.values[{i}]", f"expected a mapping of config keys to values, got {value!r}")
            at = f"{path}.values[{i}]."
            items = (value or {}).items()
        else:
            at, items = "", [(name, value)]
        typed = {}
        for item_name, item in items:
            try:
                key = resolve_key(base, str(item_name))
            except ConfigError as err:
                raise SpecError(f"{at}{item_name}" if at else path, err.message) from None
            if key in DRIVER_KEYS:
                raise SpecError(f"{at}{item_name}" if at else path, DRIVER_KEYS[key])
            try:
                typed[key] = coerce(key, item, base_values[key])
                check_value(key, typed[key])
            except ConfigError as err:
                raise SpecError(f"{at}{err.field}", err.message) if at else _spec_error(path, err) from None
        options.append((value, typed))
    return options


def _spec_error(path: str, err: ConfigError, where: str = "") -> SpecError:
    """``err`` at a parameter's field path, naming its config key where the path does not."""
    key = err.field.partition("[")[0]
    message = err.message if path.replace(".parameters.", ".").endswith(key) else f"{err.field}: {err.message}"
    return SpecError(path, message + where)


def _check_combinations(spec: Spec, options: dict, base_values: dict) -> None:
    """Each combination of the parameters that set a key of ``COMBINED_KEYS`` (with their parents:
    they decide whether a conditional one is present), over the defaults, against ``check_combination``."""
    parents = {condition.child: condition.parent for condition in spec.conditions}
    chosen = {keys for keys, opts in options.items() if any(typed.keys() & set(COMBINED_KEYS) for _, typed in opts)}
    for keys in list(chosen):
        while keys in parents:
            keys = parents[keys]
            chosen.add(keys)
    chosen = [keys for keys in options if keys in chosen]  # in the spec's order
    paths = {keys: path for path, keys, _ in leaf_items(spec.search_config["parameters"])}
    for point in itertools.islice(itertools.product(*(options[keys] for keys in chosen)), MAX_COMBINATIONS):
        flat = {keys: option for keys, option in zip(chosen, point)}
        for condition in spec.conditions:  # parents first, so an absent parent's children go too
            if condition.child in flat and not is_active(condition, {k: v for k, (v, _) in flat.items()}):
                del flat[condition.child]
        values = dict(base_values)
        for _, typed in flat.values():
            values.update(typed)
        try:
            check_combination(values)
        except ConfigError as err:
            setting = [keys for keys, (_, typed) in flat.items() if err.field in typed]
            trial = ", ".join(f"{'.'.join(keys)}={value!r}" for keys, (value, _) in flat.items())
            raise _spec_error(paths[setting[0]] if setting else "parameters", err, f" (in the trial {trial})") from None


def flatten_parameters(config: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in config.items():
        if name == "overrides" and not prefix:
            flat.update(value or {})  # already dotted keys
        elif isinstance(value, dict):
            flat.update(flatten_parameters(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def flatten_run_config(config: dict) -> tuple[dict, dict]:
    """Split a trial's parameters into papermill parameters and YACS overrides.

    ``config`` is ``{name: value}`` (nested dicts = nested parameters, ``overrides`` = dotted keys).
    Aliases stay papermill parameters; dotted keys go into the ``overrides`` dict.
    """
    from reidlib.config import ALIASES

    flat = flatten_parameters(config)
    return ({k: v for k, v in flat.items() if k in ALIASES},
            {k: v for k, v in flat.items() if k not in ALIASES})


def notebook_parameters(spec: Spec, chosen: dict, output_dir: Path, overrides: dict | None = None) -> dict:
    """The papermill parameters of a run of the spec's notebook: sweep defaults, then the ``chosen``
    parameters (which, from a W&B server, carry the sweep's ``config_file`` as a constant), then
    ``overrides`` (dotted keys the caller imposes)."""
    chosen = dict(chosen)
    config_file = chosen.pop("config_file", spec.config_file)
    params, dotted = flatten_run_config({**spec.defaults, **chosen})
    dotted.update(overrides or {})
    dotted["WANDB.ENABLE"] = False  # the driver owns this run's W&B run: one owner per run
    return {**params, "config_file": config_file, "overrides": dotted, "output_dir": str(output_dir)}


def check_notebook_parameters(spec: Spec, project_dir: Path) -> None:
    """Every alias a trial will receive must be a parameter of the trial notebook (papermill would
    only warn about an unknown one, and the trial would silently ignore it)."""
    import papermill

    from reidlib.config import ALIASES

    notebook = project_dir / spec.notebook
    accepted = set(papermill.inspect_notebook(str(notebook)))
    names = [(path, name) for path, name, _ in leaves(spec.search_config["parameters"]) if name in ALIASES]
    names += [(f"defaults.{name}", name) for name in spec.defaults if name in ALIASES]
    for path, name in names:
        if name not in accepted:
            raise SpecError(path, f"{notebook} has no parameter {name!r}")
