"""One trial of a sweep run to its end in a fresh kernel: its papermill parameters, its W&B run, what
it sends recorded as it runs (``TrialBridge``), hyperband asked after each epoch, its time limit, and
its end recorded in the ledger whatever happens (a kernel that died, a full disk)."""
from __future__ import annotations

import errno
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from reidlib import trial as contract
from reidlib.config import DEFAULT_WANDB_PROJECT
from reidlib.errors import SweepStateError
from reidlib.sweep import layout
from reidlib.sweep.bridge import TrialBridge, WandbOutage, open_wandb_run, run_config
from reidlib.sweep.checkpoints import prune_checkpoints
from reidlib.sweep.controller import INTERRUPTIONS, LocalController, capped_crash
from reidlib.sweep.files import own_dir
from reidlib.sweep.ledger import CRASHED, FAILED, STOPPED, Trial
from reidlib.sweep.processes import RunningTrials
from reidlib.sweep.runner import KernelPool, execute_notebook
from reidlib.sweep.session import SweepSession
from reidlib.sweep.spec import notebook_parameters

log = logging.getLogger(__name__)

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def trial_parameters(session: SweepSession, trial: Trial) -> dict:
    """The papermill parameters of a trial of the session's sweep."""
    return notebook_parameters(session.spec, trial.params, layout.trial_dir(session.directory, trial.name))


@dataclass
class TrialOptions:
    """How a sweep's trials run; one per sweep (its W&B outage is the sweep's)."""

    wandb_mode: str = "offline"
    project: str = DEFAULT_WANDB_PROJECT
    entity: str | None = None
    time_limit: float | None = None  # seconds of wall clock; then stop, and kill after a grace period
    wandb_outage: WandbOutage = field(default_factory=WandbOutage)


def grace_period(time_limit: float) -> float:
    """How long a trial past its time limit may take to finish its epoch before its kernel is killed."""
    return max(30.0, 0.25 * time_limit)


def run_trial(session: SweepSession, controller: LocalController | None, trial: Trial, options: TrialOptions,
              running: RunningTrials, env: dict[str, str] | None = None, run=None, pool: KernelPool | None = None,
              on_scrap: Callable[[str, Any], None] | None = None) -> str:
    """Run one trial to its end and record it; returns its final state.

    ``controller`` None: the search engine is elsewhere (a W&B server) and stops trials itself.
    ``run``: a wandb run already opened for this trial (by a W&B agent); else one is opened here.
    ``on_scrap(name, data)``: told each scrap once it is recorded (the driver's progress bars).
    """
    params = trial_parameters(session, trial)
    notebook_out = layout.trial_notebook(session.directory, trial.name)
    own_dir(params["output_dir"])  # the trial's files go there, not where a link planted there points
    running.add(trial.name, params["output_dir"])
    contract.record_verdict(params["output_dir"], 0)  # tells the trial a driver decides on its epochs
    if run is None:
        run = open_wandb_run(options.wandb_mode, options.project, options.entity, session.sweep_id, trial,
                             run_config(trial.params, session.spec.seed), session.directory, options.wandb_outage)

    def hyperband(epoch: dict) -> None:
        try:
            if controller is not None and not contract.stop_requested(params["output_dir"]) and \
                    trial.name in controller.to_stop(session.ledger.trials(with_history=True)):
                log.info("hyperband stops %s", trial.name)
                running.stop(trial.name, "hyperband")
        finally:  # the trial waits for this before its next epoch
            contract.record_verdict(params["output_dir"], int(epoch["epoch"]))

    timers = []
    if options.time_limit:
        timers = [threading.Timer(options.time_limit, running.stop, (trial.name, "time limit")),
                  threading.Timer(options.time_limit + grace_period(options.time_limit), running.kill, (trial.name,))]
        for timer in timers:
            timer.daemon = True
            timer.start()
    bridge = TrialBridge(session.ledger, trial, run, options.wandb_outage, on_epoch=hyperband, metric=session.spec.metric)

    def scrap(name: str, data: Any) -> None:
        bridge.on_scrap(name, data)
        if on_scrap:
            on_scrap(name, data)

    state, reason = CRASHED, "driver interrupted"
    try:
        session.ledger.update_trial(trial.name, notebook=str(notebook_out), wandb_id=run.id if run else None)
        outcome = execute_notebook(session.project_dir / session.spec.notebook, notebook_out, params,
                                   on_scrap=scrap, cwd=session.project_dir, env=env,
                                   on_kernel=lambda pid: running.kernel_started(trial.name, pid), pool=pool)
        status = (bridge.summary or {}).get("status")
        state = contract.TrialState.of(status, bool(outcome.error))
        reason = outcome.error or (None if state.completed else status)
        stop_reason = _stop_reason(params["output_dir"])
        if outcome.kernel_died and stop_reason == "time limit":
            state, reason = FAILED, "time limit: killed after the grace period"
        elif outcome.kernel_died and stop_reason in INTERRUPTIONS:  # killed at the user's second Ctrl-C
            state, reason = STOPPED, stop_reason
        elif outcome.kernel_died:
            state, reason = capped_crash(session.ledger.trials(), trial, outcome.error)
            if state == FAILED:
                log.warning("%s failed: %s", trial.name, reason)
        elif state == STOPPED:
            reason = stop_reason
    except OSError as err:  # the driver's own writes (the notebook, the kernel log)
        reason = f"{type(err).__name__}: {err}"
        if err.errno in DISK_FULL:
            raise SweepStateError(err.filename or str(notebook_out), f"disk full ({err.strerror}); free some space, "
                                  f"then resume the sweep (--sweep-id {session.sweep_id})") from err
        raise
    finally:
        for timer in timers:
            timer.cancel()
        running.remove(trial.name)
        bridge.close(state, reason, notebook_out)
    prune_checkpoints(session.directory, session.ledger.trials(), session.spec)
    return state


def _stop_reason(output_dir: str) -> str | None:
    path = Path(output_dir) / contract.STOP_FILE
    return path.read_text() if path.is_file() else None
