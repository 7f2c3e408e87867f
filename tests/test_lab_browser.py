"""notebooks/sweep.ipynb as a researcher runs it: in JupyterLab (on a free local port, the repo's
server settings), in headless Chromium (conftest's ``browser``), cell by cell, on a 2-trial sweep of
fake trials. While the run cell runs, the epoch bar of the running trial moves and the leaderboard
shows a row; interrupting it stops calmly (no traceback, the bar says so) and running it again resumes
the same sweep with its leaderboard at once; a trial's link opens its notebook in JupyterLab; saving
the notebook leaves no git diff.

Screenshots of each step go to ``$REID_SWEEP_SCREENSHOTS`` when it is set; on a failure, one of the
page goes there (or to the test's temp dir), with the server's log."""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
import yaml
from conftest import REPO, lab_python
from helpers.fake_trial import write_fake_trial
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

MAX_EPOCHS, EPOCH_SECONDS, LRS = 3, 1.5, [0.001, 0.01]
WAIT_S = 180  # the longest wait for one step (a trial's kernel starting) on a loaded 2-core machine
BAR = re.compile(r"^(.*?):.*?(\d+)/(\d+|\?)", re.DOTALL)  # tqdm's "desc: pct ... n/total [elapsed<remaining, ...]"

# What the page shows of the notebook's code cells, in order (JupyterLab 4's DOM).
READ_CELLS = """return Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell'),
  cell => ({prompt: cell.querySelector('.jp-InputPrompt').innerText.trim(),
            text: Array.from(cell.querySelectorAll('.jp-OutputArea-output'), o => o.innerText).join('\\n'),
            bars: Array.from(cell.querySelectorAll('.jp-OutputArea-output .widget-hbox'), b => b.innerText),
            rows: Array.from(cell.querySelectorAll('.jp-OutputArea-output tr'), r => r.innerText)
                       .filter(t => /trial-\\d+/.test(t)),
            links: Array.from(cell.querySelectorAll('.jp-OutputArea-output a[href*=".ipynb"]'), a => a.href)}))"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory, tiny_config) -> Path:
    """JupyterLab's root: a git repository with a copy of notebooks/sweep.ipynb whose parameters
    (papermill's injected cell) name a 2-trial grid of fake trials writing under runs/."""
    import papermill

    root = tmp_path_factory.mktemp("lab")
    trial = write_fake_trial(root / "fake_trial.ipynb", epoch_seconds=EPOCH_SECONDS)
    spec = root / "sweeps" / "lab.yaml"
    spec.parent.mkdir()
    spec.write_text(yaml.safe_dump({
        "name": "lab", "method": "grid", "config_file": str(tiny_config), "notebook": str(trial),
        "results_dir_base": str(root / "runs"),
        "parameters": {"base_lr": {"values": LRS}, "max_epochs": MAX_EPOCHS}}))
    (root / "notebooks").mkdir()
    notebook = root / "notebooks" / "sweep.ipynb"
    papermill.execute_notebook(REPO / "notebooks" / "sweep.ipynb", notebook, {"spec": str(spec)}, prepare_only=True)
    nbformat.write(nbformat.read(notebook, as_version=4), notebook)  # as Jupyter writes it (a final newline)
    (root / ".gitignore").write_text("runs/\n.ipynb_checkpoints/\n")
    for command in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "lab"]):
        subprocess.run(["git", *command], cwd=root, check=True)
    return root


@pytest.fixture(scope="module")
def jupyterlab(lab_root, tmp_path_factory):
    """``make lab``'s server (the repo's jupyter_server_config.py, the project's kernel) on
    ``lab_root``, with a token, no browser, and no user settings; yields its URL and log."""
    home = tmp_path_factory.mktemp("jupyter-home")
    settings = {  # every cell's outputs stay in the page, not only those scrolled into view; no news
        "notebook-extension/tracker": {"windowingMode": "none"},  # nor update checks: there is no network
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}}
    for name, values in settings.items():
        path = home / "settings" / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_DATA_DIR": str(home / "data"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter"),  # the project's kernel
           "WANDB_MODE": "disabled"}
    port, token = free_port(), secrets.token_hex(16)
    log = home / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [lab_python(), "-m", "jupyterlab", f"--config={REPO / 'jupyter_server_config.py'}", "--no-browser",
             "--allow-root", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={lab_root}"], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"JupyterLab did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
    yield {"url": url, "token": token, "log": log}
    server.terminate()  # shuts its kernels down
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()


class Screenshots:
    """Named screenshots of the page (and of one cell, when given) into ``folder``."""

    def __init__(self, browser, folder: Path | None):
        self.browser, self.folder = browser, folder

    def take(self, name: str, element=None, folder: Path | None = None) -> None:
        folder = folder or self.folder
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        if element is not None:  # from its top: a screenshot has only what is in view
            self.browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", element)
        self.browser.save_screenshot(str(folder / f"{name}.png"))
        if element is not None:
            element.screenshot(str(folder / f"{name}-cell.png"))


@pytest.fixture
def screenshots(request, browser, jupyterlab, tmp_path):
    """Steps' screenshots to $REID_SWEEP_SCREENSHOTS (when set); on a failure, the page, what the
    cells show and the server's log there, or in the test's temp dir."""
    wanted = os.environ.get("REID_SWEEP_SCREENSHOTS")
    shots = Screenshots(browser, Path(wanted) if wanted else None)
    yield shots
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        folder = Path(wanted) if wanted else tmp_path / "screenshots"
        shots.take("failure", folder=folder)
        (folder / "cells.json").write_text(json.dumps(browser.execute_script(READ_CELLS), indent=1))
        shutil.copy(jupyterlab["log"], folder / "server.log")
        print(f"screenshots, the cells' outputs (cells.json) and the server's log: {folder}")


class SweepNotebook:
    """sweep.ipynb open in JupyterLab, driven with the keyboard and toolbar as a user would."""

    def __init__(self, browser):
        self.browser = browser
        self.wait = WebDriverWait(browser, WAIT_S, poll_frequency=0.2)

    def cells(self) -> list[dict]:
        return self.browser.execute_script(READ_CELLS)

    def cell_element(self, index: int):
        panel = self.browser.find_element(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden)")
        return panel.find_elements(By.CSS_SELECTOR, ".jp-CodeCell")[index]

    def run(self, index: int) -> None:
        """Select code cell ``index`` (command mode) and run it (Ctrl+Enter); returns once it started."""
        before = self.cells()[index]["prompt"]
        self.cell_element(index).find_element(By.CSS_SELECTOR, ".jp-InputPrompt").click()
        ActionChains(self.browser).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
        self.wait.until(lambda _: self.cells()[index]["prompt"] != before, f"cell {index} did not start")

    def finished(self, index: int) -> dict:
        """Wait until code cell ``index`` has run (its prompt shows a number); its state."""
        def ran(_):
            state = self.cells()[index]
            return state if re.fullmatch(r"\[\d+\]:", state["prompt"]) else None

        return self.wait.until(ran, f"cell {index} did not finish")

    def run_to_end(self, index: int) -> dict:
        self.run(index)
        state = self.finished(index)
        assert "Traceback" not in state["text"], state["text"]
        return state

    def interrupt(self) -> None:
        self.browser.find_element(
            By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) [data-jp-item-name='interrupt']").click()


def bars(state: dict) -> dict[str, int]:
    """A cell's progress bars (tqdm.auto's widgets) by description: {'sweep <id>': trials done,
    'trial-001': its epochs done, ...}."""
    found = (BAR.match(text) for text in state["bars"])
    return {" ".join(m[1].split()): int(m[2]) for m in found if m}


def sweep_bar(state: dict) -> int | None:
    return next((n for name, n in bars(state).items() if name.startswith("sweep ")), None)


def finished_rows(state: dict) -> list[str]:
    return [row for row in state["rows"] if re.search(r"\tfinished\t", row)]


def test_sweep_notebook_in_jupyterlab(browser, jupyterlab, lab_root, screenshots):
    browser.get(f"{jupyterlab['url']}/lab/tree/notebooks/sweep.ipynb?reset&token={jupyterlab['token']}")
    notebook = SweepNotebook(browser)
    notebook.wait.until(lambda _: "| Idle" in browser.find_element(By.CSS_SELECTOR, "#jp-main-statusbar").text,
                        "the kernel did not start")
    # Code cells as the file has them (the page draws only the editors in view)
    sources = [c.source for c in nbformat.read(lab_root / "notebooks" / "sweep.ipynb", as_version=4).cells
               if c.cell_type == "code"]
    assert len(notebook.cells()) == len(sources)
    run_cell = next(i for i, source in enumerate(sources) if "count=count" in source)  # the sweep's run
    for index in range(run_cell):  # parameters, the injected ones, the plan, the sweep
        notebook.run_to_end(index)
    screenshots.take("1-before-run", notebook.cell_element(run_cell))

    # The run cell: the running trial's epoch bar moves, and a leaderboard row shows, during the first trial
    notebook.run(run_cell)
    epochs_seen, row_seen = set(), False

    def first_trial_observed(_):
        nonlocal row_seen
        state = notebook.cells()[run_cell]
        if sweep_bar(state) == 0:  # no trial has ended
            if "trial-001" in bars(state):
                epochs_seen.add(bars(state)["trial-001"])
            row_seen = row_seen or bool(state["rows"])
        return len(epochs_seen) >= 2 and row_seen

    notebook.wait.until(first_trial_observed, "the first trial's epoch bar did not move or no leaderboard row "
                                              "showed while it ran")
    screenshots.take("2-during-first-trial", notebook.cell_element(run_cell))

    # Interrupted while the second trial runs: one calm line, the bar says so
    notebook.wait.until(lambda _: bars(notebook.cells()[run_cell]).get("trial-002", 0) >= 1,
                        "the second trial did not run an epoch")
    notebook.interrupt()
    state = notebook.finished(run_cell)
    screenshots.take("3-interrupted", notebook.cell_element(run_cell))
    assert "interrupted" in state["text"]
    assert "Traceback" not in state["text"] and "KeyboardInterrupt" not in state["text"], state["text"]

    # Run again: the same sweep resumes, its leaderboard is back before the resumed trial ends
    notebook.run(run_cell)

    def restored(_):
        state = notebook.cells()[run_cell]
        running = [n for name, n in bars(state).items() if name.startswith("trial-")]
        return state["prompt"] == "[*]:" and running and min(running) < MAX_EPOCHS and any(
            "trial-001" in row for row in finished_rows(state))

    notebook.wait.until(restored, "the resumed sweep's leaderboard did not show trial-001 while a trial ran")
    screenshots.take("4-resumed-running", notebook.cell_element(run_cell))
    state = notebook.finished(run_cell)
    screenshots.take("5-resumed-done", notebook.cell_element(run_cell))
    assert "Traceback" not in state["text"], state["text"]
    assert len(finished_rows(state)) == len(LRS), state["rows"]  # every grid point, once
    sweep_id = notebook.cells()[run_cell - 1]["text"].strip("'")  # the create cell shows it
    assert (lab_root / "runs" / sweep_id / "report" / "index.html").is_file()  # it ends as `reid-sweep run`
    assert (lab_root / "runs" / sweep_id / "best").is_dir()

    # The rest of the notebook runs; a trial's link (in the leaderboard or the summary) opens its
    # notebook in JupyterLab (not a 404)
    for index in range(run_cell + 1, len(sources)):
        notebook.run_to_end(index)
    link = browser.find_element(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) "
                                                 ".jp-OutputArea-output a[href*='trial-'][href*='.ipynb']")
    name = re.search(r"trial-\d+\.ipynb", link.get_attribute("href"))[0]
    opened_before = len(browser.window_handles)
    link.click()
    outcome = notebook.wait.until(lambda _: browser.execute_script(
        """const dialog = document.querySelector('.jp-Dialog');
           if (dialog) return 'dialog: ' + dialog.innerText;
           const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
           const tab = document.querySelector('.lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current');
           if (tab && tab.innerText.includes(arguments[0]) && panel && panel.querySelector('.jp-Cell'))
             return 'opened';""", name), f"{name} did not open")
    screenshots.take("6-trial-notebook")
    assert outcome == "opened", outcome
    assert len(browser.window_handles) == opened_before  # in JupyterLab, not a new browser tab

    # Saved after all this, the committed notebook has no diff
    browser.find_element(By.XPATH, "//li[contains(@class, 'lm-TabBar-tab')][contains(., 'sweep.ipynb')]").click()
    saved = (lab_root / "notebooks" / "sweep.ipynb").stat().st_mtime_ns
    notebook.cell_element(0).find_element(By.CSS_SELECTOR, ".jp-InputPrompt").click()
    ActionChains(browser).key_down(Keys.CONTROL).send_keys("s").key_up(Keys.CONTROL).perform()
    notebook.wait.until(lambda _: (lab_root / "notebooks" / "sweep.ipynb").stat().st_mtime_ns != saved, "not saved")
    assert notebook.cells()[run_cell]["rows"]  # the page keeps the outputs; the file does not
    diff = subprocess.run(["git", "status", "--porcelain"], cwd=lab_root, capture_output=True, text=True, check=True).stdout
    assert diff == "", diff
