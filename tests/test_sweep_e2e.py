"""End to end: a 3-trial sweep on tiny generated data through the real driver, papermill kernels,
scraps, ledger, wandb offline runs and the analysis notebook."""
from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import LRS, REPO
from helpers.wandb_offline import read_run

from reidlib.analysis import open_sweep
from reidlib.trial import EPOCH_KEYS, VAL_KEYS, read_trial_notebook


def test_every_trial_leaves_a_notebook_with_its_scraps(sweep):
    result, _ = sweep
    assert [t.state for t in result.trials] == ["finished"] * 3
    seen_lrs = []
    for trial in result.trials:
        params, epochs, summary = read_trial_notebook(trial.notebook)
        seen_lrs.append(params["base_lr"])
        assert [e["epoch"] for e in epochs] == [1, 2]
        for epoch in epochs:
            assert set(EPOCH_KEYS) | set(VAL_KEYS) <= set(epoch)
        assert summary["status"] == "finished" and summary["epochs_run"] == 2
        assert Path(trial.notebook).parent == result.directory / "trials"
    assert sorted(seen_lrs) == LRS  # grid: every point once


def test_ledger_rows_hold_params_summary_and_history(sweep):
    result, _ = sweep
    db = sqlite3.connect(result.directory / "sweep.db")
    rows = db.execute("SELECT name, state, params, summary, wandb_id, started, ended FROM trials ORDER BY seq").fetchall()
    assert len(rows) == 3
    for name, state, params, summary, wandb_id, started, ended in rows:
        assert state == "finished" and json.loads(params)["base_lr"] in LRS
        assert json.loads(summary)["status"] == "finished"
        assert wandb_id and started < ended
        epochs = db.execute("SELECT epoch FROM history WHERE trial = ? ORDER BY epoch", (name,)).fetchall()
        assert epochs == [(1,), (2,)]


def test_wandb_offline_runs_have_history_and_group(sweep):
    result, _ = sweep
    files = sorted((result.directory / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 3
    for trial, path in zip(result.trials, files):
        run = read_run(path)
        assert run["run"].run_group == result.sweep_id
        assert run["run"].display_name == trial.name
        maps = [row["val/mAP"] for row in run["history"] if "val/mAP" in row]
        assert len(maps) == 2  # one per evaluated epoch
        assert run["summary"]["val/mAP"] == pytest.approx(max(maps))  # the best, not the last
        assert run["summary"]["state"] == "finished"


def test_analysis_notebook_names_the_ledgers_best_trial(sweep):
    result, outputs = sweep
    analysis = outputs["analysis"]
    best = max(result.trials, key=lambda t: t.summary["best"]["val/mAP"])
    assert open_sweep(result.directory).best_run().name == best.name
    nb = nbformat.read(analysis, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"best run: {best.name}" in text
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))


def test_trial_kernel_runs_this_environments_interpreter(tmp_path):
    from reidlib.sweep.runner import execute_notebook

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import sys\nfrom reidlib import trial\ntrial.glue('executable', sys.executable)")]
    source = tmp_path / "probe.ipynb"
    nbformat.write(nb, source)
    scraps = {}
    outcome = execute_notebook(source, tmp_path / "out.ipynb", {}, on_scrap=scraps.__setitem__, cwd=tmp_path)
    assert outcome.error is None
    assert scraps["executable"] == sys.executable


def test_exports_take_the_best_run_away(sweep, tmp_path):
    result, outputs = sweep
    best = max(result.trials, key=lambda t: t.summary["best"]["val/mAP"])
    summary = json.loads(outputs["summary"].read_text())
    assert summary["best_trial"] == best.name and summary["parameters"]["base_lr"] == best.params["base_lr"]
    assert summary["metrics"]["val/mAP"] == pytest.approx(best.summary["best"]["val/mAP"])
    assert outputs["model"].is_symlink() and outputs["model"].resolve() == Path(best.summary["checkpoint"]).resolve()

    # best_config.yaml trains the best trial standalone and reproduces its metrics (same seed, CPU)
    from reidlib.sweep.runner import execute_notebook

    out = tmp_path / "retrain.ipynb"
    outcome = execute_notebook(REPO / "notebooks" / "train.ipynb", out, {"config_file": str(outputs["config"])}, cwd=REPO)
    assert outcome.error is None
    _, epochs, retrained = read_trial_notebook(out)
    assert [e["val/mAP"] for e in epochs] == pytest.approx([h["val/mAP"] for h in best.history], abs=1e-6)


def test_html_report_links_resolve(sweep):
    import re

    result, outputs = sweep
    index = outputs["report"]
    page = index.read_text()
    links = re.findall(r'href="([^"]+)"', page)
    assert "analysis.html" in links and len([l for l in links if l.startswith("trials/")]) == 3
    for link in links:
        assert (index.parent / link).is_file(), link
    trial_page = (index.parent / "trials" / "trial-001.html").read_text()
    assert "data:image/png;base64" in trial_page and "do_train(" not in trial_page  # figures, no code
