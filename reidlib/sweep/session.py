"""A sweep opened for running: validated, created or reopened, and this driver's lease on it.

Nothing is written before the spec passes its checks. Reopening a sweep (``--sweep-id``) checks the spec
is the one its ledger holds, keeps its seed and its W&B destination, and takes over what dead drivers left.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from reidlib.errors import SweepStateError
from reidlib.sweep import layout
from reidlib.sweep.controller import draw_seed
from reidlib.sweep.evaluation_spec import resolve_evaluation
from reidlib.sweep.holdout import resolve_holdout
from reidlib.sweep.lease import DRIVER_GONE, DriverLease, new_sweep_id
from reidlib.sweep.ledger import CRASHED, RUNNING, Ledger
from reidlib.sweep.reindex import recover_finished, save_wandb_destination
from reidlib.sweep.resume import check_same_spec
from reidlib.sweep.spec import Spec, check_against_config, check_notebook_parameters, load_spec
from reidlib.wandb_run import wandb_destination


@dataclass
class SweepSession:
    """A sweep opened for running: its spec, directory, ledger and this driver's lease on it."""

    sweep_id: str
    spec: Spec
    directory: Path
    ledger: Ledger
    project_dir: Path
    lease: DriverLease


def open_session(spec: Spec | str | Path, runs_dir: str | Path | None = None, sweep_id: str | None = None,
                 project_dir: str | Path | None = None, new_id: str | None = None, seed: int | None = None) -> SweepSession:
    """Validate the spec against the config, then create the sweep (or reopen ``sweep_id``).

    Nothing is written before validation passes: bad input leaves no ``runs/<id>`` behind.
    ``new_id`` names a new sweep (a W&B server's id) instead of a generated one. The session's spec
    carries the sweep's seed (``sweep_seed``).
    """
    spec = spec if isinstance(spec, Spec) else load_spec(spec)
    project_dir = Path(project_dir or Path.cwd()).resolve()
    runs_dir = Path(runs_dir or spec.runs_dir or project_dir / layout.RUNS_DIR).resolve()
    spec = resolve_evaluation(spec, runs_dir)
    check_against_config(spec)
    spec = resolve_holdout(spec)
    asked_seed = seed if seed is not None else spec.seed
    if not (project_dir / spec.notebook).is_file():
        raise SweepStateError("notebook", f"trial notebook not found: {project_dir / spec.notebook}")
    check_notebook_parameters(spec, project_dir)
    if sweep_id:
        directory = layout.sweep_dir(runs_dir, sweep_id)
        ledger = Ledger.open(directory)
        try:
            check_same_spec(spec, ledger.sweep()["spec"], sweep_id)
            spec = replace(spec, seed=sweep_seed(ledger, sweep_id, asked_seed))
        except BaseException:
            ledger.close()
            raise
        if not DriverLease.any_alive(directory):  # resuming a stopped sweep; joining live drivers keeps their stop
            (directory / layout.STOP_FILE).unlink(missing_ok=True)
        lease = DriverLease(directory)
        ledger.worker = lease.token
        adopt_orphans(ledger, directory)
    else:
        spec = replace(spec, seed=asked_seed if asked_seed is not None else draw_seed())
        sweep_id = new_id or new_sweep_id()
        directory = layout.sweep_dir(runs_dir, sweep_id)
        directory.mkdir(parents=True)
        (directory / layout.SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=1))  # for reindex
        lease = DriverLease(directory)
        ledger = Ledger.create(directory, sweep_id, spec.name, spec.to_dict())
        ledger.worker = lease.token
    return SweepSession(sweep_id, spec, directory, ledger, project_dir, lease)


def adopt_orphans(ledger: Ledger, sweep_dir: Path) -> None:
    """Take over what dead drivers left: a running trial whose driver is gone (its lease let go, even
    on SIGKILL; its kernel followed it, ipykernel's parent poller) is recorded from its notebook when
    that holds its summary, else marked crashed so that it runs again. A crashed trial not yet run
    again whose notebook holds its summary is recorded from it too: finished work is never re-run."""
    trials = ledger.trials()
    superseded = {t.retry_of for t in trials if t.retry_of}
    for trial in trials:
        orphan = trial.state == RUNNING and not DriverLease.alive(sweep_dir, trial.worker)
        if orphan or (trial.state == CRASHED and trial.name not in superseded):
            if not recover_finished(ledger, trial) and orphan:
                ledger.update_trial(trial.name, if_state=(RUNNING,), state=CRASHED, exit_reason=DRIVER_GONE,
                                    ended=time.time())


def sweep_seed(ledger: Ledger, sweep_id: str, asked: int | None) -> int:
    """The seed of a sweep being resumed: its ledger's (one is drawn and recorded for a ledger from
    before seeds). Asking for another would not repeat the sweep: an error."""
    recorded = ledger.sweep()["seed"]
    if recorded is None:
        return ledger.record_seed(asked if asked is not None else draw_seed())
    if asked is not None and asked != recorded:
        raise SweepStateError("seed", f"sweep {sweep_id} draws with seed {recorded} (its ledger says so), not "
                              f"{asked}: leave the seed out to resume it, or start a new sweep with seed {asked}")
    return recorded


def running_elsewhere(sweep_dir: Path) -> list[str]:
    """The trials of a sweep that other live driver processes are running now."""
    ledger = Ledger.open(sweep_dir)
    try:
        return [t.name for t in ledger.trials() if t.state == RUNNING and DriverLease.alive(sweep_dir, t.worker)]
    finally:
        ledger.close()


def create_sweep(spec: Spec | str | Path, runs_dir: str | Path | None = None,
                 project_dir: str | Path | None = None, seed: int | None = None) -> str:
    """Validate and create a sweep without running it; returns its id (``run_sweep(sweep_id=...)`` runs it)."""
    session = open_session(spec, runs_dir, None, project_dir, seed=seed)
    session.ledger.close()
    session.lease.release()
    return session.sweep_id


def sweep_wandb_destination(session: SweepSession, project: str | None, entity: str | None) -> dict:
    """Where this sweep's W&B runs go: the ledger's record (the first driver makes it, from
    ``wandb_destination``), kept in ``wandb.json`` too for ``reindex``. Asking a resumed sweep for
    another project or entity is an error: a W&B sweep lives in one project."""
    recorded = session.ledger.sweep()["wandb"] or session.ledger.record_wandb_destination(
        wandb_destination(session.spec.search_config, project, entity))
    save_wandb_destination(session.directory, recorded)
    for key, asked in (("project", project), ("entity", entity)):
        if asked and asked != recorded.get(key):
            raise SweepStateError(key, f"sweep {session.sweep_id} logs to W&B {key} {recorded.get(key)!r} (its "
                                  f"ledger says so), not {asked!r}: leave {key} out to resume it; "
                                  f"'reid-sweep sync {session.sweep_id} --{key} {asked}' uploads its runs there")
    return recorded
