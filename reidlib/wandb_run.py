"""The one W&B writer. Every trial's wandb run is opened, fed and finished here, whoever owns it: the
sweep driver (``reidlib.sweep.bridge``, one run per trial, and ``finalize``'s), the W&B agent, or a
standalone trial notebook (``WANDB.ENABLE``, ``reidlib.trial.WandbRecorder``). So they all have one
destination precedence (``wandb_destination``), one mode (offline unless a key or server is
configured), every metric plotted against ``epoch``, and one summary: each metric's best over the
epochs (what ``define_metric(summary="max")`` would keep, written as a plain number so W&B's sweep
engine and ``best_run`` read it), ``last/*``, ``test/*``, the trial's ``status`` and ``state``.

Torch-free and free of the sweep package: the trial contract imports it.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reidlib import trial as contract
from reidlib.config import DEFAULT_WANDB_PROJECT

log = logging.getLogger(__name__)


def wandb_mode(requested: str | None = None) -> str:
    """'offline' unless asked otherwise or a key/server is configured (``WANDB_MODE`` respected)."""
    if requested:
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_BASE_URL") else "offline"


def wandb_destination(spec_config: dict, project: str | None = None, entity: str | None = None,
                      recorded: dict | None = None) -> dict:
    """The W&B project and entity of a run. Given ones win (a flag, a standalone trial's
    ``WANDB.PROJECT``/``WANDB.ENTITY``). Then the destination a sweep's ledger recorded, whole; else as
    the ``wandb sweep`` CLI reads them: ``WANDB_PROJECT``/``WANDB_ENTITY``, then the sweep spec's
    ``project``/``entity``, then project 'reid-sweep' and wandb's default entity."""
    if recorded:
        return {"project": project or recorded["project"], "entity": entity or recorded.get("entity")}
    return {"project": project or os.environ.get("WANDB_PROJECT") or spec_config.get("project") or DEFAULT_WANDB_PROJECT,
            "entity": entity or os.environ.get("WANDB_ENTITY") or spec_config.get("entity")}


def start_run(mode: str | None = None, project: str | None = None, entity: str | None = None, *,
              name: str | None = None, run_id: str | None = None, group: str | None = None,
              job_type: str | None = None, tags: list[str] | None = None, config: dict | None = None,
              directory: str | Path | None = None, quiet: bool = True):
    """``wandb.init`` of one trial's run, every metric plotted against ``epoch``. A value left None is
    wandb's to choose (its environment; under ``wandb.agent``, the sweep's run). ``quiet``: no console
    capture, system metrics or messages (a driver opens hundreds of runs in one process); a
    standalone trial's run keeps wandb's own."""
    import wandb

    given = {"mode": mode, "project": project, "entity": entity, "name": name, "id": run_id, "group": group,
             "job_type": job_type, "tags": tags, "config": config, "dir": str(directory) if directory else None}
    settings = {"settings": wandb.Settings(silent=True, console="off", x_disable_stats=True)} if quiet else {}
    run = wandb.init(**{k: v for k, v in given.items() if v is not None}, reinit="create_new", **settings)
    run.define_metric("epoch")
    run.define_metric("*", step_metric="epoch")
    return run


def _loggable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}


def flat_summary(summary: dict | None) -> dict:
    """A trial's summary as W&B summary keys: ``val/mAP`` (and the sweep's metric) = the best over
    epochs, ``last/val/mAP`` = the last evaluation, ``untrained/val/mAP`` = the untrained network's,
    ``test/mAP`` = the test set's, once, plus status and costs."""
    if not summary:
        return {}
    flat = {k: v for k, v in summary.items() if k not in ("best", "last", "untrained", "initial", "test", "cmc") and v is not None}
    flat.update(summary.get("best") or {})
    flat.update(summary.get("test") or {})
    flat.update({f"last/{k}": v for k, v in (summary.get("last") or {}).items()})
    untrained = summary.get("untrained") or summary.get("initial") or {}  # "initial": its name in older ledgers
    flat.update({f"untrained/{k}": v for k, v in untrained.items()})
    return flat


class RunWriter:
    """One trial's wandb run, fed what the trial sends: ``on_scrap`` takes its scraps (the config to
    the run's config, each epoch to its history, the summary kept for ``finish``); ``finish`` writes
    the summary and ends the run with the state's exit code.

    W&B trouble never costs a trial: the first failure ends the run (exit code 1: what it holds is
    partial), the writer writes nothing more, and ``on_failure(error)`` is told (by default, one
    warning naming ``label``); an ``on_failure`` that raises makes the failure the caller's.
    ``run`` None (W&B off, or failed): nothing is written, the summary is still kept."""

    def __init__(self, run, label: str, on_failure: Callable[[Exception], None] | None = None):
        self.run, self.label = run, label
        self.summary: dict | None = None
        self.finished = False
        self._on_failure = on_failure or self._warn

    def _warn(self, err: Exception) -> None:
        log.warning("W&B logging of %s failed (%s: %s); it goes on without W&B", self.label, type(err).__name__, err)

    def on_scrap(self, name: str, data: Any) -> None:
        if name.startswith(contract.EPOCH_PREFIX):
            self.log_epoch(data)
        elif name == contract.CONFIG:
            self.log_config(data)
        elif name == contract.SUMMARY:
            self.summary = data

    def log_config(self, config: dict) -> None:
        self._write(lambda run: run.config.update(config, allow_val_change=True))

    def log_epoch(self, metrics: dict) -> None:
        # No explicit step: each epoch commits at once (a buffered last step would later overwrite the
        # summary); the x-axis is `epoch` through define_metric.
        self._write(lambda run: run.log(_loggable(metrics)))

    def finish(self, state: contract.TrialState, summary: dict | None = None, notebook: Path | None = None) -> None:
        """Write the summary (``summary``, else the one received) with ``state`` and the notebook's path
        (``reidlib.analysis`` over ``wandb.Api`` shows where each report is; the notebook itself joins the
        run's files), then end the run: exit code 0 for a finished or stopped trial, else 1."""
        summary = self.summary if summary is None else summary

        state = contract.TrialState(state)

        def write(run) -> None:
            run.summary.update({**flat_summary(summary), "state": state.value,
                                **({"notebook": str(notebook)} if notebook is not None else {})})
            if notebook is not None and notebook.is_file():  # files in run.dir are uploaded (or synced) at finish
                shutil.copy2(notebook, Path(run.dir) / notebook.name)
            run.finish(exit_code=state.exit_code)

        self._write(write)
        self.finished = True

    def _write(self, action: Callable[[Any], None]) -> None:
        if self.run is None or self.finished:
            return
        try:
            action(self.run)
        except Exception as err:  # noqa: BLE001 - W&B trouble never costs a trial
            run, self.run = self.run, None
            try:
                run.finish(exit_code=1)  # free what wandb holds for it; its file is partial anyway
            except Exception:
                log.debug("could not finish the failed wandb run of %s", self.label, exc_info=True)
            self._on_failure(err)
