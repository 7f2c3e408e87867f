"""The local search engine: W&B's open-source ``sweeps`` package over the ledger's trials.

Running trials are passed to ``next_run`` too, so a grid point is never handed out twice. What the
W&B server adds on top of ``sweeps`` we implement here: ``count``/``run_cap``, ``metric.target``, and
the agent's guard against a sweep whose every trial fails at start-up.

How trials count for the search (documented choice): a finished trial reports the best value of the
metric over its epochs (as ``define_metric(summary="max")``); a trial stopped early by hyperband
reports the best value it reached (its state is 'finished' for ``sweeps``, with ``stopped`` set);
failed trials (errors, divergence, out of memory) are imputed the worst value by ``sweeps``' bayes,
so a learning-rate sweep that reaches into divergence learns to stay away from it.

Retries come first: a trial that crashed (its kernel or driver died) or that the user interrupted
(Ctrl-C, ``reid-sweep stop``) runs again with the same parameters, and again each time its retry
is interrupted, so no grid point is lost. Only a trial whose own kernel keeps dying (the driver lives
on) is capped: the ``MAX_KERNEL_DEATHS``-th death of one point fails it (``capped_crash``).
One that ran out of GPU memory runs again once with ``SOLVER.IMS_PER_BATCH`` halved (kept a
multiple of ``DATALOADER.NUM_INSTANCE``). A retried trial no longer counts towards ``count``.
"""
from __future__ import annotations

import math
import warnings

from reidlib.errors import ReidSweepError
from reidlib.sweep.ledger import CRASHED, FAILED, FINISHED, KERNEL_DIED, RUNNING, STOPPED, Trial
from reidlib.sweep.spec import Spec

with warnings.catch_warnings():  # sweeps' pydantic models use v1 config names
    warnings.simplefilter("ignore")
    from sweeps import RunState, SweepRun, next_run, stop_runs

_RUN_STATE = {RUNNING: RunState.running, FINISHED: RunState.finished, STOPPED: RunState.finished,
              FAILED: RunState.failed, CRASHED: RunState.crashed}
MAX_STARTUP_FAILURES = 5  # like the W&B agent's flapping guard
BATCH_KEYS = ("ims_per_batch", "SOLVER.IMS_PER_BATCH")
INTERRUPTIONS = ("interrupted", "stop command")  # stop reasons that are not the search's own decision
MAX_KERNEL_DEATHS = 3  # a grid point whose kernel died by itself this many times is failed


class SweepPaused(ReidSweepError):
    """Too many trials in a row failed before their first epoch: something is wrong for all of them."""


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


def halved_batch(trial: Trial) -> dict | None:
    """The parameters of an out-of-memory trial with half the batch, or None if it cannot shrink."""
    config = trial.config or {}
    batch, k = config.get("SOLVER.IMS_PER_BATCH"), config.get("DATALOADER.NUM_INSTANCE", 1)
    if not batch:
        return None
    pk = config.get("DATALOADER.SAMPLER") != "softmax"
    smaller = (batch // 2) // k * k if pk else batch // 2
    if smaller < (k if pk else 1) or smaller >= batch:
        return None
    params = {key: value for key, value in trial.params.items() if key not in BATCH_KEYS}
    return {**params, "ims_per_batch": smaller}


def interrupted(trial: Trial) -> bool:
    """Whether a trial ended before its time for a reason outside the search: it runs again."""
    return trial.state == CRASHED or (trial.state == STOPPED and trial.exit_reason in INTERRUPTIONS)


def kernel_died(trial: Trial) -> bool:
    return trial.state == CRASHED and (trial.exit_reason or "").startswith(KERNEL_DIED)


def lineage(trials: list[Trial], trial: Trial) -> list[Trial]:
    """The trial and those it runs again, newest first."""
    by_name, line = {t.name: t for t in trials}, [trial]
    while line[-1].retry_of in by_name and len(line) <= len(trials):
        line.append(by_name[line[-1].retry_of])
    return line


def capped_crash(trials: list[Trial], trial: Trial, reason: str) -> tuple[str, str]:
    """``(state, exit reason)`` of a trial whose kernel just died while its driver lived: crashed (it
    runs again), or failed once its point's kernel has died ``MAX_KERNEL_DEATHS`` times."""
    deaths = 1 + sum(kernel_died(t) for t in lineage(trials, trial)[1:])
    if deaths < MAX_KERNEL_DEATHS:
        return CRASHED, reason
    return FAILED, f"kernel died {deaths} times (the retry cap); last: {reason}"


class LocalController:
    def __init__(self, spec: Spec, count: int | None = None):
        self.spec = spec
        caps = [c for c in (count or spec.count, spec.search_config.get("run_cap")) if c]
        self.limit = min(caps) if caps else None
        self.metric, self.goal = spec.metric["name"], spec.metric["goal"]

    def _sweep_runs(self, trials: list[Trial]) -> list[SweepRun]:
        return [_as_sweep_run(t, self.metric, self.goal) for t in trials]

    def target_reached(self, trials: list[Trial]) -> bool:
        target = self.spec.metric.get("target")
        if target is None:
            return False
        bests = [best_value(t.history, self.metric, self.goal) for t in trials]
        return any(b is not None and (b >= target if self.goal == "maximize" else b <= target) for b in bests)

    @staticmethod
    def _retry(trials: list[Trial]) -> tuple[dict, str] | None:
        superseded = {t.retry_of for t in trials if t.retry_of}
        for trial in trials:
            if trial.name in superseded:
                continue  # already run again
            if interrupted(trial):
                return trial.params, trial.name
            if trial.state == FAILED and (trial.summary or {}).get("status") == "oom" and \
                    not any((t.summary or {}).get("status") == "oom" for t in lineage(trials, trial)[1:]):
                params = halved_batch(trial)  # once per point
                if params is not None:
                    return params, trial.name
        return None

    @staticmethod
    def check_flapping(trials: list[Trial]) -> None:
        streak = []
        for trial in reversed([t for t in trials if t.state != RUNNING]):
            if interrupted(trial) and not kernel_died(trial):
                continue  # its driver died or was stopped: not the trial's failure
            if trial.state not in (FAILED, CRASHED) or trial.history:
                break
            streak.append(trial)
        if len(streak) >= MAX_STARTUP_FAILURES:
            last = streak[0]
            raise SweepPaused("sweep", f"the last {len(streak)} trials failed before their first epoch "
                              f"(last: {last.exit_reason}; see {last.notebook}); fix that, then resume with --sweep-id")

    def next_trial(self, trials: list[Trial]) -> tuple[dict, str | None] | None:
        """``(params, retry_of)`` of the next trial, or None when the sweep is done: count or run cap
        reached, grid exhausted, or metric target reached."""
        self.check_flapping(trials)
        if self.target_reached(trials):
            return None
        retry = self._retry(trials)
        if retry is not None:
            return retry
        superseded = {t.retry_of for t in trials if t.retry_of}
        if self.limit is not None and sum(t.name not in superseded for t in trials) >= self.limit:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            suggestion = next_run(self.spec.search_config, self._sweep_runs(trials), validate=False)
        if suggestion is None:
            return None
        return {k: v["value"] for k, v in suggestion.config.items()}, None

    def to_stop(self, trials: list[Trial]) -> set[str]:
        """Names of running trials that hyperband says to stop now."""
        if "early_terminate" not in self.spec.search_config:
            return set()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {run.name for run in stop_runs(self.spec.search_config, self._sweep_runs(trials), validate=False)}
