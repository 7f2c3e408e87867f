"""What a trial's end becomes, everywhere it is read: its state (one vocabulary for the trial, the
ledger and W&B), its best value of the sweep's metric (any metric, either goal), and its W&B run,
written by the one writer for sweep and standalone trials alike (wandb patched at its edge)."""
from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest
import wandb
import yaml
from helpers.fake_trial import write_fake_trial
from helpers.wandb_offline import read_run

from reidlib import trial as contract
from reidlib.analysis import leaderboard, open_local_sweep
from reidlib.sweep import run_sweep
from reidlib.sweep.bridge import TrialBridge, WandbOutage
from reidlib.sweep.ledger import Ledger
from reidlib.trial import (
    TrialState,
    TrialStatus,
    best_row,
    build_config,
    callbacks,
    make_summary,
)


class FakeRun:
    """What ``wandb.init`` returns, as far as a writer uses it."""

    def __init__(self, directory: Path, fail_on_log: bool = False):
        self.dir, self.fail_on_log = str(directory), fail_on_log
        self.config, self.summary, self.logged, self.exit_code = {}, {}, [], None

    def define_metric(self, *args, **kwargs):
        pass

    def log(self, row):
        if self.fail_on_log:
            raise ConnectionError("W&B is down")
        self.logged.append(row)

    def finish(self, exit_code=0):
        self.exit_code = exit_code


@pytest.fixture
def wandb_init(monkeypatch, tmp_path):
    """``wandb.init`` patched: the keyword arguments of each call, and the runs handed out."""
    calls = SimpleNamespace(kwargs=[], runs=[], fail_on_log=False)

    def init(**kwargs):
        calls.kwargs.append(kwargs)
        calls.runs.append(FakeRun(tmp_path, calls.fail_on_log))
        return calls.runs[-1]

    monkeypatch.setattr(wandb, "init", init)
    for name in ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return calls


def epoch_row(epoch: int, mAP: float, loss: float) -> dict:
    return {"epoch": epoch, "train/loss": loss, "train/acc": 0.5, "train/lr": 1e-3, "time/epoch_s": 1.0,
            "gpu/peak_mem_mb": 0.0, "val/mAP": mAP, "val/mINP": mAP / 2, "val/rank1": mAP, "val/rank5": mAP,
            "val/rank10": mAP}


def train_result(history: list[dict], status: str = TrialStatus.FINISHED) -> SimpleNamespace:
    """A ``TrainResult`` without training (what ``make_summary`` reads)."""
    return SimpleNamespace(status=status, history=history, epochs_run=len(history), wall_time_s=1.0, peak_mem_mb=0.0,
                           checkpoint=None, error=None, untrained={}, test={"test/mAP": 0.3}, val_ids=2, cmc=[0.5])


# --- one state vocabulary ----------------------------------------------------------------------


@pytest.mark.parametrize("status, errored, state, exit_code", [
    ("finished", False, "finished", 0), ("stopped_early", False, "stopped", 0), ("diverged", False, "failed", 1),
    ("oom", False, "failed", 1), ("failed", False, "failed", 1), ("finished", True, "failed", 1), (None, False, "failed", 1)])
def test_a_trials_own_status_gives_its_sweep_state_and_wandb_exit_code(status, errored, state, exit_code):
    derived = TrialState.of(status, errored)
    assert derived == state and derived.exit_code == exit_code


def test_wandb_run_states_read_as_ours():
    assert [TrialState.of_wandb_run(s) for s in ("finished", "Running", "killed", "preempted", "crashed", "failed")] == \
        ["finished", "running", "stopped", "crashed", "crashed", "failed"]


def test_the_ledger_keeps_its_state_strings_on_disk_and_reads_old_rows(tmp_path):
    """Ledgers written before the enum read the same, and the file holds the same strings."""
    ledger = Ledger.create(tmp_path, "s1", "s1", {"method": "grid"})
    trial = ledger.claim_trial(lambda trials: ({"base_lr": 0.1}, None))
    ledger.end_trial(trial.name, TrialState.STOPPED, {"status": TrialStatus.STOPPED_EARLY}, "hyperband")
    ledger.insert_trial("trial-002", 2, "crashed", {"base_lr": 0.2})  # as an older driver wrote it
    [first, second] = ledger.trials()
    ledger.close()
    assert (first.state, second.state) == (TrialState.STOPPED, TrialState.CRASHED)
    assert isinstance(second.state, TrialState) and not second.state.completed
    db = sqlite3.connect(tmp_path / "sweep.db")
    assert db.execute("SELECT state, typeof(state), summary FROM trials ORDER BY seq").fetchall() == [
        ("stopped", "text", '{"status": "stopped_early"}'), ("crashed", "text", None)]


# --- one "best", for any metric and goal ----------------------------------------------------------


def test_the_best_of_a_history_follows_the_goal_and_passes_over_missing_values():
    history = [{"epoch": 1, "train/loss": 2.0}, {"epoch": 2, "train/loss": float("nan")},
               {"epoch": 3, "train/loss": 0.5, "val/mAP": 0.2}, {"epoch": 4, "train/loss": 0.7, "val/mAP": 0.4}]
    assert best_row(history, "train/loss", "minimize")["epoch"] == 3
    assert best_row(history, "train/loss", "maximize")["epoch"] == 1
    assert best_row(history)["epoch"] == 4  # val/mAP, maximize
    assert best_row(history, "val/mINP") is None


def bridged_sweep(tmp_path: Path, metric: dict, trials: dict[str, list[dict]]) -> Path:
    """A sweep whose trials went through the real bridge and ledger (no kernels): each sends its
    epochs and the summary a training notebook makes, then ends finished."""
    sweep_dir = tmp_path / "runs" / "s1"
    sweep_dir.mkdir(parents=True)
    ledger = Ledger.create(sweep_dir, "s1", "s1", {"method": "grid", "metric": metric, "parameters": {}})
    for name, history in trials.items():
        trial = ledger.claim_trial(lambda _trials, name=name: ({"point": name}, None))
        bridge = TrialBridge(ledger, trial, None, WandbOutage(), metric=metric)
        for row in history:
            bridge.on_scrap(contract.epoch_scrap_name(row["epoch"]), row)
        bridge.on_scrap(contract.SUMMARY, make_summary(train_result(history), max_epochs=len(history)))
        bridge.close(TrialState.FINISHED, None)
    ledger.close()
    return sweep_dir


def test_a_sweep_minimizing_train_loss_names_its_best_run(tmp_path):
    """The metric is not val/mAP-shaped: the best run is still found, by its lowest loss, and shown."""
    losses = {"a": [3.0, 1.0, 2.5], "b": [2.0, 1.5, 0.5], "c": [0.8, 1.9, 2.9]}
    sweep_dir = bridged_sweep(tmp_path, {"name": "train/loss", "goal": "minimize"}, {
        name: [epoch_row(i, 0.1 * i, loss) for i, loss in enumerate(values, 1)] for name, values in losses.items()})
    sweep = open_local_sweep(sweep_dir)
    best = sweep.best_run()
    assert best is not None and best.config == {"point": "b"} and best.summary["train/loss"] == 0.5
    assert {run.config["point"]: run.summary["train/loss"] for run in sweep.runs} == {"a": 1.0, "b": 0.5, "c": 0.8}
    board = leaderboard(sweep)
    assert list(board["train/loss"]) == [0.5, 0.8, 1.0]  # lowest first
    ledger = Ledger.open(sweep_dir)
    assert [t.summary["best"]["train/loss"] for t in ledger.trials()] == [1.0, 0.5, 0.8]  # what the bridge recorded
    ledger.close()


def test_a_ledger_whose_summaries_lack_the_metric_still_names_its_best_run(tmp_path):
    """Summaries recorded before they carried the sweep's metric: read from the history."""
    sweep_dir = bridged_sweep(tmp_path, {"name": "train/loss", "goal": "minimize"}, {
        "a": [epoch_row(1, 0.1, 3.0), epoch_row(2, 0.2, 2.0)], "b": [epoch_row(1, 0.1, 1.0), epoch_row(2, 0.2, 1.2)]})
    ledger = Ledger.open(sweep_dir)
    for trial in ledger.trials():
        summary = dict(trial.summary, best={k: v for k, v in trial.summary["best"].items() if k != "train/loss"})
        ledger.update_trial(trial.name, summary=summary)
    ledger.close()
    best = open_local_sweep(sweep_dir).best_run()
    assert best is not None and best.config == {"point": "b"} and best.summary["train/loss"] == 1.0


# --- one W&B writer -------------------------------------------------------------------------------


def test_a_standalone_trial_opens_its_run_like_the_driver_with_its_name_tags_and_project(wandb_init, tiny_config,
                                                                                          monkeypatch):
    cfg = build_config(str(tiny_config), {"WANDB.ENABLE": True, "WANDB.NAME": "lr-probe", "WANDB.TAGS": ["bot", "cpu"]})
    monkeypatch.setattr(contract, "glue", lambda name, data: None)  # no notebook here to glue into
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    callbacks(cfg)
    [kwargs] = wandb_init.kwargs
    assert kwargs["name"] == "lr-probe" and kwargs["tags"] == ["bot", "cpu"]
    assert kwargs["project"] == "from-env" and kwargs["mode"] == "offline"  # as a sweep's runs: no key, no server
    assert kwargs["config"]["WANDB.NAME"] == "lr-probe" and "entity" not in kwargs  # wandb's default entity
    given = build_config(str(tiny_config), {"WANDB.ENABLE": True, "WANDB.PROJECT": "mine", "WANDB.ENTITY": "lab"})
    callbacks(given)
    assert (wandb_init.kwargs[1]["project"], wandb_init.kwargs[1]["entity"]) == ("mine", "lab")  # the config's win


def test_a_standalone_runs_summary_holds_the_best_epoch_not_the_last(wandb_init, tiny_config, monkeypatch):
    monkeypatch.setattr(contract, "glue", lambda name, data: None)
    cfg = build_config(str(tiny_config), {"WANDB.ENABLE": True})
    [_, recorder] = callbacks(cfg)
    history = [epoch_row(1, 0.3, 2.0), epoch_row(2, 0.6, 1.0), epoch_row(3, 0.4, 0.5)]  # mAP falls after its peak
    for row in history:
        recorder.on_epoch_end(row)
    recorder.on_train_end(train_result(history))
    [run] = wandb_init.runs
    assert run.summary["val/mAP"] == 0.6 and run.summary["last/val/mAP"] == 0.4
    assert run.summary["state"] == "finished" and run.summary["status"] == "finished" and run.exit_code == 0
    assert [row["epoch"] for row in run.logged] == [1, 2, 3]


def test_wandb_failing_costs_no_standalone_trial(wandb_init, tiny_config, monkeypatch, caplog):
    monkeypatch.setattr(contract, "glue", lambda name, data: None)
    wandb_init.fail_on_log = True
    [_, recorder] = callbacks(build_config(str(tiny_config), {"WANDB.ENABLE": True}))
    history = [epoch_row(1, 0.3, 2.0), epoch_row(2, 0.6, 1.0)]
    assert recorder.on_epoch_end(history[0]) is False and recorder.on_epoch_end(history[1]) is False
    recorder.on_train_end(train_result(history))
    [run] = wandb_init.runs
    assert run.exit_code == 1 and run.summary == {}  # ended at the failure, nothing more written
    [warning] = [r.getMessage() for r in caplog.records if "W&B" in r.getMessage()]
    assert "ConnectionError: W&B is down" in warning and "goes on without W&B" in warning


def test_a_sweep_trials_wandb_summary_holds_its_best_epoch_not_its_last(tmp_path, tiny_config):
    """Through the driver, W&B offline: a trial whose mAP falls after its peak."""
    write_fake_trial(tmp_path / "fake.ipynb", extra='row["val/mAP"] = [0.3, 0.6, 0.4][epoch - 1]')
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"config_file": str(tiny_config), "notebook": "fake.ipynb", "method": "grid",
                                    "parameters": {"base_lr": {"values": [1e-3]}, "max_epochs": 3}}))
    result = run_sweep(spec, runs_dir=tmp_path / "runs", project_dir=tmp_path, wandb="offline", progress=False)
    [trial] = result.trials
    [run_file] = (result.directory / "wandb").glob(f"offline-run-*-{trial.name}/run-*.wandb")
    run = read_run(run_file)
    assert [row["val/mAP"] for row in run["history"]] == [0.3, 0.6, 0.4]
    assert run["summary"]["val/mAP"] == 0.6 and run["summary"]["last/val/mAP"] == 0.4
    assert run["summary"]["state"] == "finished" and run["run"].display_name == trial.name
    assert open_local_sweep(result.directory).best_run().summary["val/mAP"] == 0.6
