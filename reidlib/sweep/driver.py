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
"""
from __future__ import annotations

import errno
import json
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from reidlib import trial as contract
from reidlib.config import DEFAULT_WANDB_PROJECT
from reidlib.errors import SweepStateError
from reidlib.rates import is_rate, percent
from reidlib.sweep import layout
from reidlib.sweep.bridge import TrialBridge, WandbOutage, open_wandb_run, run_config
from reidlib.sweep.checkpoints import prune_checkpoints
from reidlib.sweep.controller import INTERRUPTIONS, LocalController, capped_crash, draw_seed
from reidlib.sweep.evaluation_spec import resolve_evaluation
from reidlib.sweep.files import own_dir
from reidlib.sweep.holdout import resolve_holdout
from reidlib.sweep.lease import DRIVER_GONE, DriverLease, new_sweep_id
from reidlib.sweep.ledger import CRASHED, FAILED, RUNNING, STOPPED, Ledger, Trial
from reidlib.sweep.reindex import recover_finished, save_wandb_destination
from reidlib.sweep.resume import check_same_spec
from reidlib.sweep.runner import KernelPool, execute_notebook, notebook_warm_up
from reidlib.sweep.spec import Spec, check_against_config, check_notebook_parameters, flatten_run_config, load_spec
from reidlib.wandb_run import wandb_destination, wandb_mode

log = logging.getLogger(__name__)

OTHERS_POLL_S = 1.0  # how often a driver with nothing left to run looks at other drivers' trials
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


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


def trial_parameters(session: SweepSession, trial: Trial) -> dict:
    """The papermill parameters of a trial of the session's sweep."""
    return notebook_parameters(session.spec, trial.params, layout.trial_dir(session.directory, trial.name))


def notebook_parameters(spec: Spec, chosen: dict, output_dir: Path, overrides: dict | None = None) -> dict:
    """The papermill parameters of a run of the spec's notebook: sweep defaults, then the ``chosen``
    parameters (which, from a W&B server, carry the sweep's ``config_file`` as a constant), then
    ``overrides`` (dotted keys the caller imposes)."""
    chosen = dict(chosen)
    config_file = chosen.pop("config_file", spec.config_file)
    params, dotted = flatten_run_config({**spec.defaults, **chosen})
    dotted.update(overrides or {})
    dotted["WANDB.ENABLE"] = False  # the driver owns this run's W&B run: one owner per run
    return {**params, "config_file": config_file, "overrides": dotted, "output_dir": str(output_dir)}


class RunningTrials:
    """The trials this driver is running: their output directories and kernel processes."""

    def __init__(self):
        self._lock = threading.Lock()
        self._dirs: dict[str, str] = {}
        self._pids: dict[str, int] = {}
        self._doomed: set[str] = set()  # to be killed once their kernel is known

    def add(self, name: str, output_dir: str) -> None:
        with self._lock:
            self._dirs[name] = output_dir

    def kernel_started(self, name: str, pid: int) -> None:
        with self._lock:
            self._pids[name] = pid
            doomed = name in self._doomed
        if doomed:  # its kill came while papermill was still starting it (a slow, loaded machine)
            self.kill(name)

    def remove(self, name: str) -> None:
        with self._lock:
            self._dirs.pop(name, None)
            self._pids.pop(name, None)
            self._doomed.discard(name)

    def stop(self, name: str, reason: str) -> None:
        with self._lock:
            if name in self._dirs:
                contract.request_stop(self._dirs[name], reason)

    def stop_all(self, reason: str) -> None:
        for name in list(self._dirs):
            self.stop(name, reason)

    def kill(self, name: str) -> None:
        with self._lock:
            pid = self._pids.get(name)
            if name in self._dirs:
                self._doomed.add(name)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def kill_all(self) -> None:
        for name in list(self._dirs):  # also trials still waiting for their (warming) kernel
            self.kill(name)


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


def worker_environments(workers: int = 1, gpus: list[str] | None = None) -> list[dict[str, str]]:
    """One environment per worker: its own GPU when GPUs are given (the kernel sees only that one),
    and an equal share of the CPU threads."""
    slots = len(gpus) if gpus else max(1, workers)
    threads = str(max(1, (os.cpu_count() or 1) // slots))
    if gpus:
        return [{"CUDA_VISIBLE_DEVICES": str(g), "OMP_NUM_THREADS": threads} for g in gpus]
    return [{"OMP_NUM_THREADS": threads} for _ in range(slots)]


def spare_after_first_epoch(env: dict[str, str]) -> bool:
    """Whether a worker's next kernel waits for its running trial's first epoch before it imports torch:
    on a worker without a GPU of its own the trial keeps every core busy, and a spare warming beside its
    start-up slowed its first step from 0.6 to 4.8 s (benchmarks/RESULTS.md, issue 18); a GPU trial leaves
    the CPU to the spare. The kernel itself boots at once either way."""
    return not env.get("CUDA_VISIBLE_DEVICES")


@dataclass
class SweepResult:
    sweep_id: str
    directory: Path
    trials: list[Trial]


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


BAR_METRICS = ("train/loss",)  # shown after the sweep's metric and val/rank1 on a trial's epoch bar
TICK_S = 0.2  # how often the calling thread draws what the workers posted
CLOCK_S = 1.0  # how often the bars are redrawn with nothing new: their clocks run during a trial
LOG_CLOCK_S = 60.0  # the same into a file or pipe (nohup, make demo > log): a line a minute, not megabytes


def _max_epochs(params: dict) -> int | None:
    value = params.get("max_epochs") or params.get("overrides", {}).get("SOLVER.MAX_EPOCHS")
    return int(value) if isinstance(value, (int, float)) else None


class SweepProgress:
    """What a running sweep shows (tqdm.auto: widgets in Jupyter, text bars in a terminal): a bar over
    trials and, under it, one epoch bar per worker for the trial it runs, with that trial's latest
    metrics as postfix. Workers post what happens (``started``, ``scrap``, ``ended``); the thread that
    called ``run_sweep`` draws it (``tick``): a notebook's outputs belong to the cell's thread, and the
    bars' clocks keep running between epochs."""

    def __init__(self, sweep_id: str, total: int | None, initial: int, workers: int, metric: str, enabled: bool):
        self.trials = tqdm(total=total, initial=initial, desc=f"sweep {sweep_id}", unit="trial", disable=not enabled)
        self.epochs = [tqdm(total=None, desc="waiting for a trial", unit="epoch", disable=not enabled, leave=False)
                       for _ in range(workers)]
        self.shown = (metric, *(k for k in ("val/rank1", *BAR_METRICS) if k != metric))
        self._posted: queue.SimpleQueue = queue.SimpleQueue()
        self._latest: list[dict] = [{} for _ in range(workers)]
        self._drawn = 0.0
        shown_live = hasattr(self.trials, "container") or getattr(getattr(self.trials, "fp", None), "isatty", bool)()
        self.clock_s = CLOCK_S if shown_live else LOG_CLOCK_S  # a notebook widget or a terminal: live clocks

    def started(self, slot: int, name: str, max_epochs: int | None) -> None:
        self._posted.put(("started", slot, name, max_epochs))

    def scrap(self, slot: int, name: str, data: Any) -> None:
        if name.startswith(contract.EPOCH_PREFIX) or name == contract.CONFIG:
            self._posted.put(("scrap", slot, name, data))

    def ended(self, slot: int, name: str, state: str, counted: bool) -> None:
        self._posted.put(("ended", slot, name, state, counted))

    def tick(self) -> bool:
        """Draw what the workers posted (and redraw every bar every ``clock_s``); whether a trial
        recorded an epoch or ended since the last tick."""
        recorded = False
        while True:
            try:
                event = self._posted.get_nowait()
            except queue.Empty:
                break
            recorded |= self._draw(*event)
        if recorded or time.monotonic() - self._drawn >= self.clock_s:
            for bar in (self.trials, *self.epochs):
                bar.refresh()
            self._drawn = time.monotonic()
        return recorded

    def _draw(self, kind: str, slot: int, name: str, *rest) -> bool:
        bar = self.epochs[slot]
        if kind == "started":
            self._latest[slot] = {}
            bar.reset(total=rest[0])
            bar.set_description_str(name, refresh=False)
            bar.set_postfix_str("starting", refresh=False)
            return False
        if kind == "ended":
            state, counted = rest
            self.trials.set_postfix_str(f"{name} {state}", refresh=False)
            self.trials.update(1 if counted else 0)
            bar.set_description_str("waiting for a trial", refresh=False)
            return True
        data = rest[0]
        if name == contract.CONFIG:  # a trial notebook's effective config knows its epochs
            if isinstance(data.get("SOLVER.MAX_EPOCHS"), int) and bar.total is None:
                bar.reset(total=data["SOLVER.MAX_EPOCHS"])
            return False
        self._latest[slot].update(data)
        bar.update(max(0, int(data.get("epoch", bar.n + 1)) - bar.n))
        latest = self._latest[slot]
        bar.set_postfix_str(", ".join(f"{k} {percent(latest[k]) if is_rate(k) else f'{latest[k]:.4g}'}"
                                      for k in self.shown if isinstance(latest.get(k), (int, float))), refresh=False)
        return True

    def close(self, outcome: str, style: str) -> None:
        """End the bars: the trials bar says ``outcome`` ('done', 'interrupted', ...) in ``style``
        ('success', 'warning', 'danger'); the epoch bars go."""
        for bar in self.epochs:
            _end_bar(bar, None)
        self.trials.set_postfix_str(outcome, refresh=False)
        _end_bar(self.trials, style)


def _end_bar(bar, style: str | None) -> None:
    """Close a bar; in Jupyter, in ``style`` or hidden (None). tqdm.notebook paints a bar short of its
    total red on close, which is for errors: a sweep stopped on purpose or by its target is not one."""
    bar.close()
    widgets = getattr(bar, "container", None)  # tqdm.notebook's
    if widgets is not None:
        widgets.children[1].bar_style = style or ""
        if style is None:
            widgets.layout.visibility = "hidden"


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
                bars.started(slot, trial.name, _max_epochs(trial_parameters(session, trial)))
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
        for thread in threads:
            thread.start()
        if on_update:  # a resumed sweep's trials show at once
            on_update(session.directory)
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
