"""The sweep loop: ask the controller for a trial, run it in a fresh kernel, record what it sends.

``run_sweep`` is what ``reid-sweep run`` and ``notebooks/sweep.ipynb`` call.
"""
from __future__ import annotations

import logging
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from reidlib import trial as contract
from reidlib.errors import SweepStateError
from reidlib.sweep.bridge import TrialBridge, open_wandb_run, wandb_mode
from reidlib.sweep.controller import LocalController
from reidlib.sweep.ledger import CRASHED, FAILED, FINISHED, RUNNING, STOPPED, Ledger, Trial
from reidlib.sweep.runner import execute_notebook
from reidlib.sweep.spec import Spec, check_against_config, flatten_run_config, load_spec

log = logging.getLogger(__name__)

# The trial's own account of how it ended -> the ledger's trial state.
_STATE_BY_STATUS = {"finished": FINISHED, "stopped_early": STOPPED, "diverged": FAILED, "oom": FAILED, "failed": FAILED}


def new_sweep_id() -> str:
    """Eight lowercase letters and digits, like a W&B sweep id."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


@dataclass
class SweepSession:
    """A sweep opened for running: its spec, directory and ledger."""

    sweep_id: str
    spec: Spec
    directory: Path
    ledger: Ledger
    project_dir: Path


def open_session(spec: Spec | str | Path, runs_dir: str | Path | None = None, sweep_id: str | None = None,
                 project_dir: str | Path | None = None) -> SweepSession:
    """Validate the spec against the config, then create the sweep (or reopen ``sweep_id``).

    Nothing is written before validation passes: bad input leaves no ``runs/<id>`` behind.
    """
    spec = spec if isinstance(spec, Spec) else load_spec(spec)
    check_against_config(spec)
    project_dir = Path(project_dir or Path.cwd()).resolve()
    runs_dir = Path(runs_dir or spec.runs_dir or project_dir / "runs")
    if not (project_dir / spec.notebook).is_file():
        raise SweepStateError("notebook", f"trial notebook not found: {project_dir / spec.notebook}")
    if sweep_id:
        directory = runs_dir / sweep_id
        ledger = Ledger.open(directory)
        for trial in ledger.trials():
            if trial.state == RUNNING:  # its driver died: the trial is not coming back
                ledger.end_trial(trial.name, CRASHED, trial.summary, "driver stopped while it ran")
    else:
        sweep_id = new_sweep_id()
        directory = runs_dir / sweep_id
        directory.mkdir(parents=True)
        ledger = Ledger.create(directory, sweep_id, spec.name, spec.to_dict())
    return SweepSession(sweep_id, spec, directory, ledger, project_dir)


def trial_parameters(session: SweepSession, trial: Trial) -> dict:
    """The papermill parameters of a trial: sweep defaults, then the controller's choice."""
    params, overrides = flatten_run_config({**session.spec.defaults, **trial.params})
    overrides["WANDB.ENABLE"] = False  # the driver owns this trial's W&B run: one owner per run
    return {**params, "config_file": session.spec.config_file, "overrides": overrides,
            "output_dir": str(session.directory / "trials" / trial.name)}


def run_trial(session: SweepSession, controller: LocalController, trial: Trial, mode: str, project: str,
              entity: str | None = None, timeout: float | None = None) -> str:
    """Run one trial to its end and record it; returns its final state."""
    params = trial_parameters(session, trial)
    notebook_out = session.directory / "trials" / f"{trial.name}.ipynb"
    session.ledger.update_trial(trial.name, notebook=str(notebook_out))
    run = open_wandb_run(mode, project, entity, session.sweep_id, trial, {**trial.params, **params},
                         session.directory)
    if run is not None:
        session.ledger.update_trial(trial.name, wandb_id=run.id)

    def hyperband(_epoch: dict) -> None:
        if not contract.stop_requested(params["output_dir"]) and trial.name in controller.to_stop():
            log.info("hyperband stops %s", trial.name)
            contract.request_stop(params["output_dir"], "hyperband")

    bridge = TrialBridge(session.ledger, trial, run, on_epoch=hyperband)
    state, reason = CRASHED, "driver interrupted"
    try:
        outcome = execute_notebook(session.project_dir / session.spec.notebook, notebook_out, params,
                                on_scrap=bridge.on_scrap, cwd=session.project_dir, timeout=timeout)
        status = (bridge.summary or {}).get("status")
        state = _STATE_BY_STATUS.get(status, FAILED)
        reason = outcome.error or (None if status in ("finished", "stopped_early") else status)
        if outcome.error and state in (FINISHED, STOPPED):
            state = FAILED  # training ended well but a later cell (the report) failed
    finally:
        session.ledger.end_trial(trial.name, state, bridge.summary, reason)
        bridge.close(state, notebook_out)
    return state


@dataclass
class SweepResult:
    sweep_id: str
    directory: Path
    trials: list[Trial]


def run_sweep(spec: Spec | str | Path, count: int | None = None, sweep_id: str | None = None,
              runs_dir: str | Path | None = None, wandb: str | None = None, project: str = "reid-sweep",
              entity: str | None = None, project_dir: str | Path | None = None, timeout: float | None = None,
              progress: bool = True) -> SweepResult:
    """Run (or resume) a sweep until the controller says it is done."""
    session = open_session(spec, runs_dir, sweep_id, project_dir)
    controller = LocalController(session.spec, session.ledger, count)
    mode = wandb_mode(wandb)
    done = len(session.ledger.trials())
    with tqdm(total=controller.limit, initial=done, desc=f"sweep {session.sweep_id}", unit="trial",
              disable=not progress) as bar:
        while (params := controller.next_params()) is not None:
            trial = session.ledger.new_trial(params)
            state = run_trial(session, controller, trial, mode, project, entity, timeout)
            bar.set_postfix_str(f"{trial.name} {state}")
            bar.update()
    return SweepResult(session.sweep_id, session.directory, session.ledger.trials(with_history=True))


ANALYSIS_NOTEBOOK = "notebooks/analysis.ipynb"


def run_analysis(sweep_dir: Path, project_dir: str | Path | None = None) -> Path:
    """Execute the analysis notebook for a sweep into ``<sweep_dir>/analysis.ipynb``."""
    project_dir = Path(project_dir or Path.cwd()).resolve()
    output = sweep_dir / "analysis.ipynb"
    outcome = execute_notebook(project_dir / ANALYSIS_NOTEBOOK, output, {"sweep": str(sweep_dir.resolve())},
                               cwd=project_dir)
    if outcome.error:
        log.warning("analysis notebook failed (%s); see %s", outcome.error, output)
    return output
