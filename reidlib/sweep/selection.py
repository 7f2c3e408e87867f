"""The selected trial of a sweep: its best finished trial for the sweep's metric and goal.

One definition for all that pick it: the analysis's ``best_run`` (local and W&B sweeps alike), an
evaluation sweep's ``from: <sweep>``, and the trials whose checkpoints a sweep keeps. Only finished trials
rank: one stopped early or failed never wins, whatever its number (it is from fewer epochs).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from reidlib import trial as contract
from reidlib.sweep.ledger import FINISHED, Trial
from reidlib.wandb_run import flat_summary

T = TypeVar("T")


def metric_value(trial: Trial, metric: Mapping[str, str]) -> Any:
    """A ledger trial's value of the sweep's ``metric``: its best over its epochs, as its summary keeps
    it (recomputed from its history when read with it: a ledger from before summaries held it reads the same)."""
    return flat_summary(contract.with_metric_best(trial.summary, trial.history, metric)).get(metric["name"])


def ranked_trials(trials: Iterable[T], metric: Mapping[str, str] = contract.DEFAULT_METRIC,
                  value_of: Callable[[T], Any] | None = None) -> list[T]:
    """The finished trials best first for ``metric`` (name and goal), those without a value left out.
    ``value_of(trial)`` reads a trial's value: by default a ledger trial's (``metric_value``)."""
    value_of = value_of or (lambda trial: metric_value(trial, metric))
    return contract.ranked([t for t in trials if t.state == FINISHED], value_of, metric.get("goal", contract.MAXIMIZE))


def selected_trial(trials: Iterable[T], metric: Mapping[str, str] = contract.DEFAULT_METRIC,
                   value_of: Callable[[T], Any] | None = None) -> T | None:
    """The first of ``ranked_trials``; None while no trial has finished with a value."""
    return next(iter(ranked_trials(trials, metric, value_of)), None)
