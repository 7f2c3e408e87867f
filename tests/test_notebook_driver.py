"""What the driver notebook (``notebooks/sweep.ipynb``) shows and leaves, on fake trials (the real
trial contract, no training): bars and a leaderboard that move during a trial, report links that
open from the notebook's directory, a calm interrupt, and the CLI's end (best/, report/)."""
from __future__ import annotations

import html
import io
import re
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml
from conftest import REPO
from helpers.fake_trial import write_fake_trial
from tqdm import tqdm as text_tqdm

from reidlib import trial as contract
from reidlib import workflow
from reidlib.analysis import open_sweep, trial_links
from reidlib.sweep import progress, run_sweep
from reidlib.sweep.ledger import Ledger

HREF = re.compile(r'<a class="reid-report" href="([^"]+)"')


@pytest.fixture
def fake_spec(tmp_path, tiny_config):
    """``make(values, max_epochs, epoch_seconds)``: a grid spec over ``base_lr`` of fake trials."""

    def make(values, max_epochs=3, epoch_seconds=0.05) -> Path:
        write_fake_trial(tmp_path / "fake.ipynb", epoch_seconds=epoch_seconds)
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump({"config_file": str(tiny_config), "notebook": "fake.ipynb", "method": "grid",
                                        "parameters": {"base_lr": {"values": values}, "max_epochs": max_epochs}}))
        return path

    return make


class FakeDisplay:
    """``IPython.display.display`` for a leaderboard outside a kernel: each HTML shown or updated,
    with the time, and ``on_show`` called with it."""

    def __init__(self, on_show=None):
        self.shown: list[tuple[float, str]] = []
        self.on_show = on_show or (lambda text: None)

    def __call__(self, obj, display_id=None):
        self._show(obj)
        return self

    def update(self, obj):
        self._show(obj)

    def _show(self, obj):
        self.shown.append((time.time(), obj.data))
        self.on_show(obj.data)


def rows(table: str) -> dict[str, str]:
    """A leaderboard table's rows by trial name: the row's HTML."""
    return {re.search(r">(trial-\d+)", row).group(1): row for row in re.findall(r'<tr class="reid-trial.*?</tr>', table)}


def test_the_epoch_bar_and_the_leaderboard_move_during_a_trial(fake_spec, tmp_path, monkeypatch):
    """In a terminal: the trial's epoch bar counts its epochs with its latest val/mAP, the sweep's
    clock ticks between epochs, and the leaderboard shows the running trial's epochs before it ends."""
    import IPython.display

    refreshes = []

    class RecordedBar(text_tqdm):  # the text bars reid-sweep run shows, drawn into a buffer
        def __init__(self, *args, **kwargs):
            super().__init__(*args, file=io.StringIO(), **kwargs)

        def refresh(self, *args, **kwargs):
            refreshes.append((time.time(), self.desc, self.n, self.total, str(self.postfix),
                              self.format_dict["elapsed"]))
            return super().refresh(*args, **kwargs)

    monkeypatch.setattr(progress, "tqdm", RecordedBar)
    display = FakeDisplay()
    monkeypatch.setattr(IPython.display, "display", display)
    from reidlib.analysis import LiveLeaderboard

    board = LiveLeaderboard(link_base=tmp_path)
    result = run_sweep(fake_spec([1e-3], max_epochs=4, epoch_seconds=1.0), runs_dir=tmp_path / "runs",
                       project_dir=tmp_path, wandb="disabled", on_update=board.update)
    [trial] = result.trials
    during = [r for r in refreshes if trial.started < r[0] < trial.ended]
    epoch_bar = [(n, total, postfix) for _, desc, n, total, postfix, _ in during if desc == "trial-001"]
    assert {n for n, _, _ in epoch_bar} >= {1, 2, 3} and {total for _, total, _ in epoch_bar} == {4}
    assert any(n == 2 and "val/mAP 50.0%" in postfix and "train/loss 0.5" in postfix for n, _, postfix in epoch_bar)
    sweep_clock = {round(elapsed) for _, desc, n, _, _, elapsed in during if desc.startswith("sweep") and n == 0}
    assert len(sweep_clock) >= 3  # redrawn each second while the trial runs, not only when it ends

    boards = [rows(text) for shown_at, text in display.shown if shown_at < trial.ended]
    assert boards[0] == {}  # a new sweep: shown at once, empty
    live = [row["trial-001"] for row in boards if "trial-001" in row and "reid-running" in row["trial-001"]]
    assert any("<td>2</td>" in row and "50.0%" in row for row in live)  # epoch 2 of 4, val/mAP so far
    assert 'href="runs/' in live[-1]


def test_trial_links_are_relative_to_the_notebooks_directory(fake_spec, tmp_path, monkeypatch):
    """JupyterLab resolves a link in an output against the notebook's directory (an absolute file
    path is a 404 there), as a browser does in the notebook exported to HTML beside it."""
    result = run_sweep(fake_spec([1e-3, 1e-2]), runs_dir=tmp_path / "runs", project_dir=tmp_path, wandb="disabled",
                       progress=False)
    notebooks = {Path(t.notebook).resolve() for t in result.trials}
    base = tmp_path / "notebooks"
    hrefs = HREF.findall(trial_links(open_sweep(result.directory), link_base=base).data)
    assert len(hrefs) == 2 and not any(h.startswith(("/", "file:")) for h in hrefs)
    assert {(base / unquote(html.unescape(h))).resolve() for h in hrefs} == notebooks
    assert all(h.startswith(f"../runs/{result.sweep_id}/trials/trial-00") for h in hrefs)

    # by default, the directory the kernel started in: Jupyter starts a notebook's there, before
    # use_project_root moves to the project root
    monkeypatch.setattr(contract, "_kernel_start_dir", None)
    monkeypatch.chdir(REPO / "notebooks")
    assert contract.use_project_root() == REPO
    hrefs = HREF.findall(trial_links(open_sweep(result.directory)).data)
    assert {(REPO / "notebooks" / unquote(html.unescape(h))).resolve() for h in hrefs} == notebooks


def test_an_interrupt_is_one_line_and_the_resumed_board_shows_the_trials_at_once(fake_spec, tmp_path, monkeypatch,
                                                                               capsys):
    """The run cell interrupted: one line (what was kept, how to resume), no traceback, the bar says
    'interrupted' in the warning colour, not an error's red. Run again: the leaderboard shows the
    kept trials before any trial ends, and the sweep ends as reid-sweep run's does (best/, report/)."""
    import IPython.display
    import tqdm.notebook

    bars = []

    class WidgetBar(tqdm.notebook.tqdm):  # what JupyterLab shows
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(tqdm.notebook, "display", lambda *args, **kwargs: None)  # no kernel to show widgets in
    monkeypatch.setattr(progress, "tqdm", WidgetBar)

    interrupted = []

    def interrupt_at_the_first_epoch(table):
        if not interrupted and "reid-running" in table and "<td>1</td>" in table:
            interrupted.append(table)
            raise KeyboardInterrupt  # what the kernel raises in the cell's thread at the user's interrupt

    monkeypatch.setattr(IPython.display, "display", FakeDisplay(interrupt_at_the_first_epoch))
    spec = fake_spec([1e-3, 1e-2], max_epochs=4, epoch_seconds=0.5)
    options = {"runs_dir": tmp_path / "runs", "project_dir": tmp_path, "wandb": "disabled"}
    assert workflow.run_in_notebook(spec, **options) is None
    out, err = capsys.readouterr()
    [sweep_dir] = (tmp_path / "runs").iterdir()
    assert [line for line in (out + err).splitlines() if line.strip()] == [(
        f"interrupted: sweep {sweep_dir.name} keeps its trials (1 stopped) in {sweep_dir}; run this cell again "
        f"(or reid-sweep resume {sweep_dir.name}) to resume it")]
    sweep_bar = bars[0].container.children
    assert sweep_bar[1].bar_style == "warning" and "interrupted" in sweep_bar[2].value

    display = FakeDisplay()
    monkeypatch.setattr(IPython.display, "display", display)
    result = workflow.run_in_notebook(spec, sweep_id=sweep_dir.name, **options)
    first_trial_end = min(t.ended for t in Ledger(sweep_dir / "sweep.db").trials() if t.name != "trial-001")
    shown_at, first = display.shown[0]
    assert shown_at < first_trial_end and "reid-stopped" in rows(first)["trial-001"]
    assert [t.state for t in result.trials] == ["stopped", "finished", "finished"]
    assert (sweep_dir / "best" / "summary.json").is_file() and (sweep_dir / "report" / "index.html").is_file()
    assert (sweep_dir / "report" / "analysis.ipynb").is_file()
    assert bars[2].container.children[1].bar_style == "success"  # the resumed run's sweep bar
