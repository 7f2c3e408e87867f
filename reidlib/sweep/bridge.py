"""The bridge: scraps from a running trial go to the ledger and to the trial's wandb run.

The driver owns every wandb run (the trial notebook never calls ``wandb.init`` when driven): one
run per trial, grouped by sweep, offline unless a key or server is configured. A W&B failure never
fails a trial: it is logged once, and the ledger still holds everything (``wandb sync`` later).
"""
from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from reidlib import trial as contract
from reidlib.sweep.ledger import Ledger, Trial

log = logging.getLogger(__name__)


def wandb_mode(requested: str | None = None) -> str:
    """'offline' unless asked otherwise or a key/server is configured (``WANDB_MODE`` respected)."""
    if requested:
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_BASE_URL") else "offline"


def _loggable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}


def flat_summary(summary: dict | None) -> dict:
    """A trial's summary as W&B summary keys: ``val/mAP`` = best over epochs (what
    ``define_metric(summary="max")`` would keep, written as a plain number so W&B's sweep engine and
    ``best_run`` read it), ``last/val/mAP`` = the last evaluation, plus status and costs."""
    if not summary:
        return {}
    flat = {k: v for k, v in summary.items() if k not in ("best", "last", "initial", "cmc") and v is not None}
    flat.update(summary.get("best") or {})
    flat.update({f"last/{k}": v for k, v in (summary.get("last") or {}).items()})
    flat.update({f"initial/{k}": v for k, v in (summary.get("initial") or {}).items()})
    return flat


class TrialBridge:
    """Receives one trial's scraps (``on_scrap``) and records them; ``on_epoch`` is called after each
    epoch is recorded (the driver's hyperband check)."""

    def __init__(self, ledger: Ledger, trial: Trial, run=None, on_epoch: Callable[[dict], None] | None = None):
        self.ledger, self.trial, self.run, self.on_epoch = ledger, trial, run, on_epoch
        self.summary: dict | None = None

    def on_scrap(self, name: str, data: Any) -> None:
        if name.startswith(contract.EPOCH_PREFIX):
            self.ledger.add_epoch(self.trial.name, data)
            # No explicit step: each epoch commits at once (a buffered last step would later overwrite
            # the summary); the x-axis is `epoch` through define_metric.
            self._wandb(lambda run: run.log(_loggable(data)))
            if self.on_epoch:
                self.on_epoch(data)
        elif name == contract.SUMMARY:
            self.summary = data
        elif name == contract.CONFIG:
            self.ledger.update_trial(self.trial.name, config=data)
            self._wandb(lambda run: run.config.update(data, allow_val_change=True))

    def _wandb(self, action: Callable[[Any], None]) -> None:
        if self.run is None:
            return
        try:
            action(self.run)
        except Exception as err:  # W&B trouble never costs a trial
            log.warning("W&B failed for %s (%s); the ledger has everything, sync later", self.trial.name, err)
            self.run = None

    def close(self, state: str, notebook: Path | None = None) -> None:
        def finish(run):
            run.summary.update({**flat_summary(self.summary), "state": state})
            if notebook is not None and notebook.is_file():  # files in run.dir are uploaded (or synced) at finish
                shutil.copy2(notebook, Path(run.dir) / notebook.name)
            run.finish(exit_code=0 if state in ("finished", "stopped") else 1)

        self._wandb(finish)


def configure_run(run):
    """Plot every metric against ``epoch``."""
    run.define_metric("epoch")
    run.define_metric("*", step_metric="epoch")
    return run


def open_wandb_run(mode: str, project: str, entity: str | None, sweep_id: str, trial: Trial, config: dict,
                   directory: Path):
    """A wandb run for one trial, or None (disabled, or W&B failed: logged, never raised)."""
    if mode == "disabled":
        return None
    try:
        import wandb

        run = wandb.init(project=project, entity=entity, group=sweep_id, job_type="trial", name=trial.name,
                         id=f"{sweep_id}-{trial.name}", config=config, dir=str(directory), mode=mode,
                         tags=[sweep_id], reinit="create_new",
                         settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
        return configure_run(run)
    except Exception as err:
        log.warning("W&B could not start a run for %s (%s); continuing without it", trial.name, err)
        return None
