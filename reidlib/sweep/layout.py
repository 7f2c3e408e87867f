"""What a sweep's directory holds, named in one place::

    runs/<sweep-id>/
        sweep.db             the ledger (``ledger.Ledger``)
        spec.json            the spec as created, and wandb.json its W&B destination (for ``reindex``)
        STOP                 no new trials (``reid-sweep stop``)
        workers/<token>.lock one per live driver process (``lease.DriverLease``)
        trials/<trial>.ipynb each trial's executed notebook; trials/<trial>/ its output directory
        wandb/               offline W&B runs (wandb makes it under the directory it is given)
        cache/               what its trials share (the trial contract's ``sweep_cache_environment``)
        final/               the finalized model (``finalize``), its summary.json written last
        best/                the best run's exports; report/ the analysis and the HTML report

A sweep is found by its id under a runs directory or by its own path (``find_sweep_dir``).
"""
from __future__ import annotations

from pathlib import Path

from reidlib.errors import SweepStateError

RUNS_DIR = "runs"  # where sweeps are written unless told (``--runs-dir``, a spec's ``runs_dir``)
LEDGER_FILE = "sweep.db"
SPEC_FILE = "spec.json"
WANDB_FILE = "wandb.json"
STOP_FILE = "STOP"
WORKERS_DIR = "workers"
TRIALS_DIR = "trials"
WANDB_DIR = "wandb"
FINAL_DIR = "final"
BEST_DIR = "best"
REPORT_DIR = "report"
FINAL_LOCK = ".final.lock"  # one finalize at a time
REPORT_LOCK = ".report.lock"  # drivers that end together write the report one after the other


def sweep_dir(runs_dir: str | Path, sweep_id: str) -> Path:
    return Path(runs_dir) / sweep_id


def is_sweep_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a sweep: its ledger."""
    return (Path(path) / LEDGER_FILE).is_file()


def find_sweep_dir(ref: str | Path, runs_dir: str | Path) -> Path | None:
    """The sweep ``ref`` names: a directory, else an id under ``runs_dir``; None when neither holds one."""
    return next((c for c in (Path(ref), sweep_dir(runs_dir, str(ref))) if is_sweep_dir(c)), None)


def existing_sweep_dir(ref: str | Path, runs_dir: str | Path) -> Path:
    """``find_sweep_dir``'s, or a ``SweepStateError`` saying where it looked."""
    found = find_sweep_dir(ref, runs_dir)
    if found is None:
        raise SweepStateError(str(ref), f"no sweep found (looked for {LEDGER_FILE} in {Path(ref)} and "
                                        f"{sweep_dir(runs_dir, str(ref))})")
    return found


def trial_dir(sweep: Path, trial_name: str) -> Path:
    """A trial's output directory (its checkpoint, its STOP and VERDICT files)."""
    return sweep / TRIALS_DIR / trial_name


def trial_notebook(sweep: Path, trial_name: str) -> Path:
    return sweep / TRIALS_DIR / f"{trial_name}.ipynb"
