"""What a sweep leaves to take away (``reid-sweep report``, also run at the end of ``reid-sweep run``):

- ``best/best_config.yaml``: a YACS file that trains the best trial standalone
  (``papermill notebooks/train.ipynb out.ipynb -p config_file runs/<id>/best/best_config.yaml``);
- ``best/summary.json``: sweep, metric, best trial, its parameters, metrics (``val/*`` it was selected on,
  its ``test/*``), what it was selected on in words, the finalized model's ``test/*`` once
  ``reid-sweep finalize`` has run (``final``), and paths;
- ``best/model.pth``: a link to the finalized model's checkpoint when there is one, else to the best
  trial's (never a second copy);
- ``report/index.html``: every trial with its state, parameters and metrics, linked to its
  executed notebook as HTML (inputs hidden), under the analysis notebook's HTML.
"""
from __future__ import annotations

import html
import json
import logging
import math
import os
from pathlib import Path

import yaml

from reidlib.analysis.readers import LocalSweep
from reidlib.analysis.tables import SELECTED_ON_TEST, leaderboard, selected_on_test
from reidlib.rates import is_rate, percent
from reidlib.sweep import layout
from reidlib.sweep.files import own_dir, write_atomic
from reidlib.sweep.finalize import read_final

log = logging.getLogger(__name__)


def _nested(flat: dict) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return tree


def export_best(sweep: LocalSweep) -> dict[str, Path] | None:
    """Write ``best/`` for the sweep's best run; None when no trial has finished."""
    best = sweep.best_run()
    if best is None or not best.trial.config:
        return None
    out = own_dir(sweep.directory / layout.BEST_DIR)
    config = {**best.trial.config, "OUTPUT_DIR": str(out / "retrain"), "WANDB.ENABLE": False}
    paths = {"config": out / "best_config.yaml", "summary": out / "summary.json", "model": out / "model.pth"}
    header = f"# The best trial of sweep {sweep.id} ({best.name}), as it trained: a complete reidlib YACS file.\n"
    write_atomic(paths["config"], header + yaml.safe_dump(_nested(config), sort_keys=True))
    name, goal = sweep.metric
    final = read_final(sweep.directory)
    final = final if final and final.get("trial") == best.name else None
    held_out = best.summary.get("val_ids")
    selection = SELECTED_ON_TEST if selected_on_test(sweep) else \
        f"selected on {name} of {held_out} training identities held out from training (test/* never searched on)"
    write_atomic(paths["summary"], json.dumps({
        "sweep": sweep.id, "metric": {"name": name, "goal": goal}, "selection": selection, "best_trial": best.name,
        "parameters": best.config,
        "metrics": {k: v for k, v in best.summary.items() if k.startswith(("val/", "last/", "test/")) or k == name},
        "final": final, "summary": best.trial.summary, "notebook": str(best.notebook_path),
        "checkpoint": str(best.checkpoint or ""), "config_file": str(paths["config"]),
    }, indent=2, default=str))
    paths["model"].unlink(missing_ok=True)
    model = Path(final["checkpoint"]) if final and final.get("checkpoint") else best.checkpoint
    if model and model.is_file():
        os.symlink(os.path.relpath(model.resolve(), out.resolve()), paths["model"])
    else:
        del paths["model"]
    return paths


def notebook_html(notebook: Path, target: Path) -> Path:
    """An executed notebook as HTML in report mode (inputs hidden)."""
    import warnings

    from nbconvert import HTMLExporter

    with warnings.catch_warnings():  # scrapbook's scraps are invisible outputs by design
        warnings.simplefilter("ignore", UserWarning)
        body, _ = HTMLExporter(exclude_input=True).from_filename(str(notebook))
    write_atomic(own_dir(target.parent) / target.name, body)
    return target


def build_html_report(sweep: LocalSweep, analysis: Path | None = None) -> Path:
    """``report/index.html``: the analysis on top, then one row per trial linked to its report."""
    report = own_dir(sweep.directory / layout.REPORT_DIR)
    analysis_link = ""
    if analysis and analysis.is_file():
        notebook_html(analysis, report / "analysis.html")
        analysis_link = '<p><a href="analysis.html">The analysis notebook: best run, leaderboard, what mattered</a></p>'
    board = leaderboard(sweep)
    runs = {r.name: r for r in sweep.runs}
    rows = []
    for trial, row in board.iterrows():
        notebook = runs[trial].notebook_path
        link = html.escape(trial)
        if notebook and notebook.is_file():
            try:
                notebook_html(notebook, report / "trials" / f"{trial}.html")
                link = f'<a href="trials/{html.escape(trial)}.html">{html.escape(trial)}</a>'
            except Exception as err:  # nbformat and nbconvert raise many kinds for a damaged file
                log.warning("report: skipped %s: not a readable notebook (%s: %s)", notebook, type(err).__name__,
                            str(err)[:200])
        cells = "".join(f"<td>{html.escape(_fmt(value, column))}</td>" for column, value in row.items())
        rows.append(f"<tr><td>{link}</td>{cells}</tr>")
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in ["trial", *board.columns])
    if selected_on_test(sweep):
        analysis_link += f"<p><strong>Warning: {html.escape(SELECTED_ON_TEST)}.</strong></p>"
    index = report / "index.html"
    write_atomic(index, f"""<!doctype html><html><head><meta charset="utf-8"><title>sweep {html.escape(sweep.id)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}</style>
</head><body><h1>Sweep {html.escape(sweep.id)} ({html.escape(sweep.name or '')})</h1>{analysis_link}
<table><tr>{head}</tr>{''.join(rows)}</table></body></html>""")
    return index


def _fmt(value, column: str) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else percent(value) if is_rate(column) else f"{value:.4g}"
    return "" if value is None else str(value)
