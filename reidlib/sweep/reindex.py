"""Rebuild a sweep's ledger from its executed trial notebooks alone: the notebooks are the source
of truth (papermill recorded their parameters and times, scrapbook their config, epochs and summary)."""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import nbformat

from reidlib import trial as contract
from reidlib.errors import SweepStateError
from reidlib.sweep import layout
from reidlib.sweep.files import write_atomic
from reidlib.sweep.ledger import CRASHED, FAILED, RUNNING, Ledger, Trial

log = logging.getLogger(__name__)
_DRIVER_PARAMETERS = ("config_file", "overrides", "output_dir")


def save_wandb_destination(sweep_dir: Path, destination: dict) -> None:
    """Keep a copy of the ledger's W&B destination beside it, for ``reindex``. A copy that cannot be
    written (a full disk) is a warning: the ledger holds the destination."""
    path = sweep_dir / layout.WANDB_FILE
    text = json.dumps(destination)
    try:
        if path.is_file() and path.read_text() == text:
            return
        write_atomic(path, text)  # each writer its own temporary file: drivers race here
    except OSError as err:
        log.warning("could not write %s (%s); the ledger still records the W&B destination", path, err)


def _saved_wandb_destination(sweep_dir: Path) -> dict | None:
    try:
        return json.loads((sweep_dir / layout.WANDB_FILE).read_text())
    except (OSError, ValueError):
        return None


def _timestamp(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def trial_params(papermill_parameters: dict, spec: dict | None = None) -> dict:
    """The sweep's parameters of a trial, from the parameters papermill injected: less the spec's
    ``defaults`` that no parameter searches (constants every trial got, the held-out share too)."""
    params = {k: v for k, v in papermill_parameters.items() if k not in _DRIVER_PARAMETERS}
    params.update({k: v for k, v in (papermill_parameters.get("overrides") or {}).items() if k != "WANDB.ENABLE"})
    constants = set((spec or {}).get("defaults") or {}) - set((spec or {}).get("parameters") or {})
    return {k: v for k, v in params.items() if k not in constants}


@dataclass
class NotebookRecord:
    """What an executed trial notebook says of its trial (``state`` as the ledger records it)."""

    state: str
    params: dict
    epochs: list[dict]
    fields: dict  # for Ledger.update_trial


def read_notebook_record(path: Path, sweep_id: str, spec: dict | None = None) -> NotebookRecord | None:
    """The trial an executed notebook records, or None (one warning naming it) if it cannot be read:
    half-written (before writes were atomic), emptied, not a notebook."""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # nbformat raises NotJSONError, ValueError, KeyError...; any means unreadable
        log.warning("skipped %s: not a readable notebook (%s: %s)", path, type(err).__name__, str(err)[:200])
        return None
    papermill = nb.metadata.get("papermill", {})
    scraps = contract.scraps_in(nb)
    epochs, summary = contract.epochs_and_summary(scraps)
    status = (summary or {}).get("status")
    errors = [f"{o['ename']}: {o['evalue']}" for c in nb.cells for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    state = CRASHED if summary is None and not errors else contract.TrialState.of(status, bool(errors))
    summary = contract.with_metric_best(summary, epochs, (spec or {}).get("metric") or contract.DEFAULT_METRIC)
    return NotebookRecord(state, trial_params(papermill.get("parameters", {}), spec), epochs, dict(
        config=scraps.get(contract.CONFIG), summary=summary, notebook=str(path),
        wandb_id=f"{sweep_id}-{path.stem}", started=_timestamp(papermill.get("start_time")),
        ended=_timestamp(papermill.get("end_time")),
        exit_reason=errors[0] if errors else (status if state == FAILED else None)))


def recover_finished(ledger: Ledger, trial: Trial) -> bool:
    """Record a trial the ledger has as running or crashed from its notebook, if the notebook has its
    summary (its driver died after the trial ended, before recording it): finished work is never
    run again. Returns whether it did. Its W&B run stays unfinished: ``reid-sweep sync`` rewrites it."""
    sweep = ledger.sweep()
    record = read_notebook_record(Path(trial.notebook), sweep["id"], sweep["spec"]) \
        if trial.notebook and Path(trial.notebook).is_file() else None
    if record is None or record.fields["summary"] is None:
        return False
    for row in record.epochs:
        ledger.add_epoch(trial.name, row)
    config = {"config": record.fields["config"]} if record.fields["config"] else {}
    if not ledger.update_trial(trial.name, if_state=(RUNNING, CRASHED), state=record.state, wandb_id=None,
                               summary=record.fields["summary"], exit_reason=record.fields["exit_reason"],
                               ended=record.fields["ended"] or time.time(), **config):
        return False  # its driver recorded it meanwhile
    log.info("%s: recorded as %s from its notebook %s", trial.name, record.state, trial.notebook)
    return True


def reindex(sweep_dir: str | Path) -> Path:
    """Write ``<sweep_dir>/sweep.db`` anew from ``spec.json``, ``wandb.json`` and ``trials/*.ipynb``;
    returns its path. A notebook that cannot be read is skipped with a warning naming it."""
    sweep_dir = Path(sweep_dir)
    spec_path = sweep_dir / layout.SPEC_FILE
    if not spec_path.is_file():
        raise SweepStateError(str(sweep_dir), f"no {layout.SPEC_FILE} here: not a sweep directory")
    spec = json.loads(spec_path.read_text())
    tmp = sweep_dir / f".{layout.LEDGER_FILE}.reindex"
    for leftover in sweep_dir.glob(f".{layout.LEDGER_FILE}.reindex*"):
        leftover.unlink()
    ledger = Ledger.create(sweep_dir, sweep_dir.name, spec.get("name") or sweep_dir.name, spec, filename=tmp.name)
    try:
        if destination := _saved_wandb_destination(sweep_dir):
            ledger.record_wandb_destination(destination)
        for path in sorted((sweep_dir / layout.TRIALS_DIR).glob("trial-*.ipynb")):
            record = read_notebook_record(path, sweep_dir.name, spec)
            if record is None:
                continue
            name = path.stem
            ledger.insert_trial(name, int(name.split("-")[-1]), record.state, record.params, **record.fields)
            for row in record.epochs:
                ledger.add_epoch(name, row)
    finally:
        ledger.close()
    target = sweep_dir / layout.LEDGER_FILE
    for suffix in ("-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    os.replace(tmp, target)
    return target
