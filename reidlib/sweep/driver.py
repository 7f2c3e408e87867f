"""The sweep loop: workers claim trials from the controller, run each in a fresh kernel, and record
what the trial sends while it runs.

``run_sweep`` is what ``reid-sweep run`` and ``notebooks/sweep.ipynb`` call (``reidlib.workflow`` then
writes the report: the sweep package never imports the analysis). Ctrl-C asks every running
trial to stop after its current epoch and waits for it (its notebook is saved with a summary); a second
Ctrl-C kills the kernels. ``--sweep-id`` resumes: finished trials stay, interrupted ones run again.
Several driver processes may run one sweep at once (each started with ``--sweep-id``): the ledger
hands each grid point out once, and a driver tells another's running trials from a dead one's by its
``DriverLease``; a dead driver's trials are taken over (``adopt_orphans``) by the next driver to claim a
trial, and a driver with nothing left to run waits while others still run trials, so none is left
unrun when one of them dies. A full disk or a ledger locked past its timeout stops the sweep with one line.

Its parts: ``session`` opens the sweep, ``trial_run`` runs one trial, ``processes`` holds the trials'
kernels, ``workers`` gives each worker its environment, ``progress`` draws the bars.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from reidlib import trial as contract
from reidlib.sweep import layout
from reidlib.sweep.controller import LocalController
from reidlib.sweep.lease import DriverLease
from reidlib.sweep.ledger import RUNNING, Ledger, Trial
from reidlib.sweep.processes import RunningTrials
from reidlib.sweep.progress import TICK_S, SweepProgress, max_epochs
from reidlib.sweep.runner import KernelPool, notebook_warm_up
from reidlib.sweep.session import adopt_orphans, open_session, sweep_wandb_destination
from reidlib.sweep.spec import Spec
from reidlib.sweep.trial_run import TrialOptions, run_trial, trial_parameters
from reidlib.sweep.workers import spare_after_first_epoch, worker_environments
from reidlib.wandb_run import wandb_mode

log = logging.getLogger(__name__)

OTHERS_POLL_S = 1.0  # how often a driver with nothing left to run looks at other drivers' trials


@dataclass
class SweepResult:
    sweep_id: str
    directory: Path
    trials: list[Trial]


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C (a notebook's interrupt) ended a run of a sweep: its running trials stopped after their
    epoch and every trial is kept; ``--sweep-id`` (the notebook's ``sweep_id``) resumes it."""

    def __init__(self, sweep_id: str, directory: Path):
        super().__init__(f"sweep {sweep_id} interrupted")
        self.sweep_id, self.directory = sweep_id, directory

    def line(self) -> str:
        """What was kept and how to resume, in one line."""
        ledger = Ledger.open(self.directory)
        try:
            states = [t.state for t in ledger.trials()]
        finally:
            ledger.close()
        kept = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states)) or "none yet"
        return (f"interrupted: sweep {self.sweep_id} keeps its trials ({kept}) in {self.directory}; "
                f"run this cell again (or reid-sweep resume {self.sweep_id}) to resume it")


def run_sweep(spec: Spec | str | Path, count: int | None = None, sweep_id: str | None = None,
              runs_dir: str | Path | None = None, wandb: str | None = None, project: str | None = None,
              entity: str | None = None, project_dir: str | Path | None = None, time_limit: float | None = None,
              workers: int = 1, gpus: list[str] | None = None, progress: bool = True,
              on_trial_end: Callable[[Path], None] | None = None, seed: int | None = None,
              on_update: Callable[[Path], None] | None = None) -> SweepResult:
    """Run (or resume) a sweep until the controller says it is done.

    ``project``/``entity``: where its W&B runs go (``sweep_wandb_destination``).
    ``seed``: the search's seed (else the spec's, else one drawn and recorded; a resume keeps its own).
    ``progress``: a bar over trials and an epoch bar per worker (``SweepProgress``).
    ``on_update(sweep_dir)`` is called from the calling thread once at the start and after each epoch
    or trial the ledger records (the driver notebook's leaderboard); ``on_trial_end(sweep_dir)`` from
    the worker after each trial. Ctrl-C raises ``SweepInterrupted`` once running trials have stopped."""
    session = open_session(spec, runs_dir, sweep_id, project_dir, seed=seed)
    try:
        controller = LocalController(session.spec, count)
        destination = sweep_wandb_destination(session, project, entity)
        options = TrialOptions(wandb_mode(wandb), destination["project"], destination["entity"], time_limit)
        envs = [{**contract.sweep_cache_environment(session.directory), **env}  # the untrained evaluation, compiled kernels
                for env in worker_environments(workers, gpus)]
        bars = SweepProgress(session.sweep_id, controller.limit,
                             sum(t.state != RUNNING and not t.retry_of for t in session.ledger.trials()),
                             len(envs), session.spec.metric["name"], progress)
    except BaseException:  # nothing ran: let go of the sweep (a notebook keeps this process alive)
        session.lease.release()
        session.ledger.close()
        raise
    running, stopping, errors = RunningTrials(), threading.Event(), []
    stop_file = session.directory / layout.STOP_FILE

    def choose(trials):
        return None if stopping.is_set() or stop_file.exists() else controller.next_trial(trials)

    def others_running() -> bool:
        return any(t.state == RUNNING and t.worker != session.lease.token for t in session.ledger.trials())

    def claim() -> Trial | None:
        """The next trial; None once the sweep is done or stopping. While other drivers still run
        trials it waits: one of theirs runs again here if its driver dies."""
        while True:
            adopt_orphans(session.ledger, session.directory)
            trial = session.ledger.claim_trial(choose)
            if trial is not None or stopping.is_set() or stop_file.exists() or not others_running():
                return trial
            stopping.wait(OTHERS_POLL_S)

    warm_up = notebook_warm_up(session.project_dir / session.spec.notebook)

    def work(slot, env):
        pool = KernelPool(env, session.project_dir, session.directory / layout.TRIALS_DIR, warm_up,
                          spare_after_first_epoch=spare_after_first_epoch(env))
        try:
            while (trial := claim()) is not None:
                bars.started(slot, trial.name, max_epochs(trial_parameters(session, trial)))
                state = run_trial(session, controller, trial, options, running, env, pool=pool,
                                  on_scrap=lambda name, data: bars.scrap(slot, name, data))
                bars.ended(slot, trial.name, state, counted=not trial.retry_of)
                if on_trial_end:
                    on_trial_end(session.directory)
        except BaseException as err:  # surfaced by the main thread
            errors.append(err)
            stopping.set()
        finally:
            pool.close()

    done = [threading.Event() for _ in envs]

    def worker(slot, env, finished):
        try:
            work(slot, env)
        finally:
            finished.set()

    threads = [threading.Thread(target=worker, args=(i, env, finished), name=f"worker-{i}", daemon=True)
               for i, (env, finished) in enumerate(zip(envs, done))]

    def started() -> list[threading.Event]:  # an interrupt may come before every worker has started
        return [finished for thread, finished in zip(threads, done) if thread.ident is not None]

    def tick() -> None:
        if bars.tick() and on_update:
            on_update(session.directory)

    outcome, style = "error", "danger"  # until the workers end or an interrupt has stopped them
    try:
        if on_update:  # at once, before a worker claims a trial: a new sweep's empty board, a resumed one's trials
            on_update(session.directory)
        for thread in threads:
            thread.start()
        _wait(done, tick)
        outcome, style = "done", "success"
    except KeyboardInterrupt:
        outcome, style = "interrupted", "warning"
        stopping.set()
        running.stop_all("interrupted")
        bars.trials.set_postfix_str("interrupted: running trials stop after their epoch (interrupt again kills them)")
        log.info("interrupted: running trials stop after their current epoch (Ctrl-C again kills them); "
                 "resume with sweep id %s", session.sweep_id)
        try:
            _wait(started(), tick)
        except KeyboardInterrupt:
            running.kill_all()
            _wait(started(), tick)
        raise SweepInterrupted(session.sweep_id, session.directory) from None
    finally:
        if errors:
            outcome, style = "error", "danger"
        tick()
        bars.close(outcome, style)
        session.lease.release()  # every trial of this driver has ended
        trials = session.ledger.trials(with_history=True) if not errors else []
        session.ledger.close()
    if errors:
        raise errors[0]
    return SweepResult(session.sweep_id, session.directory, trials)


def _wait(done: list[threading.Event], tick: Callable[[], None]) -> None:
    # Events, not Thread.join: a join interrupted by Ctrl-C can leave is_alive() False for a live thread.
    for event in done:
        while not event.wait(timeout=TICK_S):
            tick()


def stop_sweep(sweep_dir: Path) -> list[str]:
    """``reid-sweep stop``: no new trials, and running ones end after their current epoch."""
    ledger = Ledger.open(sweep_dir)  # first: a damaged sweep is refused before anything is written
    try:
        (sweep_dir / layout.STOP_FILE).write_text("stop")
        names = [t.name for t in ledger.trials() if t.state == RUNNING and DriverLease.alive(sweep_dir, t.worker)]
    finally:
        ledger.close()
    for name in names:
        contract.request_stop(layout.trial_dir(sweep_dir, name), "stop command")
    return names
