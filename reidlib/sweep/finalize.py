"""Finalize a sweep: its selected configuration trained again on the whole training set, tested once.

``finalize(sweep_dir, trial)`` runs the sweep's trial notebook in a fresh kernel with that trial's
parameters and ``DATASETS.VAL_IDS`` 0 (the held-out identities back in training), evaluating only at the
last epoch (``SOLVER.EVAL_PERIOD`` = ``SOLVER.MAX_EPOCHS``; nothing is chosen on it), into
``runs/<id>/final/``: the executed notebook ``train.ipynb``, ``checkpoint.pth``, and ``summary.json`` with
``test/*``. ``summary.json`` is written last and atomically: a ``final/`` without it is unfinished and
is trained again from the start. A W&B run ``final`` (tagged 'final', in the sweep's group) logs it.
Asked again for the same trial, it returns the finished one. An evaluation sweep's (``from:``) final run
is its trained sweep's final model (finalized first when needed) evaluated once with the selected
``TEST.*`` keys (``evaluate.ipynb``).
"""
from __future__ import annotations

import fcntl
import json
import logging
import shutil
from pathlib import Path

from reidlib import trial as contract
from reidlib.errors import SweepStateError
from reidlib.sweep.bridge import init_run
from reidlib.sweep.layout import FINAL_DIR, FINAL_LOCK
from reidlib.sweep.ledger import FINISHED, Ledger
from reidlib.sweep.runner import execute_notebook
from reidlib.sweep.spec import normalise, notebook_parameters
from reidlib.wandb_run import RunWriter, wandb_destination, wandb_mode

log = logging.getLogger(__name__)

FINAL_SUMMARY = "summary.json"


def read_final(sweep_dir: str | Path) -> dict | None:
    """The finished final run of a sweep (its ``summary.json``), or None."""
    path = Path(sweep_dir) / FINAL_DIR / FINAL_SUMMARY
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def finalize(sweep_dir: str | Path, trial_name: str, project_dir: str | Path | None = None,
             wandb: str | None = None) -> dict:
    """Train trial ``trial_name``'s configuration on every training identity and test it once;
    returns ``final/summary.json``'s content."""
    sweep_dir = Path(sweep_dir).resolve()
    project_dir = Path(project_dir or Path.cwd()).resolve()
    with (sweep_dir / FINAL_LOCK).open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepStateError(str(sweep_dir / FINAL_DIR), "another finalize of this sweep is running") from None
        done = read_final(sweep_dir)
        if done and done.get("trial") == trial_name:
            log.info("%s is already finalized: %s", trial_name, sweep_dir / FINAL_DIR)
            return done
        return _train_final(sweep_dir, trial_name, project_dir, wandb)


def _train_final(sweep_dir: Path, trial_name: str, project_dir: Path, wandb: str | None) -> dict:
    ledger = Ledger.open(sweep_dir)
    try:
        info = ledger.sweep()
        trial = next((t for t in ledger.trials() if t.name == trial_name), None)
    finally:
        ledger.close()
    if trial is None or trial.state != FINISHED or not trial.config:
        raise SweepStateError(trial_name, f"expected a finished trial of sweep {info['id']} to finalize")
    spec = normalise(info["spec"], source=str(sweep_dir))
    out = sweep_dir / FINAL_DIR
    shutil.rmtree(out, ignore_errors=True)  # an unfinished earlier attempt, or another trial's final run
    out.mkdir()
    max_epochs = trial.config["SOLVER.MAX_EPOCHS"]
    overrides = {"DATASETS.VAL_IDS": 0, "SOLVER.EVAL_PERIOD": max_epochs, "TEST.EVAL_BEFORE_TRAINING": "no",
                 "TEST.EVAL_TEST_SET": "yes"}
    if spec.evaluates:  # an evaluation sweep: the trained sweep's final model, tested once with the chosen TEST.* keys
        overrides = {"DATASETS.VAL_IDS": 0, "TEST.EVAL_TEST_SET": "yes",
                     "TEST.WEIGHT": _trained_final(spec.evaluates, project_dir, wandb)}
    params = notebook_parameters(spec, trial.params, out, overrides=overrides)
    destination = wandb_destination(spec.search_config, recorded=info["wandb"])
    mode = wandb_mode(wandb)
    run = None if mode == "disabled" else _open_run(mode, destination, info["id"], trial.params, sweep_dir)
    writer = RunWriter(run, "the final run")  # W&B trouble never costs the final run; final/ has everything
    notebook = out / Path(spec.notebook).name  # train.ipynb, or evaluate.ipynb for an evaluation sweep
    log.info("finalize %s: %s's configuration on every training identity, tested once at the end", info["id"], trial_name)
    outcome = execute_notebook(project_dir / spec.notebook, notebook, params, on_scrap=writer.on_scrap, cwd=project_dir)
    summary = writer.summary or {}
    status = summary.get("status")
    state = contract.TrialState.of(status, bool(outcome.error))
    writer.finish(state, summary, notebook)
    if state != FINISHED:
        raise SweepStateError(str(notebook), f"the final training ended {status or 'without a summary'} "
                              f"({outcome.error or summary.get('error')}); fix that, then finalize again")
    final = {"sweep": info["id"], "trial": trial_name, "parameters": trial.params, "status": status,
             "test": summary.get("test") or {}, "epochs_run": summary.get("epochs_run"),
             "wall_time_s": summary.get("wall_time_s"), "checkpoint": summary.get("checkpoint"),
             "notebook": str(notebook), "wandb_id": writer.run.id if writer.run is not None else None}
    tmp = out / f"{FINAL_SUMMARY}.tmp"
    tmp.write_text(json.dumps(final, indent=2, default=str))
    tmp.replace(out / FINAL_SUMMARY)  # last: its presence says final/ is complete
    return final


def _trained_final(ref: str, project_dir: Path, wandb: str | None) -> str:
    """The checkpoint of the final model of the trained run ``ref`` (an evaluation sweep's ``from``),
    finalizing its sweep first when it is a trial."""
    from reidlib.sweep.evaluation_spec import find_trained_run

    trained = find_trained_run(ref)
    final = read_final(trained.sweep_dir) if trained.trial == FINAL_DIR else \
        finalize(trained.sweep_dir, trained.trial, project_dir, wandb)
    return final["checkpoint"]


def _open_run(mode: str, destination: dict, sweep_id: str, config: dict, sweep_dir: Path):
    try:
        return init_run(mode, destination["project"], destination["entity"], sweep_id, FINAL_DIR, config, sweep_dir,
                        job_type="final")
    except Exception as err:
        log.warning("W&B could not open the final run (%s); it goes on without W&B", err)
        return None
