"""A W&B server as the search engine (``--wandb online``, ``reid-sweep agent``): W&B is the
distributed controller; we only run its trials, exactly like local ones.

- ``create_server_sweep`` sends the normalised spec with ``wandb.sweep``. Our own keys travel as
  constant parameters (``config_file`` and the per-sweep ``defaults``), so any machine can run the
  sweep from its path alone, and every run's config records them.
- ``run_agent`` is ``wandb.agent`` with a function that opens the run the agent prepared
  (``wandb.init`` in the agent's environment: the run belongs to the sweep), runs the trial notebook in
  a fresh kernel, and forwards its scraps. When the server stops a run, the agent raises an exception
  in that function's thread; we turn it into the trial contract's stop (the trial ends after its
  epoch, with its summary), instead of tearing the kernel down mid-step.
- A ledger copy of the trials this machine ran lives under ``runs/<sweep-id>/``, as for local sweeps.
"""
from __future__ import annotations

import copy
import logging
import threading
from pathlib import Path

from reidlib import trial as contract
from reidlib.errors import SpecError
from reidlib.sweep import layout
from reidlib.sweep.processes import RunningTrials
from reidlib.sweep.reindex import save_wandb_destination
from reidlib.sweep.session import SweepSession, open_session
from reidlib.sweep.spec import DEFAULT_NOTEBOOK, Spec, normalise
from reidlib.sweep.trial_run import TrialOptions, run_trial
from reidlib.sweep.workers import worker_environments
from reidlib.wandb_run import start_run

log = logging.getLogger(__name__)


def server_sweep_config(spec: Spec) -> dict:
    """What ``wandb.sweep`` receives: W&B's schema only, our keys as constant parameters."""
    config = copy.deepcopy(spec.search_config)
    params = config["parameters"]
    constants = {**spec.defaults, **({"config_file": spec.config_file} if spec.config_file else {})}
    for name, value in constants.items():
        params.setdefault(name, {"value": value})
    return config


def spec_from_server(config: dict, notebook: str = DEFAULT_NOTEBOOK) -> Spec:
    """Our ``Spec`` from a server sweep's config (the inverse of ``server_sweep_config``)."""
    config = copy.deepcopy(config)
    constant = config.get("parameters", {}).pop("config_file", None) or {}
    raw = {k: v for k, v in config.items() if k in ("method", "parameters", "metric", "early_terminate", "run_cap",
                                                     "name", "description")}
    spec = normalise(raw, source="wandb sweep")
    spec.config_file, spec.notebook = constant.get("value"), notebook
    return spec


def parse_sweep_path(path: str) -> tuple[str | None, str | None, str]:
    parts = path.strip("/").split("/")
    if not 1 <= len(parts) <= 3 or not all(parts):
        raise SpecError(path, "expected ENTITY/PROJECT/SWEEP_ID")
    return (*([None] * (3 - len(parts))), *parts)


def create_server_sweep(spec: Spec, project: str, entity: str | None = None) -> str:
    """Create the sweep on the W&B server; returns its path ``entity/project/id``."""
    import wandb

    sweep_id = wandb.sweep(sweep=server_sweep_config(spec), entity=entity, project=project)
    return "/".join(p for p in (entity, project, sweep_id) if p)


def run_agent(sweep_path: str, count: int | None = None, runs_dir: str | Path | None = None,
              project_dir: str | Path | None = None, notebook: str = DEFAULT_NOTEBOOK,
              time_limit: float | None = None, gpu: str | None = None) -> SweepSession:
    """Pull trials of a W&B sweep and run them here until the server or ``count`` says stop."""
    import wandb

    entity, project, sweep_id = parse_sweep_path(sweep_path)
    spec = spec_from_server(wandb.Api().sweep(sweep_path).config, notebook)
    runs_dir = Path(runs_dir or Path(project_dir or Path.cwd()) / layout.RUNS_DIR)
    existing = layout.is_sweep_dir(layout.sweep_dir(runs_dir, sweep_id))
    session = open_session(spec, runs_dir, sweep_id if existing else None, project_dir, new_id=sweep_id)
    if project:  # this machine's copy of the sweep records where its runs are
        save_wandb_destination(session.directory, session.ledger.record_wandb_destination(
            {"project": project, "entity": entity}))
    options = TrialOptions(wandb_mode="online", project=project, entity=entity, time_limit=time_limit)
    running = RunningTrials()
    [env] = worker_environments(1, [gpu] if gpu else None)
    env.update(contract.sweep_cache_environment(session.directory))

    def trial_function() -> None:
        run = start_run(directory=session.directory, job_type="trial", group=sweep_id)
        params = {k: v for k, v in dict(run.config).items()}
        trial = session.ledger.claim_trial(lambda _trials: (params, None))
        done = threading.Event()

        def target():
            try:
                run_trial(session, None, trial, options, running, env, run=run)
            finally:
                done.set()

        threading.Thread(target=target, name=f"trial-{trial.name}", daemon=True).start()
        while not done.is_set():
            try:
                done.wait(timeout=0.2)
            except Exception:  # the agent's stop: raised in this thread by wandb when the server says so
                log.info("W&B stops %s", trial.name)
                running.stop(trial.name, "wandb server")

    try:
        wandb.agent(sweep_id, function=trial_function, entity=entity, project=project, count=count)
    finally:
        session.lease.release()  # another agent or driver may resume this sweep's trials from now on
    return session
