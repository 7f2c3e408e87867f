"""How a sweep ends, whoever ran it (``reid-sweep run``, the driver notebook): its analysis notebook
executed, the best run's exports (``best/``) and the HTML report (``report/``).

The top layer, beside the CLI: it joins the sweep machinery (``reidlib.sweep``, which never imports
what reads a sweep) with the analysis that reads it.
"""
from __future__ import annotations

import fcntl
import logging
from pathlib import Path
from typing import Callable

from reidlib import trial as contract
from reidlib.analysis import LiveLeaderboard, open_sweep
from reidlib.analysis.export import build_html_report, export_best
from reidlib.sweep import layout
from reidlib.sweep.driver import SweepInterrupted, SweepResult, run_sweep
from reidlib.sweep.files import own_dir
from reidlib.sweep.lease import DriverLease
from reidlib.sweep.runner import execute_notebook
from reidlib.sweep.session import running_elsewhere
from reidlib.sweep.spec import Spec

log = logging.getLogger(__name__)

ANALYSIS_NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "analysis.ipynb"  # the repo's


def run_analysis(sweep_dir: Path, project_dir: str | Path | None = None) -> Path:
    """Execute the analysis notebook for a sweep into ``<sweep_dir>/report/analysis.ipynb``."""
    project_dir = Path(project_dir or Path.cwd()).resolve()
    report = own_dir(sweep_dir / layout.REPORT_DIR)
    output = report / "analysis.ipynb"
    # its links resolve from report/: from the notebook opened in JupyterLab and from report/analysis.html
    outcome = execute_notebook(ANALYSIS_NOTEBOOK, output, {"sweep": str(sweep_dir.resolve())}, cwd=project_dir,
                               env={contract.LINK_BASE_ENV: str(report.resolve())})
    if outcome.error:
        log.warning("analysis notebook failed (%s); see %s", outcome.error, output)
    return output


def make_report(sweep_dir: Path, project_dir: str | Path | None = None) -> dict[str, Path]:
    """The analysis notebook, the best run's exports and the HTML report of a sweep."""
    with (sweep_dir / layout.REPORT_LOCK).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        analysis = run_analysis(sweep_dir, project_dir)
        sweep = open_sweep(sweep_dir)
        return {"analysis": analysis, **(export_best(sweep) or {}), "report": build_html_report(sweep, analysis)}


def finish_sweep(sweep_dir: Path, project_dir: str | Path | None = None,
                 before_report: Callable[[], None] | None = None) -> dict[str, Path] | None:
    """How a driver's run of a sweep ends, for ``reid-sweep run`` and the driver notebook alike: the
    last driver to end writes the analysis notebook, ``best/`` and ``report/`` (``make_report``), after
    ``before_report`` (``--finalize``). While other drivers still run the sweep it says so in one line
    and returns None: the last of them writes the report."""
    if DriverLease.any_alive(sweep_dir):
        running = ", ".join(running_elsewhere(sweep_dir)) or "no trial now"
        print(f"sweep {sweep_dir.name}: this driver is done; other drivers still run ({running}); "
              f"the last to end writes the report (or: reid-sweep report {sweep_dir.name})")
        return None
    if before_report:
        before_report()
    return make_report(sweep_dir, project_dir)


def run_in_notebook(spec: Spec | str | Path, count: int | None = None, sweep_id: str | None = None,
                    seed: int | None = None, link_base: str | Path | None = None, **options) -> SweepResult | None:
    """The driver notebook's run cell (``notebooks/sweep.ipynb``): ``run_sweep``'s bars, a leaderboard
    redrawn at every epoch with each trial's report link (``LiveLeaderboard``, links relative to
    ``link_base``, by default the notebook's directory), then the end ``reid-sweep run`` has
    (``finish_sweep``: the analysis, ``best/``, ``report/``). An interrupt prints one line (what was
    kept, how to resume) and returns None; running the cell again resumes the sweep."""
    board = LiveLeaderboard(link_base)
    try:
        result = run_sweep(spec, count=count, sweep_id=sweep_id, seed=seed, on_update=board.update, **options)
    except SweepInterrupted as interrupted:
        print(interrupted.line())
        return None
    try:
        outputs = finish_sweep(result.directory, options.get("project_dir"))
    except KeyboardInterrupt:
        print(f"interrupted while writing the report: every trial is kept; reid-sweep report {result.sweep_id} "
              "writes it")
        return result
    for what, path in (outputs or {}).items():
        print(f"{what}: {path}")
    return result
