"""Running a committed notebook and saving it leaves no git diff: the Jupyter server of ``make lab``
(the repo's jupyter_server_config.py) saves notebooks git tracks without their run state, and keeps
the outputs of notebooks it does not track (executed trials under runs/). No browser: the same
contents manager JupyterLab saves through, in JupyterLab's own environment (.venv-lab)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
from conftest import REPO, lab_python

SAVE = """
import json, sys
from jupyter_server.services.contents.largefilemanager import LargeFileManager
from traitlets.config.loader import PyFileConfigLoader
repo, root = sys.argv[1:3]
manager = LargeFileManager(config=PyFileConfigLoader("jupyter_server_config.py", repo).load_config(), root_dir=root)
for model, path in json.load(sys.stdin):
    manager.save(model, path)
"""


def lab_save(root: Path, *saves: tuple[dict, str]) -> None:
    """Save ``(model, path)``s through the contents manager JupyterLab saves through (the synchronous
    twin of its default), configured by the repo's jupyter_server_config.py as ``make lab`` does."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the pre-save hook, as make lab finds it
    subprocess.run([lab_python(), "-c", SAVE, str(REPO), str(root)], input=json.dumps(saves), text=True,
                   env=env, check=True)


def git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)


@pytest.fixture
def repository(tmp_path):
    """A fresh git repository holding a copy of the committed notebooks."""
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "notebooks")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "notebook")
    return tmp_path


def run_state(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``notebook`` as JupyterLab saves it after running every cell (and scrolling one output)."""
    notebook = nbformat.from_dict(notebook)
    notebook.metadata["language_info"] = {"name": "python", "version": "3.11.7", "mimetype": "text/x-python",
                                          "codemirror_mode": {"name": "ipython", "version": 3}}
    notebook.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    for count, cell in enumerate(c for c in notebook.cells if c.cell_type == "code"):
        cell.execution_count = count + 1
        cell.outputs = [nbformat.v4.new_output("stream", text="trial-001 finished\n"),
                        nbformat.v4.new_output("display_data", {"text/html": "<table></table>"})]
        cell.metadata["execution"] = {"iopub.execute_input": "2026-12-01T06:00:00Z"}
        cell.metadata["scrolled"] = True
    return notebook


@pytest.mark.parametrize("name", ["sweep.ipynb", "analysis.ipynb"])
def test_a_committed_notebook_saved_after_running_leaves_no_diff(repository, name):
    root = repository
    path = f"notebooks/{name}"
    committed = nbformat.read(root / path, as_version=4)
    ran = run_state(committed)
    assert ran != committed
    lab_save(root, ({"type": "notebook", "format": "json", "content": ran}, path))
    assert subprocess.run(["git", "diff", "--exit-code", "--stat"], cwd=root, check=False).returncode == 0
    # the cells, their ids and tags are the user's: kept
    saved = nbformat.read(root / path, as_version=4)
    assert [(c.id, c.source, c.metadata.get("tags")) for c in saved.cells] == \
        [(c.id, c.source, c.metadata.get("tags")) for c in ran.cells]


def test_an_untracked_notebook_keeps_its_outputs(repository):
    """Executed trial notebooks (runs/ is git-ignored) are reports: saved as they are."""
    root = repository
    ran = run_state(nbformat.read(root / "notebooks" / "sweep.ipynb", as_version=4))
    lab_save(root, ({"type": "directory"}, "runs"),
             ({"type": "notebook", "format": "json", "content": ran}, "runs/trial-001.ipynb"))
    saved = nbformat.read(root / "runs" / "trial-001.ipynb", as_version=4)
    assert saved == ran


def test_a_notebook_outside_any_repository_keeps_its_outputs(tmp_path):
    ran = run_state(nbformat.read(REPO / "notebooks" / "sweep.ipynb", as_version=4))
    lab_save(tmp_path, ({"type": "notebook", "format": "json", "content": ran}, "copy.ipynb"))
    assert nbformat.read(tmp_path / "copy.ipynb", as_version=4) == ran
