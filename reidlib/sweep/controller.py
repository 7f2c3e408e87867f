"""The local search engine: W&B's open-source ``sweeps`` package over the ledger's trials.

Running trials are passed to ``next_run`` too, so a grid point is never handed out twice. What the
W&B server adds on top of ``sweeps`` we implement here: ``count``/``run_cap`` and ``metric.target``.

How trials count for the search (documented choice): a finished trial reports the best value of the
metric over its epochs (as ``define_metric(summary="max")``); a trial stopped early by hyperband
reports the best value it reached; failed trials report nothing (``sweeps`` ignores them).
"""
from __future__ import annotations

import math
import warnings

from reidlib.sweep.ledger import CRASHED, FAILED, FINISHED, RUNNING, STOPPED, Ledger, Trial
from reidlib.sweep.spec import Spec

with warnings.catch_warnings():  # sweeps' pydantic models use v1 config names
    warnings.simplefilter("ignore")
    from sweeps import RunState, SweepRun, next_run, stop_runs

_RUN_STATE = {RUNNING: RunState.running, FINISHED: RunState.finished, STOPPED: RunState.finished,
              FAILED: RunState.failed, CRASHED: RunState.crashed}


def best_value(history: list[dict], metric: str, goal: str) -> float | None:
    values = [row[metric] for row in history if isinstance(row.get(metric), (int, float)) and math.isfinite(row[metric])]
    if not values:
        return None
    return max(values) if goal == "maximize" else min(values)


def _as_sweep_run(trial: Trial, metric: str, goal: str) -> SweepRun:
    best = best_value(trial.history, metric, goal)
    return SweepRun(name=trial.name, state=_RUN_STATE[trial.state],
                    config={k: {"value": v} for k, v in trial.params.items()},
                    history=trial.history, summary_metrics={} if best is None else {metric: best},
                    stopped=trial.state == STOPPED)


class LocalController:
    def __init__(self, spec: Spec, ledger: Ledger, count: int | None = None):
        self.spec, self.ledger = spec, ledger
        caps = [c for c in (count or spec.count, spec.search_config.get("run_cap")) if c]
        self.limit = min(caps) if caps else None
        self.metric, self.goal = spec.metric["name"], spec.metric["goal"]

    def _runs(self) -> list[SweepRun]:
        return [_as_sweep_run(t, self.metric, self.goal) for t in self.ledger.trials(with_history=True)]

    def target_reached(self) -> bool:
        target = self.spec.metric.get("target")
        if target is None:
            return False
        for trial in self.ledger.trials(with_history=True):
            best = best_value(trial.history, self.metric, self.goal)
            if best is not None and (best >= target if self.goal == "maximize" else best <= target):
                return True
        return False

    def next_params(self) -> dict | None:
        """The next trial's parameters, or None when the sweep is done (count, run cap, grid
        exhausted, or metric target reached)."""
        runs = self._runs()
        if self.limit is not None and len(runs) >= self.limit:
            return None
        if self.target_reached():
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            suggestion = next_run(self.spec.search_config, runs, validate=False)
        if suggestion is None:
            return None
        return {k: v["value"] for k, v in suggestion.config.items()}

    def to_stop(self) -> set[str]:
        """Names of running trials that hyperband says to stop now."""
        if "early_terminate" not in self.spec.search_config:
            return set()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {run.name for run in stop_runs(self.spec.search_config, self._runs(), validate=False)}
