"""Optuna's samplers under the W&B schema: ``method: tpe`` (TPE, multivariate and grouped, so it models
conditional parameters) and ``method: gp`` (Optuna's Gaussian-process sampler).

Each suggestion rebuilds an in-memory study from the ledger, as ``sweeps`` is fed: finished (and
hyperband-stopped) trials are told their best value of the metric, failed ones (and finished ones that
never reported it) as failed, running ones as running (TPE's constant liar and the GP sampler keep
parallel workers apart). Then one trial is asked for, define-by-run, parents before their children, so
a conditional parameter is only suggested when its parent's value calls for it. The sampler's seed is
the caller's (derived from the sweep's seed and how many trials the sweep has drawn), so the same
ledger and seed give the same suggestion, in any process.

W&B distributions map to Optuna's as follows: ``values`` (with or without probabilities: Optuna has no
categorical prior) are categorical over their positions; ``int_uniform`` is an integer range; every
other distribution is searched on its quantile (in [1e-6, 1 - 1e-6]) and turned into a value by ``sweeps``' own
inverse CDF (as W&B's bayes normalises its inputs), so log, inverse-log, normal, beta and the
quantised ones keep W&B's shapes. A ``value`` is a categorical of one.

``gp`` needs torch (CPU) in the driver process, imported by Optuna once the first 10 trials are in:
it never touches CUDA, but it costs the driver about as much memory as a trial's kernel. ``tpe`` does
not import torch.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from reidlib.sweep.ledger import RUNNING, Trial
from reidlib.sweep.spec import Keys, Spec, discrete_values, is_active, leaf_items, nest
from reidlib.trial import best_value

with warnings.catch_warnings():  # sweeps' pydantic models use v1 config names
    warnings.simplefilter("ignore")
    from sweeps.params import HyperParameter

# Quantiles are searched within [Q, 1 - Q]: the ends are infinite for normal distributions and, through
# exp(log(x)), a hair outside the range for log ones. Q = 1e-6 is 4.75 sigma.
Q = 1e-6


class _Leaf:
    """One parameter: its Optuna distribution, and W&B value <-> Optuna value."""

    def __init__(self, keys: Keys, parameter: dict):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        self.keys, self.name = keys, ".".join(keys)
        if parameter.get("distribution") == "int_uniform":
            self.kind, self.distribution = "int", IntDistribution(parameter["min"], parameter["max"])
        elif discrete_values(parameter) is not None:
            self.values = discrete_values(parameter)
            self.kind, self.distribution = "categorical", CategoricalDistribution(list(range(len(self.values))))
        else:
            self.hyperparameter = HyperParameter(self.name, parameter)
            self.kind, self.distribution = "quantile", FloatDistribution(Q, 1.0 - Q)

    def suggest(self, trial) -> Any:
        """The Optuna value for this parameter in an asked trial."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, self.distribution.choices)
        if self.kind == "int":
            return trial.suggest_int(self.name, self.distribution.low, self.distribution.high)
        return trial.suggest_float(self.name, Q, 1.0 - Q)

    def to_wandb(self, internal: Any) -> Any:
        if self.kind == "categorical":
            return self.values[internal]
        if self.kind == "int":
            return int(internal)
        return np.asarray(self.hyperparameter.ppf(internal)).item()

    def to_optuna(self, value: Any) -> Any | None:
        """The Optuna value of a W&B value, or None where this distribution cannot hold it (a retry's
        halved batch, a value from before the spec was edited)."""
        if self.kind == "categorical":
            return next((i for i, v in enumerate(self.values) if v == value), None)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None
        if self.kind == "int":
            return int(value) if self.distribution.low <= value <= self.distribution.high else None
        quantile = float(np.clip(self.hyperparameter.cdf(value), Q, 1.0 - Q))
        return quantile if np.isfinite(quantile) else None


class OptunaSearch:
    """``suggest(trials, seed)``: the next trial's parameters from Optuna's sampler for the spec's
    method (``tpe`` or ``gp``)."""

    def __init__(self, spec: Spec):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per in-memory study
        self.spec, self.method = spec, spec.search_config["method"]
        self.metric, self.goal = spec.metric["name"], spec.metric["goal"]
        conditional = {c.child: c for c in spec.conditions}
        leaves = {keys: _Leaf(keys, parameter) for _, keys, parameter in leaf_items(spec.search_config["parameters"])}
        # parents before their children (spec.conditions is in that order), the others as written
        order = [c.child for c in spec.conditions]
        self.leaves = [leaves[k] for k in leaves if k not in conditional] + [leaves[k] for k in order]
        self.conditions = conditional

    def _sampler(self, seed: int):
        import optuna

        with warnings.catch_warnings():  # multivariate, group and constant_liar are "experimental"
            warnings.simplefilter("ignore")
            if self.method == "tpe":
                return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
            return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)

    def _frozen(self, trial: Trial, best: float | None):
        import optuna
        from optuna.trial import TrialState, create_trial

        flat = self.spec.flat(trial.params)
        params, distributions = {}, {}
        for leaf in self.leaves:
            internal = leaf.to_optuna(flat[leaf.keys]) if leaf.keys in flat else None
            if internal is not None:
                params[leaf.name], distributions[leaf.name] = internal, leaf.distribution
        if trial.state == RUNNING:
            state, value = TrialState.RUNNING, None
        elif trial.state.completed and best is not None:
            state, value = TrialState.COMPLETE, best
        else:  # failed, crashed, or ended without a value of the metric
            state, value = TrialState.FAIL, None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return create_trial(state=state, value=value, params=params, distributions=distributions)

    def suggest(self, trials: list[Trial], seed: int) -> dict:
        """The next parameters, given the trials the search sees (with history) and a seed."""
        import optuna

        study = optuna.create_study(direction=self.goal, sampler=self._sampler(seed))
        study.add_trials([self._frozen(t, best_value(t.history, self.metric, self.goal)) for t in trials])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            asked = study.ask()
            flat: dict = {}
            for leaf in self.leaves:
                condition = self.conditions.get(leaf.keys)
                if condition is None or is_active(condition, flat):
                    flat[leaf.keys] = leaf.to_wandb(leaf.suggest(asked))
        return nest(flat)
