"""What a researcher reads at a glance in the analysis and trial reports: mAP and rank-k in % (stored as
fractions), legible figures with whole epochs from the untrained epoch 0, log axes for log-distributed
parameters, no constant parameters, no warnings, paths as whole links, n/a for a CPU's peak memory,
one name ("untrained") for the evaluation before training, and a report that says what produced it."""
from __future__ import annotations

import subprocess
import warnings
from itertools import pairwise

import pytest
from conftest import REPO

from reidlib import analysis, rates, report
from reidlib.sweep.ledger import FINISHED, Ledger
from reidlib.wandb_run import flat_summary

SPEC = {"method": "random", "metric": {"name": "val/mAP", "goal": "maximize"},
        "parameters": {"base_lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1},
                       "weight_decay": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-3},
                       "margin": {"values": [0.3]},  # searched, but every trial drew the same value
                       "max_epochs": {"value": 3}}}
TRIALS = [  # name, base_lr, weight_decay, val/mAP per epoch
    ("trial-001", 3e-4, 1.1e-4, [0.21, 0.35, 0.40]),  # weight decay within a decade, as the demo's drew it
    ("trial-002", 1e-3, 3.2e-4, [0.30, 0.5123, 0.6123]),
    ("trial-003", 2e-2, 1.9e-4, [0.10, 0.15, 0.18]),
    ("trial-004", 5e-5, 2.1e-4, [0.05, 0.09, 0.12]),
]
UNTRAINED = 0.031


@pytest.fixture
def sweep(tmp_path):
    """Four finished CPU trials of 3 epochs that evaluated the untrained network, stored as the
    trial notebook stores them (fractions, peak memory None on a CPU)."""
    ledger = Ledger.create(tmp_path, "fig1", "figures", SPEC)
    for seq, (name, lr, wd, maps) in enumerate(TRIALS, 1):
        ledger.insert_trial(name, seq, "running", {"base_lr": lr, "weight_decay": wd, "margin": 0.3, "max_epochs": 3})
        for epoch, value in enumerate(maps, 1):
            ledger.add_epoch(name, {"epoch": epoch, "train/loss": 2.0 / epoch, "time/epoch_s": 1.0,
                                    "gpu/peak_mem_mb": None, "val/mAP": value, "val/rank1": value + 0.1})
        ledger.end_trial(name, FINISHED, {
            "status": "finished", "epochs_run": 3, "max_epochs": 3, "wall_time_s": 3.5, "peak_mem_mb": None,
            "val_ids": 2, "best": {"val/mAP": max(maps), "val/rank1": max(maps) + 0.1},
            "last": {"val/mAP": maps[-1]}, "untrained": {"val/mAP": UNTRAINED}, "test": {"test/mAP": maps[-1] - 0.01},
            "checkpoint": str(tmp_path / "trials" / name / "checkpoint.pth")}, None)
        ledger.update_trial(name, notebook=str(tmp_path / "trials" / f"{name}.ipynb"))
    ledger.close()
    return analysis.open_sweep(tmp_path)


def drawn(fig):
    fig.canvas.draw()  # tick labels exist once drawn
    return fig


def test_metrics_read_in_percent_while_the_tables_keep_fractions(sweep):
    board = analysis.leaderboard(sweep)
    assert board.loc["trial-002", "val/mAP"] == 0.6123  # the data: a fraction, as stored
    shown = analysis.show(board).to_html()
    assert "61.2%" in shown and "71.2%" in shown and "60.2%" in shown  # val/mAP, val/rank1, test/mAP
    assert "0.6123" not in shown
    assert "0.001" in shown  # a parameter is not a metric
    best = analysis.show(analysis.best_run_table(sweep)).to_html()
    assert "61.2%" in best and "3.1%" in best  # the best epoch's and the untrained network's
    assert "val/mAP 61.2% (test/mAP 60.2%)" in analysis.overview(sweep)
    evaluation = report.evaluation_table({"best": {"val/mAP": 0.6123}, "untrained": {"val/mAP": UNTRAINED}})
    assert evaluation.data.loc["mAP", "val: best epoch"] == 0.6123 and "61.2%" in evaluation.to_html()


def test_figures_are_legible_with_whole_epochs(sweep):
    curves = drawn(analysis.plot_curves(sweep))
    parameters = drawn(analysis.plot_parameters(sweep))
    for fig in (curves, parameters):
        for ax in fig.axes:
            labels = [t for t in ax.get_xticklabels() + ax.get_yticklabels() if t.get_text()]
            assert labels and min(t.get_fontsize() for t in labels) >= report.FONT["tick"]
            assert ax.title.get_fontsize() >= report.FONT["title"] or not ax.get_title()
    for ax in curves.axes:
        visible = [x for x in ax.get_xticks() if ax.get_xlim()[0] <= x <= ax.get_xlim()[1]]
        assert visible and all(float(x).is_integer() for x in visible)
    assert curves.axes[0].get_yticklabels()[1].get_text().endswith("%")


def test_curves_start_with_the_untrained_network_at_epoch_0(sweep):
    metric_axes, loss_axes = analysis.plot_curves(sweep).axes
    for line in metric_axes.lines:
        assert list(line.get_xdata())[:2] == [0, 1] and line.get_ydata()[0] == UNTRAINED
    assert all(next(iter(line.get_xdata())) == 1 for line in loss_axes.lines)  # no training loss before training
    history = drawn(report.plot_history([{"epoch": 1, "train/loss": 1.0, "val/mAP": 0.2, "val/rank1": 0.3}],
                                        untrained={"val/mAP": UNTRAINED, "val/rank1": 0.05}))
    validation = next(ax for ax in history.axes if ax.get_title() == "validation")
    assert [list(line.get_xdata()) for line in validation.lines] == [[0, 1], [0, 1]]


def test_log_distributed_parameters_get_log_axes_and_constant_ones_are_left_out(sweep):
    fig = drawn(analysis.plot_parameters(sweep))
    scatters = {ax.get_xlabel(): ax for ax in fig.axes[1:]}
    assert set(scatters) == {"base_lr", "weight_decay"}  # margin took one value: no scatter
    assert all(ax.get_xscale() == "log" for ax in scatters.values())
    for ax in fig.axes:  # no tick label runs into the next one
        boxes = sorted((t.get_window_extent() for t in ax.get_xticklabels() if t.get_text()), key=lambda b: b.x0)
        assert len(boxes) >= 2 and not any(a.x1 > b.x0 for a, b in pairwise(boxes))
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["base_lr", "weight_decay", "val/mAP"]
    importance = analysis.parameter_importance(sweep)
    assert set(importance.index) == {"base_lr", "weight_decay"}
    assert "margin" in analysis.numeric_parameters(sweep)  # searched and numeric: left out for being constant


def test_no_warnings_from_the_analysis(sweep):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        drawn(analysis.plot_curves(sweep))
        drawn(analysis.plot_parameters(sweep))
        analysis.show(analysis.parameter_importance(sweep)).to_html()
        analysis.show(analysis.cost_table(sweep)).to_html()
    assert [str(w.message) for w in caught] == []


def test_a_metric_every_trial_tied_on_has_no_correlation_and_no_warning(tmp_path):
    ledger = Ledger.create(tmp_path, "tie", "tie", SPEC)
    for seq, (name, lr, wd, _) in enumerate(TRIALS, 1):
        ledger.insert_trial(name, seq, "running", {"base_lr": lr, "weight_decay": wd, "margin": 0.3})
        ledger.end_trial(name, FINISHED, {"status": "finished", "best": {"val/mAP": 0.25}}, None)
    ledger.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        importance = analysis.parameter_importance(analysis.open_sweep(tmp_path))
    assert importance["correlation"].isna().all() and [str(w.message) for w in caught] == []


def test_paths_are_whole_links_relative_to_the_notebook(sweep, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("reidlib.trial._kernel_start_dir", None)  # a kernel started here
    shown = analysis.show(analysis.best_run_table(sweep)).to_html()
    assert '<a href="trials/trial-002.ipynb">trials/trial-002.ipynb</a>' in shown
    assert '<a href="trials/trial-002/checkpoint.pth">trials/trial-002/checkpoint.pth</a>' in shown
    assert "..." not in shown
    monkeypatch.setattr("reidlib.trial._kernel_start_dir", tmp_path / "notebooks")  # a kernel started beside
    assert report.link(tmp_path / "trials" / "trial-002.ipynb") == \
        '<a href="../trials/trial-002.ipynb">trials/trial-002.ipynb</a>'


def test_peak_memory_is_na_on_a_cpu(sweep):
    import torch

    from reidlib.engine.trainer import _peak_mem_mb

    assert _peak_mem_mb(torch.device("cpu")) is None
    costs = analysis.cost_table(sweep)
    assert costs.loc["trial-001", "device"] == "CPU" and costs["peak_mem_mb"].isna().all()
    assert "n/a" in analysis.show(costs).to_html()
    for stored in (None, 0.0):  # 0.0: what trials wrote on a CPU before
        table = report.summary_table({"status": "finished", "peak_mem_mb": stored})
        assert table.data.loc["peak_mem_mb", "value"] is None and "n/a" in table.to_html()
    assert report.summary_table({"peak_mem_mb": 812.5}).data.loc["peak_mem_mb", "value"] == 812.5


def test_untrained_is_the_one_name_and_older_initial_keys_still_read():
    from types import SimpleNamespace

    from reidlib.trial import make_summary

    result = SimpleNamespace(status="finished", epochs_run=1, wall_time_s=1.0, peak_mem_mb=None, checkpoint=None,
                             error=None, history=[{"epoch": 1, "val/mAP": 0.2}], untrained={"val/mAP": UNTRAINED},
                             test={}, val_ids=2, cmc=[])
    summary = make_summary(result, 1)
    assert summary["untrained"] == {"val/mAP": UNTRAINED} and "initial" not in summary
    old = {"status": "finished", "initial": {"val/mAP": UNTRAINED}}
    assert flat_summary(old)["untrained/val/mAP"] == UNTRAINED and "initial/val/mAP" not in flat_summary(old)
    for stored in (summary, old):
        table = report.evaluation_table(stored)
        assert table.data.loc["mAP", "val: untrained"] == UNTRAINED
        assert "initial" not in report.summary_table(stored).to_html()


def test_run_metadata_says_commit_date_seed_host_and_device(tiny_config):
    import socket
    from datetime import datetime, timezone

    from reidlib.trial import build_config

    cfg = build_config(str(tiny_config), {"SEED": 7, "MODEL.DEVICE": "cpu"})
    meta = report.run_metadata(cfg)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert meta["commit"].split()[0] == head
    assert abs((datetime.now(timezone.utc) - datetime.fromisoformat(meta["date"])).total_seconds()) < 60
    assert (meta["seed"], meta["host"]) == (7, socket.gethostname()) and meta["device"].startswith("cpu")
    assert set(report.environment_table(cfg).data.index) >= {"commit", "date", "seed", "host", "device"}


def test_commit_of_a_directory_outside_git_is_unknown(tmp_path):
    assert report.git_commit(tmp_path).startswith("unknown")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a.txt").write_text("a")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert report.git_commit(tmp_path) == head
    (tmp_path / "a.txt").write_text("b")
    assert report.git_commit(tmp_path) == f"{head} (with uncommitted changes)"


def test_ranking_metric_labels():
    assert all(rates.is_rate(label) for label in ("val/mAP", "mINP", "rank10", "its test/mAP", "untrained/val/rank1"))
    assert not any(rates.is_rate(label) for label in ("val_ids", "Kendall's tau, val/mAP vs test/mAP (4 finished runs)",
                                                      "train/loss", "rank", 3, None))
    assert rates.percent(0.61234) == "61.2%" and rates.percent(None) == "n/a" and rates.percent(float("nan")) == "n/a"



def test_the_html_report_reads_in_percent(sweep):
    from reidlib.analysis.export import build_html_report

    index = build_html_report(sweep).read_text()
    assert "<td>61.2%</td>" in index and "<td>0.001</td>" in index and "0.6123" not in index


def test_status_prints_metrics_in_percent_as_the_notebook_shows_them(sweep, capsys):
    from reidlib import cli

    assert cli.main(["status", str(sweep.directory)]) == 0
    out = capsys.readouterr().out
    assert "61.2%" in out and "71.2%" in out and "60.2%" in out  # val/mAP, val/rank1, test/mAP of trial-002
    assert "0.6123" not in out and "0.001" in out  # a parameter is not a metric
    assert "best so far: trial-002 val/mAP 61.2%" in out


def test_plain_text_tables_format_as_the_html_ones():
    import pandas as pd

    frame = pd.DataFrame({"val/mAP": [0.61234, float("nan")], "train/loss": [0.123456, 2.0]}, index=["a", "b"])
    lines = report.as_text(frame).splitlines()
    assert lines[1].split() == ["a", "61.2%", "0.1235"] and lines[2].split() == ["b", "n/a", "2"]
    rows = pd.DataFrame({"value": [0.5, 3e-4]}, index=["val/rank1", "base_lr"])  # rates named by the row
    assert report.as_text(rows, header=False).split() == ["val/rank1", "50.0%", "base_lr", "0.0003"]
