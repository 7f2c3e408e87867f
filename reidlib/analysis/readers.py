"""The sweep readers: a local sweep read from its ledger (``LocalSweep``, its runs ``LocalRun``), what
every reader derives (``SweepReader``: metric, best run), and ``open_sweep``, which also reads a W&B sweep
(``reidlib.analysis.wandb_sweep``)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from reidlib import trial as contract
from reidlib.errors import SweepStateError
from reidlib.sweep import layout
from reidlib.sweep.lease import DRIVER_GONE, DriverLease
from reidlib.sweep.ledger import CRASHED, RUNNING, Ledger, Trial
from reidlib.sweep.selection import selected_trial
from reidlib.wandb_run import flat_summary


@dataclass
class LocalRun:
    trial: Trial
    sweep_id: str
    metric: dict = field(default_factory=lambda: dict(contract.DEFAULT_METRIC))  # the sweep's: its best is in the summary

    @property
    def name(self) -> str:
        return self.trial.name

    @property
    def id(self) -> str:
        return self.trial.wandb_id or f"{self.sweep_id}-{self.trial.name}"

    @property
    def state(self) -> str:
        return self.trial.state

    @property
    def config(self) -> dict:
        return dict(self.trial.params)

    @property
    def summary(self) -> dict:
        """As W&B's: a running trial's is what its epochs so far logged (each ``val/*`` and the sweep's
        metric at its best)."""
        if self.trial.state == RUNNING and self.trial.summary is None:
            history = self.trial.history
            so_far = {"best": contract.best_metrics(history), "epochs_run": len(history)}
            return {**(history[-1] if history else {}),
                    **flat_summary(contract.with_metric_best(so_far, history, self.metric)), "state": self.trial.state}
        # the sweep's metric's best recomputed: a ledger from before summaries held it reads the same
        summary = contract.with_metric_best(self.trial.summary, self.trial.history, self.metric)
        return {**flat_summary(summary), "state": self.trial.state}

    @property
    def exit_reason(self) -> str | None:
        return self.trial.exit_reason

    @property
    def effective_config(self) -> dict:
        """Every YACS key as the trial trained with it (flattened, dotted)."""
        return dict(self.trial.config or {})

    @property
    def notebook_path(self) -> Path | None:
        return Path(self.trial.notebook) if self.trial.notebook else None

    @property
    def checkpoint(self) -> Path | None:
        path = (self.trial.summary or {}).get("checkpoint")
        return Path(path) if path else None

    def history(self) -> pd.DataFrame:
        return pd.DataFrame(self.trial.history)


class SweepReader:
    """What every sweep reader (``LocalSweep``, ``WandbSweep``) derives from its ``config`` and ``runs``:
    the metric and the best run."""

    config: dict
    runs: list

    @property
    def metric(self) -> tuple[str, str]:
        metric = self.config.get("metric") or contract.DEFAULT_METRIC
        return metric["name"], metric.get("goal", contract.MAXIMIZE)

    def best_run(self, order: str | None = None):
        """The finished run with the best metric (``selected_trial``); ``order`` as in wandb.Api
        (``"-summary_metrics.val/mAP"`` = highest first; a leading ``+`` = lowest first)."""
        if order is None:
            name, goal = self.metric
        else:
            goal = "minimize" if order.startswith("+") else "maximize"
            name = order.lstrip("+-").removeprefix("summary_metrics.")
        return selected_trial(self.runs, {"name": name, "goal": goal}, lambda run: run.summary.get(name))


class LocalSweep(SweepReader):
    def __init__(self, directory: Path):
        self.directory = directory
        ledger = Ledger.open(directory)
        try:
            info = ledger.sweep()
            self.id, self.name, self.config = info["id"], info["name"], info["spec"]
            trials = ledger.trials(with_history=True)
            orphans = {t.name for t in trials if t.state == RUNNING and not DriverLease.alive(directory, t.worker)}
            if orphans:  # a driver records its trials' ends before it lets go: one that just did is read again
                trials = ledger.trials(with_history=True)
        finally:
            ledger.close()
        metric = self.config.get("metric") or contract.DEFAULT_METRIC
        self.runs = [LocalRun(replace(t, state=CRASHED, exit_reason=DRIVER_GONE)
                              if t.name in orphans and t.state == RUNNING else t, self.id, metric) for t in trials]


def open_local_sweep(ref: str | Path, runs_dir: str | Path = layout.RUNS_DIR) -> LocalSweep:
    """A sweep of this machine, by id (under ``runs_dir``) or by directory."""
    return LocalSweep(layout.existing_sweep_dir(ref, runs_dir))


def open_sweep(ref: str | Path, runs_dir: str | Path = layout.RUNS_DIR) -> SweepReader:
    """A sweep by id (under ``runs_dir``), by directory, or by W&B path ``entity/project/sweep_id``
    (through ``wandb.Api``); a local sweep of that name wins."""
    try:
        return open_local_sweep(ref, runs_dir)
    except SweepStateError as err:
        if not (isinstance(ref, str) and len(parts := ref.split("/")) == 3 and all(parts)):
            raise SweepStateError(err.field, f"{err.message}; a W&B sweep is ENTITY/PROJECT/SWEEP_ID") from None
    from reidlib.analysis.wandb_sweep import open_wandb_sweep

    return open_wandb_sweep(ref)


def untrained_value(run, metric: str):
    """``metric`` of the run's network before training (``TEST.EVAL_BEFORE_TRAINING``), if evaluated."""
    return run.summary.get(f"untrained/{metric}", run.summary.get(f"initial/{metric}"))  # initial/: older runs
