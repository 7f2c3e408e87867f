"""The bridge: scraps from a running trial go to the ledger and to the trial's wandb run.

The driver owns every wandb run (the trial notebook never calls ``wandb.init`` when driven): one
run per trial, grouped by sweep, offline unless a key or server is configured. A W&B failure never
fails a trial: it is one warning, W&B is off for the rest of the sweep, and the ledger still holds
everything: ``write_missing_runs`` (``reid-sweep sync``) writes the runs W&B missed from it.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Callable

from reidlib import trial as contract
from reidlib.config import DEFAULT_WANDB_PROJECT
from reidlib.errors import ReidSweepError, SweepStateError
from reidlib.sweep.ledger import RUNNING, Ledger, Trial

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
    """The W&B project and entity of a sweep's runs. Given ones win. Then the destination its ledger
    recorded, whole; for a new sweep, as the ``wandb sweep`` CLI reads them: ``WANDB_PROJECT``/
    ``WANDB_ENTITY``, then the spec's ``project``/``entity``, then project 'reid-sweep' and wandb's
    default entity."""
    if recorded:
        return {"project": project or recorded["project"], "entity": entity or recorded.get("entity")}
    return {"project": project or os.environ.get("WANDB_PROJECT") or spec_config.get("project") or DEFAULT_WANDB_PROJECT,
            "entity": entity or os.environ.get("WANDB_ENTITY") or spec_config.get("entity")}


def _loggable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}


def flat_summary(summary: dict | None) -> dict:
    """A trial's summary as W&B summary keys: ``val/mAP`` = best over epochs (what
    ``define_metric(summary="max")`` would keep, written as a plain number so W&B's sweep engine and
    ``best_run`` read it), ``last/val/mAP`` = the last evaluation, ``test/mAP`` = the test set's, once,
    plus status and costs."""
    if not summary:
        return {}
    flat = {k: v for k, v in summary.items() if k not in ("best", "last", "untrained", "initial", "test", "cmc") and v is not None}
    flat.update(summary.get("best") or {})
    flat.update(summary.get("test") or {})
    flat.update({f"last/{k}": v for k, v in (summary.get("last") or {}).items()})
    untrained = summary.get("untrained") or summary.get("initial") or {}  # "initial": its name in older ledgers
    flat.update({f"untrained/{k}": v for k, v in untrained.items()})
    return flat


class WandbOutage:
    """W&B failing during a sweep. The first failure is one warning and turns W&B off for the rest of
    the sweep (a W&B that fails once likely fails for every trial, and each try can cost a timeout);
    trials go on, the ledger keeps everything, and ``reid-sweep sync`` writes the missing runs from it."""

    def __init__(self):
        self._lock = threading.Lock()
        self.error: str | None = None

    def report(self, err: Exception, trial: Trial, sweep_dir: Path) -> None:
        with self._lock:
            first = self.error is None
            self.error = self.error or f"{type(err).__name__}: {err}"
        if first:
            log.warning("W&B logging failed at %s (%s); the sweep goes on without W&B. The ledger has every "
                        "trial: 'reid-sweep sync %s' writes the missing W&B runs from it and uploads them",
                        trial.name, self.error, sweep_dir)
        else:
            log.debug("W&B failed again at %s: %s", trial.name, err)


class TrialBridge:
    """Receives one trial's scraps (``on_scrap``) and records them; ``on_epoch`` is called after each
    epoch is recorded (the driver's hyperband check); ``close`` records the trial's end.

    Ledger writes keep their order: one the ledger refuses (locked past its timeout, disk full) is
    tried again before the next, and ``close`` raises if it still cannot be made, so a trial recorded
    as ended has every epoch. A W&B failure goes to ``outage``, ends this trial's run and clears its
    ``wandb_id`` (``reid-sweep sync`` rewrites it from the ledger); it is never raised.
    """

    def __init__(self, ledger: Ledger, trial: Trial, run, outage: WandbOutage,
                 on_epoch: Callable[[dict], None] | None = None):
        self.ledger, self.trial, self.run, self.outage, self.on_epoch = ledger, trial, run, outage, on_epoch
        self.summary: dict | None = None
        self._unwritten: list[Callable[[], None]] = []

    def on_scrap(self, name: str, data: Any) -> None:
        if name.startswith(contract.EPOCH_PREFIX):
            self._record(lambda: self.ledger.add_epoch(self.trial.name, data))
            self._wandb(lambda run: log_epoch(run, data))
            if self.on_epoch:
                self.on_epoch(data)
        elif name == contract.SUMMARY:
            self.summary = data
        elif name == contract.CONFIG:
            self._record(lambda: self.ledger.update_trial(self.trial.name, config=data))
            self._wandb(lambda run: log_config(run, data))

    def _record(self, write: Callable[[], None], last: bool = False) -> None:
        self._unwritten.append(write)
        try:
            while self._unwritten:
                self._unwritten[0]()
                self._unwritten.pop(0)
        except ReidSweepError as err:
            if last:
                raise
            log.warning("%s: %s's latest result is not recorded yet (%s); its next one tries again",
                        err.field, self.trial.name, err.__cause__ or err)

    def _wandb(self, action: Callable[[Any], None]) -> None:
        if self.run is None:
            return
        try:
            action(self.run)
        except Exception as err:  # W&B trouble never costs a trial
            self.outage.report(err, self.trial, self.ledger.path.parent)
            run, self.run = self.run, None
            try:
                run.finish(exit_code=1)  # free what wandb holds for it; its file is partial anyway
            except Exception:
                log.debug("could not finish the failed wandb run of %s", self.trial.name, exc_info=True)
            self._record(lambda: self.ledger.update_trial(self.trial.name, wandb_id=None))

    def close(self, state: str, reason: str | None, notebook: Path | None = None) -> None:
        """Record the trial's end (raises if the ledger cannot take it), then finish its wandb run."""
        try:
            self._record(lambda: self.ledger.end_trial(self.trial.name, state, self.summary, reason), last=True)
        finally:
            self._wandb(lambda run: finish_run(run, self.summary, state, notebook))


def log_config(run, config: dict) -> None:
    run.config.update(config, allow_val_change=True)


def log_epoch(run, metrics: dict) -> None:
    # No explicit step: each epoch commits at once (a buffered last step would later overwrite the
    # summary); the x-axis is `epoch` through define_metric.
    run.log(_loggable(metrics))


def finish_run(run, summary: dict | None, state: str, notebook: Path | None) -> None:
    # the notebook's path too: reidlib.analysis over wandb.Api shows where each report is
    run.summary.update({**flat_summary(summary), "state": state, "notebook": str(notebook or "")})
    if notebook is not None and notebook.is_file():  # files in run.dir are uploaded (or synced) at finish
        shutil.copy2(notebook, Path(run.dir) / notebook.name)
    run.finish(exit_code=0 if state in ("finished", "stopped") else 1)


def configure_run(run):
    """Plot every metric against ``epoch``."""
    run.define_metric("epoch")
    run.define_metric("*", step_metric="epoch")
    return run


SEED_KEY = "sweep_seed"  # in each run's config: the search's seed (``seed`` is the trial's training seed)


def run_config(params: dict, seed: int | None) -> dict:
    """A trial's W&B run config: its parameters and the sweep's seed."""
    return {**params, **({SEED_KEY: seed} if seed is not None else {})}


def open_wandb_run(mode: str, project: str, entity: str | None, sweep_id: str, trial: Trial, config: dict,
                   directory: Path, outage: WandbOutage):
    """A wandb run for one trial, or None: W&B disabled, off since an earlier failure, or failing now
    (reported to ``outage``, never raised)."""
    if mode == "disabled" or outage.error is not None:
        return None
    try:
        return init_run(mode, project, entity, sweep_id, trial.name, config, directory)
    except Exception as err:
        outage.report(err, trial, directory)
        return None


def init_run(mode: str, project: str, entity: str | None, sweep_id: str, name: str, config: dict, directory: Path,
             job_type: str = "trial"):
    """The wandb run ``name`` of a sweep: in the sweep's group, tagged with its id (and ``job_type``
    when that is not 'trial': the final run is tagged 'final')."""
    import wandb

    tags = [sweep_id] if job_type == "trial" else [sweep_id, job_type]
    run = wandb.init(project=project, entity=entity, group=sweep_id, job_type=job_type, name=name,
                     id=f"{sweep_id}-{name}", config=config, dir=str(directory), mode=mode,
                     tags=tags, reinit="create_new",
                     settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
    return configure_run(run)


def write_missing_runs(sweep_dir: Path, project: str | None = None, entity: str | None = None) -> list[str]:
    """Write an offline wandb run from the ledger for every ended trial that has none (W&B failed or
    was off while it ran); returns their names. A partial run that a W&B failure left behind is set
    aside (renamed ``replaced-*``), so each trial keeps one run to sync. The runs go to ``project``
    and ``entity`` if given, else to the sweep's (``wandb_destination``)."""
    ledger = Ledger.open(sweep_dir)
    try:
        sweep = ledger.sweep()
        sweep_id = sweep["id"]
        destination = wandb_destination(sweep["spec"], project, entity, sweep["wandb"])
        project, entity = destination["project"], destination["entity"]
        written = []
        for trial in ledger.trials(with_history=True):
            if trial.wandb_id or trial.state == RUNNING:
                continue
            partial = list((sweep_dir / "wandb").glob(f"offline-run-*-{sweep_id}-{trial.name}"))
            run = None
            try:
                run = init_run("offline", project, entity, sweep_id, trial.name, run_config(trial.params, sweep["seed"]),
                               sweep_dir)
                if trial.config:
                    log_config(run, trial.config)
                for metrics in trial.history:
                    log_epoch(run, metrics)
                finish_run(run, trial.summary, trial.state, Path(trial.notebook) if trial.notebook else None)
            except Exception as err:
                if run is not None:  # release what wandb holds for it; the next sync writes it again
                    run.finish(exit_code=1)
                raise SweepStateError(f"wandb run of {trial.name}", f"could not be written ({err})") from err
            for old in partial:
                old.rename(old.with_name(f"replaced-{old.name}"))
            ledger.update_trial(trial.name, wandb_id=run.id)
            written.append(trial.name)
        return written
    finally:
        ledger.close()
