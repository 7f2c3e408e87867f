"""The trial notebook as papermill runs it: scraps per epoch, live on disk, stop, bad parameters."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
from conftest import REPO

from reidlib import trial
from reidlib.sweep.runner import ensure_kernelspec, execute_notebook

NOTEBOOK = REPO / "notebooks" / "train.ipynb"


def papermill_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    ensure_kernelspec()
    return subprocess.run([sys.executable, "-m", "papermill", *args], cwd=cwd, capture_output=True, text=True)


def error_outputs(path: Path) -> list[dict]:
    nb = nbformat.read(path, as_version=4)
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]


def test_runs_alone_with_the_papermill_cli(tmp_path, tiny_config):
    out = tmp_path / "out.ipynb"
    proc = papermill_cli(str(NOTEBOOK), str(out), "-p", "config_file", str(tiny_config), "-p", "max_epochs", "1",
                         "-p", "output_dir", str(tmp_path / "trial"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    params, epochs, summary = trial.read_trial_notebook(out)
    assert params["max_epochs"] == 1
    assert [e["epoch"] for e in epochs] == [1]
    assert set(trial.EPOCH_KEYS) | set(trial.VAL_KEYS) <= set(epochs[0])
    assert summary["status"] == "finished" and Path(summary["checkpoint"]).is_file()
    assert out.stat().st_size < 200_000  # a report, not a log dump
    assert not error_outputs(out)
    mimetypes = {m for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", []) for m in o.get("data", {})}
    assert {"image/png", "image/jpeg", "text/html"} <= mimetypes  # curves and CMC, ranked gallery, tables

    # The report exports to HTML with inputs hidden (report mode): figures embedded, no code.
    from nbconvert import HTMLExporter

    html, _ = HTMLExporter(exclude_input=True).from_filename(str(out))
    assert "data:image/jpeg;base64" in html and "data:image/png;base64" in html
    assert "make_data_loaders" not in html and "val/mAP" in html
    # what produced it, and metrics as researchers read them
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert head in html and ">seed<" in html and ">host<" in html and ">device<" in html
    assert re.search(r">\d+\.\d%<", html) and "val: untrained" in html


def test_scraps_reach_the_file_while_the_trial_runs_and_stop_ends_it(tmp_path, tiny_config):
    out, output_dir = tmp_path / "live.ipynb", tmp_path / "trial"
    on_disk_during_run = []

    def on_scrap(name, data):
        if name == trial.epoch_scrap_name(1):
            scraps = trial.scraps_in(nbformat.read(out, as_version=4))
            on_disk_during_run.append(sorted(scraps))
            trial.request_stop(output_dir)

    outcome = execute_notebook(NOTEBOOK, out, {"config_file": str(tiny_config), "max_epochs": 5,
                                               "output_dir": str(output_dir)}, on_scrap=on_scrap, cwd=REPO)
    assert outcome.error is None
    # epoch 1 was saved to the notebook file before the trial went on, and no summary existed yet
    assert on_disk_during_run == [[trial.CONFIG, trial.epoch_scrap_name(1)]]
    _, epochs, summary = trial.read_trial_notebook(out)
    assert summary["status"] == "stopped_early"
    assert summary["epochs_run"] == len(epochs) <= 2  # the stop lands within one epoch


def test_bad_parameter_is_one_readable_line(tmp_path, tiny_config):
    out = tmp_path / "bad.ipynb"
    outcome = execute_notebook(NOTEBOOK, out, {"config_file": str(tiny_config), "overrides": {"SOLVER.BASE_RL": 0.1}},
                               cwd=REPO)
    assert outcome.error == "ConfigError: SOLVER.BASE_RL: not a config key or alias; did you mean 'SOLVER.BASE_LR'?"
    [error] = error_outputs(out)
    assert error["traceback"] == ["ConfigError: SOLVER.BASE_RL: not a config key or alias; did you mean 'SOLVER.BASE_LR'?"]


def test_string_parameters_are_data_not_code(tmp_path):
    marker = tmp_path / "PWNED"
    hostile = f'x"; import pathlib; pathlib.Path("{marker}").touch(); y = "\n\'\'\''
    out = tmp_path / "hostile.ipynb"
    proc = papermill_cli(str(NOTEBOOK), str(out), "-p", "config_file", hostile)
    assert proc.returncode != 0  # the notebook fails: no such config file ...
    assert not marker.exists()  # ... and nothing in the string ran
    [error] = error_outputs(out)
    assert error["ename"] == "ConfigError" and "config file not found" in error["evalue"]
    outcome = execute_notebook(NOTEBOOK, tmp_path / "api.ipynb", {"config_file": hostile}, cwd=REPO)
    assert "config file not found" in outcome.error and not marker.exists()


def test_every_notebook_parameter_has_its_help_in_help_notebook():
    """``papermill --help-notebook`` lists each parameter of every notebook we ship with its comment
    (papermill drops a line whose comment holds a second '=')."""
    import papermill

    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        [cell] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        declared = {m.group(1) for line in cell.source.splitlines() if (m := re.match(r"^(\w+)\s*(:[^=]*)?=", line))}
        inferred = papermill.inspect_notebook(str(path))
        assert set(inferred) == declared, path.name
        assert all(p["help"] for p in inferred.values()), path.name
