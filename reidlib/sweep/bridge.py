"""The bridge: scraps from a running trial go to the ledger and to the trial's wandb run.

The driver owns every wandb run (the trial notebook never calls ``wandb.init`` when driven): one
run per trial, grouped by sweep, offline unless a key or server is configured, written by the one
W&B writer (``reidlib.wandb_run``). A W&B failure never fails a trial: it is one warning, W&B is off
for the rest of the sweep, and the ledger still holds everything: ``write_missing_runs``
(``reid-sweep sync``) writes the runs W&B missed from it.
"""
from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path
from typing import Any, Callable

from reidlib import trial as contract
from reidlib.errors import ReidSweepError, SweepStateError
from reidlib.sweep import layout
from reidlib.sweep.ledger import Ledger, Trial
from reidlib.trial import TrialState
from reidlib.wandb_run import RunWriter, start_run, wandb_destination

log = logging.getLogger(__name__)


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
    epoch is recorded (the driver's hyperband check); ``close`` records the trial's end, its summary
    holding the best value of the sweep's ``metric`` (name and goal) over its epochs.

    Ledger writes keep their order: one the ledger refuses (locked past its timeout, disk full) is
    tried again before the next, and ``close`` raises if it still cannot be made, so a trial recorded
    as ended has every epoch. A W&B failure goes to ``outage``, ends this trial's run and clears its
    ``wandb_id`` (``reid-sweep sync`` rewrites it from the ledger); it is never raised.
    """

    def __init__(self, ledger: Ledger, trial: Trial, run, outage: WandbOutage,
                 on_epoch: Callable[[dict], None] | None = None, metric: dict = contract.DEFAULT_METRIC):
        self.ledger, self.trial, self.outage, self.on_epoch, self.metric = ledger, trial, outage, on_epoch, metric
        self.writer = RunWriter(run, trial.name, on_failure=self._wandb_failed)
        self.history: list[dict] = []
        self._unwritten: list[Callable[[], None]] = []

    @property
    def summary(self) -> dict | None:
        """The trial's summary once it has sent it, with the best value of the sweep's metric."""
        return contract.with_metric_best(self.writer.summary, self.history, self.metric)

    def on_scrap(self, name: str, data: Any) -> None:
        epoch = name.startswith(contract.EPOCH_PREFIX)
        if epoch:
            self.history.append(data)
            self._record(lambda: self.ledger.add_epoch(self.trial.name, data))
        elif name == contract.CONFIG:
            self._record(lambda: self.ledger.update_trial(self.trial.name, config=data))
        self.writer.on_scrap(name, data)
        if epoch and self.on_epoch:
            self.on_epoch(data)

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

    def _wandb_failed(self, err: Exception) -> None:
        self.outage.report(err, self.trial, self.ledger.path.parent)
        self._record(lambda: self.ledger.update_trial(self.trial.name, wandb_id=None))

    def close(self, state: TrialState, reason: str | None, notebook: Path | None = None) -> None:
        """Record the trial's end (raises if the ledger cannot take it), then finish its wandb run."""
        summary = self.summary
        try:
            self._record(lambda: self.ledger.end_trial(self.trial.name, state, summary, reason), last=True)
        finally:
            self.writer.finish(state, summary, notebook)


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
    tags = [sweep_id] if job_type == "trial" else [sweep_id, job_type]
    return start_run(mode, project, entity, name=name, run_id=f"{sweep_id}-{name}", group=sweep_id,
                     job_type=job_type, tags=tags, config=config, directory=directory)


def _unwritable(name: str, err: Exception) -> None:
    raise SweepStateError(f"wandb run of {name}", f"could not be written ({err})") from err


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
        metric = sweep["spec"].get("metric") or contract.DEFAULT_METRIC
        written = []
        for trial in ledger.trials(with_history=True):
            if trial.wandb_id or trial.state == TrialState.RUNNING:
                continue
            partial = list((sweep_dir / layout.WANDB_DIR).glob(f"offline-run-*-{sweep_id}-{trial.name}"))
            try:
                run = init_run("offline", project, entity, sweep_id, trial.name, run_config(trial.params, sweep["seed"]),
                               sweep_dir)
            except Exception as err:
                _unwritable(trial.name, err)
            writer = RunWriter(run, trial.name, on_failure=functools.partial(_unwritable, trial.name))
            if trial.config:
                writer.log_config(trial.config)
            for metrics in trial.history:
                writer.log_epoch(metrics)
            writer.finish(trial.state, contract.with_metric_best(trial.summary, trial.history, metric),
                          Path(trial.notebook) if trial.notebook else None)
            for old in partial:
                old.rename(old.with_name(f"replaced-{old.name}"))
            ledger.update_trial(trial.name, wandb_id=run.id)
            written.append(trial.name)
        return written
    finally:
        ledger.close()
