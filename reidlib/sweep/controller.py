"""The local search engine: W&B's open-source ``sweeps`` package (or Optuna's samplers, ``tpe``/``gp``,
see ``optuna_search``) over the ledger's trials.

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
The search sees a retry in place of the trial it reruns.

Seeded: every suggestion's random state is derived from the sweep's seed and the number of trials the
sweep has drawn so far (retries aside), never from process state, so the same spec, seed and trial
results give the same configurations, in one go or interrupted and resumed, and a random sweep hands
out the same configurations with any number of workers. ``sweeps`` draws from Python's and numpy's
global generators: they are seeded for the draw and restored after it.

No repeats: over a space of discrete parameters only (``values``, ``value``, ``int_uniform``), no
method hands out a configuration the sweep already has (any state; a retry reruns its trial). A
repeated suggestion is drawn again with the next derived seed, up to ``REDRAWS`` times, then one of
the configurations not yet tried is taken at random. When every configuration has been tried the
sweep ends, as a grid does, with one line saying so.

Conditional parameters (``Spec.conditions``): a suggestion drops the children whose parent does not
call for them. The grid sees a trial without a child as every value of that child, so it never runs
two points that differ only in an absent child; W&B's bayes, which has no notion of an absent
parameter, sees it at its median; Optuna's samplers only suggest a child when its parent calls for it.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import random
import secrets
import threading
import warnings
from contextlib import contextmanager

import numpy as np

from reidlib.errors import ReidSweepError
from reidlib.sweep.ledger import CRASHED, FAILED, FINISHED, KERNEL_DIED, RUNNING, STOPPED, Trial
from reidlib.sweep.spec import DISCRETE, OPTUNA_METHODS, Spec, discrete_values, leaf_items, nest
from reidlib.trial import TrialStatus, best_value

with warnings.catch_warnings():  # sweeps' pydantic models use v1 config names
    warnings.simplefilter("ignore")
    from sweeps.params import HyperParameter

    from sweeps import RunState, SweepRun, next_run, stop_runs

_RUN_STATE = {RUNNING: RunState.running, FINISHED: RunState.finished, STOPPED: RunState.finished,
              FAILED: RunState.failed, CRASHED: RunState.crashed}
MAX_STARTUP_FAILURES = 5  # like the W&B agent's flapping guard
BATCH_KEYS = ("ims_per_batch", "SOLVER.IMS_PER_BATCH")
INTERRUPTIONS = ("interrupted", "stop command")  # stop reasons that are not the search's own decision
MAX_KERNEL_DEATHS = 3  # a grid point whose kernel died by itself this many times is failed
REDRAWS = {"random": 1000}  # suggestions drawn again when repeated, by method (a random draw costs ~1 ms)
DEFAULT_REDRAWS = 10  # bayes/tpe/gp: each costs a model fit
ENUMERABLE = 100_000  # discrete spaces up to this many points are listed to tell when they are exhausted

log = logging.getLogger(__name__)
_GLOBAL_RNGS = threading.Lock()  # sweeps draws from random's and numpy's global state


class SweepPaused(ReidSweepError):
    """Too many trials in a row failed before their first epoch: something is wrong for all of them."""


def _as_sweep_run(trial: Trial, metric: str, goal: str) -> SweepRun:
    best = best_value(trial.history, metric, goal)
    return SweepRun(name=trial.name, state=_RUN_STATE[trial.state],
                    config={k: {"value": v} for k, v in trial.params.items()},
                    history=trial.history, summary_metrics={} if best is None else {metric: best},
                    stopped=trial.state == STOPPED)


def draw_seed() -> int:
    """A seed for a sweep given none: recorded, so the sweep can be repeated."""
    return secrets.randbits(32)


def derived_seed(seed: int, draws: int, attempt: int = 0) -> int:
    """The random state of a sweep's ``draws``-th suggestion (``attempt``-th redraw): a function of
    these numbers only, whichever process or worker draws it."""
    return int(np.random.SeedSequence([seed, draws, attempt]).generate_state(1)[0])


@contextmanager
def _seeded(seed: int):
    with _GLOBAL_RNGS:
        saved = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])


def _identity(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def all_discrete(spec: Spec) -> bool:
    return all(p.get("distribution", "categorical") in DISCRETE for _, _, p in leaf_items(spec.search_config["parameters"]))


def discrete_points(spec: Spec) -> list[dict] | None:
    """Every distinct configuration of an all-discrete space (children absent where their parent does
    not call for them), in grid order; None when a parameter is continuous or there are too many."""
    items = leaf_items(spec.search_config["parameters"])
    choices = [discrete_values(p) for _, _, p in items]
    if not all_discrete(spec) or math.prod(len(c) for c in choices) > ENUMERABLE:
        return None
    points = {}
    for combination in itertools.product(*choices):
        point = spec.prune(nest({keys: v for (_, keys, _), v in zip(items, combination)}))
        points.setdefault(_identity(point), point)
    return list(points.values())


def _leaf_spec(spec: Spec, keys: tuple) -> dict:
    return next(p for _, k, p in leaf_items(spec.search_config["parameters"]) if k == keys)


def _median(keys: tuple, parameter: dict):
    return np.asarray(HyperParameter(".".join(keys), parameter).ppf(0.5)).item()


def _with_params(trial: Trial, params: dict) -> Trial:
    return Trial(name=trial.name, seq=trial.seq, state=trial.state, params=params, history=trial.history)


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
    def __init__(self, spec: Spec, count: int | None = None, seed: int | None = None):
        self.spec = spec
        caps = [c for c in (count or spec.count, spec.search_config.get("run_cap")) if c]
        self.limit = min(caps) if caps else None
        self.metric, self.goal = spec.metric["name"], spec.metric["goal"]
        self.seed = seed if seed is not None else spec.seed if spec.seed is not None else draw_seed()
        self.method = spec.search_config["method"]
        self.all_discrete = self.method != "grid" and all_discrete(spec)  # a grid never repeats by itself
        self.points = discrete_points(spec) if self.all_discrete else None
        self.optuna = None
        if self.method in OPTUNA_METHODS:
            from reidlib.sweep.optuna_search import OptunaSearch

            self.optuna = OptunaSearch(spec)
        self._said_exhausted = False

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
            if trial.state == FAILED and (trial.summary or {}).get("status") == TrialStatus.OOM and \
                    not any((t.summary or {}).get("status") == TrialStatus.OOM for t in lineage(trials, trial)[1:]):
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
        reached, search space exhausted, or metric target reached."""
        self.check_flapping(trials)
        if self.target_reached(trials):
            return None
        retry = self._retry(trials)
        if retry is not None:
            return retry
        superseded = {t.retry_of for t in trials if t.retry_of}
        if self.limit is not None and sum(t.name not in superseded for t in trials) >= self.limit:
            return None
        searched = [t for t in trials if t.name not in superseded]  # a retry stands for the trial it reruns
        seen = {_identity(self.spec.prune(t.params)) for t in trials}  # an out-of-memory trial's too
        params = self._new_configuration(searched, seen, draws=sum(not t.retry_of for t in trials))
        if params is None:
            self._exhausted(len(trials))
            return None
        return params, None

    def _exhausted(self, tried: int) -> None:
        if not self._said_exhausted:
            self._said_exhausted = True
            log.info("every configuration of the search space has been tried (%d trials): the sweep ends", tried)

    def _suggest(self, searched: list[Trial], seed: int) -> dict | None:
        """The search engine's next configuration (children pruned), or None when a grid is done."""
        if self.optuna is not None:
            return self.optuna.suggest(searched, seed)
        runs = self._runs(searched)
        with _seeded(seed), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            suggestion = next_run(self.spec.search_config, runs, validate=False)
        return None if suggestion is None else self.spec.prune({k: v["value"] for k, v in suggestion.config.items()})

    def _runs(self, searched: list[Trial]) -> list[SweepRun]:
        """The trials as ``sweeps`` sees them. A trial without a conditional child stands, for the grid,
        for every value of that child (so the grid moves on to a point that differs in a present
        parameter); for bayes, for the child's median (W&B's GP has no notion of an absent parameter)."""
        if not self.spec.conditions or self.method == "random":
            return self._sweep_runs(searched)
        children = [(c.child, _leaf_spec(self.spec, c.child)) for c in self.spec.conditions]
        fills = [(keys, discrete_values(p) if self.method == "grid" else [_median(keys, p)]) for keys, p in children]
        runs = []
        for trial in searched:
            flat = self.spec.flat(trial.params)
            absent = [(keys, values) for keys, values in fills if keys not in flat]
            for filled in itertools.product(*(values for _, values in absent)):
                params = nest({**flat, **{keys: v for (keys, _), v in zip(absent, filled)}})
                runs.append(_as_sweep_run(_with_params(trial, params), self.metric, self.goal))
        return runs

    def _new_configuration(self, searched: list[Trial], seen: set[str], draws: int) -> dict | None:
        """The next configuration, seeded; on a discrete space one not ``seen`` yet (None once all are)."""
        if self.points is not None and all(_identity(p) in seen for p in self.points):
            return None
        attempts = REDRAWS.get(self.method, DEFAULT_REDRAWS) if self.all_discrete else 1
        for attempt in range(attempts):
            params = self._suggest(searched, derived_seed(self.seed, draws, attempt))
            if params is None or not self.all_discrete or _identity(params) not in seen:
                return params
        if self.points is not None:  # the engine keeps to what it has tried: one it has not, at random
            untried = [p for p in self.points if _identity(p) not in seen]
            return random.Random(derived_seed(self.seed, draws, attempts)).choice(untried)
        log.warning("the search suggested only configurations the sweep already has; running %s again", params)
        return params

    def to_stop(self, trials: list[Trial]) -> set[str]:
        """Names of running trials that hyperband says to stop now."""
        if "early_terminate" not in self.spec.search_config:
            return set()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {run.name for run in stop_runs(self.spec.search_config, self._sweep_runs(trials), validate=False)}
