"""Committed notebooks stay clean: a Jupyter server pre-save hook (``jupyter_server_config.py`` at
the project root names it; ``make lab`` starts JupyterLab with it) that saves every notebook git
tracks without what running it adds: outputs, execution counts, execution times, view state (scrolled,
collapsed), widget state and the kernel's language details. Notebooks git does not track, such as the
executed trial notebooks under ``runs/``, keep their outputs: they are reports."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

# Per-cell metadata that running or viewing a cell writes (JupyterLab's record_timing, the classic
# notebook's ExecuteTime extension, output scrolling and collapsing).
RUN_CELL_METADATA = ("execution", "ExecuteTime", "collapsed", "scrolled")


def is_tracked(path: Path) -> bool:
    """Whether git tracks ``path`` (False outside a repository or without git)."""
    try:
        return subprocess.run(["git", "ls-files", "--error-unmatch", "--", path.name], cwd=path.parent,
                              capture_output=True, check=False).returncode == 0
    except OSError:
        return False


def strip_run_state(notebook: dict[str, Any]) -> None:
    """Remove, in place, what running ``notebook`` adds to it (see the module docstring)."""
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
        for key in RUN_CELL_METADATA:
            cell.get("metadata", {}).pop(key, None)
    metadata = notebook.get("metadata", {})
    metadata.pop("widgets", None)
    if "language_info" in metadata:  # the running kernel's version, mimetype, lexer, ...: only the language stays
        metadata["language_info"] = {"name": metadata["language_info"].get("name", "python")}


def strip_committed_notebook(model: dict[str, Any], path: str, contents_manager: Any, **kwargs: Any) -> None:
    """``ContentsManager.pre_save_hook``: a notebook git tracks is saved without its run state."""
    if (model.get("type") == "notebook" and model.get("content") is not None
            and is_tracked(Path(contents_manager.root_dir, path.lstrip("/")))):
        strip_run_state(model["content"])
