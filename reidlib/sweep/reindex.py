"""Rebuild a sweep's ledger from its executed trial notebooks alone: the notebooks are the source
of truth (papermill recorded their parameters and times, scrapbook their config, epochs and summary)."""
from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import datetime
from pathlib import Path

import nbformat

from reidlib import trial as contract
from reidlib.errors import SweepStateError
from reidlib.sweep.ledger import CRASHED, FAILED, LEDGER_FILE, Ledger, state_of

log = logging.getLogger(__name__)
SPEC_FILE = "spec.json"  # written beside the ledger when a sweep is created
WANDB_FILE = "wandb.json"  # beside the ledger: its W&B destination, kept by every driver
_DRIVER_PARAMETERS = ("config_file", "overrides", "output_dir")


def save_wandb_destination(sweep_dir: Path, destination: dict) -> None:
    """Keep a copy of the ledger's W&B destination beside it, for ``reindex``. A copy that cannot be
    written (a full disk) is a warning: the ledger holds the destination."""
    path = sweep_dir / WANDB_FILE
    text = json.dumps(destination)
    try:
        if path.is_file() and path.read_text() == text:
            return
        handle, partial = tempfile.mkstemp(dir=sweep_dir, prefix=f".{WANDB_FILE}.")  # its own: drivers race here
        try:
            with os.fdopen(handle, "w") as out:
                out.write(text)
            os.replace(partial, path)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
    except OSError as err:
        log.warning("could not write %s (%s); the ledger still records the W&B destination", path, err)


def _saved_wandb_destination(sweep_dir: Path) -> dict | None:
    try:
        return json.loads((sweep_dir / WANDB_FILE).read_text())
    except (OSError, ValueError):
        return None


def _timestamp(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def trial_params(papermill_parameters: dict) -> dict:
    """The sweep's parameters of a trial, from the parameters papermill injected."""
    params = {k: v for k, v in papermill_parameters.items() if k not in _DRIVER_PARAMETERS}
    params.update({k: v for k, v in (papermill_parameters.get("overrides") or {}).items() if k != "WANDB.ENABLE"})
    return params


def reindex(sweep_dir: str | Path) -> Path:
    """Write ``<sweep_dir>/sweep.db`` anew from ``spec.json``, ``wandb.json`` and ``trials/*.ipynb``;
    returns its path."""
    sweep_dir = Path(sweep_dir)
    spec_path = sweep_dir / SPEC_FILE
    if not spec_path.is_file():
        raise SweepStateError(str(sweep_dir), f"no {SPEC_FILE} here: not a sweep directory")
    spec = json.loads(spec_path.read_text())
    tmp = sweep_dir / f".{LEDGER_FILE}.reindex"
    for leftover in sweep_dir.glob(f".{LEDGER_FILE}.reindex*"):
        leftover.unlink()
    ledger = Ledger.create(sweep_dir, sweep_dir.name, spec.get("name") or sweep_dir.name, spec, filename=tmp.name)
    try:
        if destination := _saved_wandb_destination(sweep_dir):
            ledger.record_wandb_destination(destination)
        for path in sorted((sweep_dir / "trials").glob("trial-*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            papermill = nb.metadata.get("papermill", {})
            epochs, summary = contract.epochs_and_summary(contract.scraps_in(nb))
            scraps = contract.scraps_in(nb)
            status = (summary or {}).get("status")
            errors = [f"{o['ename']}: {o['evalue']}" for c in nb.cells for o in c.get("outputs", [])
                      if o.get("output_type") == "error"]
            state = CRASHED if summary is None and not errors else state_of(status, bool(errors))
            name = path.stem
            ledger.insert_trial(name, int(name.split("-")[-1]), state, trial_params(papermill.get("parameters", {})),
                                config=scraps.get(contract.CONFIG), summary=summary, notebook=str(path),
                                wandb_id=f"{sweep_dir.name}-{name}", started=_timestamp(papermill.get("start_time")),
                                ended=_timestamp(papermill.get("end_time")),
                                exit_reason=errors[0] if errors else (status if state == FAILED else None))
            for row in epochs:
                ledger.add_epoch(name, row)
    finally:
        ledger.close()
    target = sweep_dir / LEDGER_FILE
    for suffix in ("-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    os.replace(tmp, target)
    return target
