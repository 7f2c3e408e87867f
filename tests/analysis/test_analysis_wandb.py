"""``open_sweep('entity/project/sweep_id')``: a W&B server sweep read through ``wandb.Api``, patched
at its edge (no server here). Each fake run holds what the real bridge recorded into a wandb run, as
the server would give it back; the analysis functions and notebooks/analysis.ipynb run on it."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import wandb
from conftest import REPO
from helpers.fake_wandb import SdkRun

from reidlib import analysis
from reidlib import trial as contract
from reidlib.analysis.wandb_sweep import WandbSweep
from reidlib.config import flat_keys, load_config
from reidlib.errors import SweepStateError
from reidlib.sweep.bridge import TrialBridge, WandbOutage
from reidlib.sweep.ledger import Ledger, Trial

PATH = "lab/reid/abc123"


class NoLedger:
    def add_epoch(self, name, metrics):
        pass

    def update_trial(self, name, **fields):
        pass

    def end_trial(self, name, state, summary, reason):
        pass


def epoch(n: int, mAP: float | None, lr: float) -> dict:
    row = {"epoch": n, "train/loss": 2.0 / n, "train/acc": 0.1 * n, "train/lr": lr, "time/epoch_s": 1.5,
           "gpu/peak_mem_mb": 0.0}
    if mAP is not None:
        row.update({"val/mAP": mAP, "val/mINP": mAP / 2, "val/rank1": mAP + 0.1, "val/rank5": mAP + 0.2,
                    "val/rank10": mAP + 0.3})
    return row


def server_run(tmp_path, config_file, name, params, maps, status=None, state=None, wandb_state=None):
    """A trial recorded by the real bridge, as ``wandb.Api`` returns its run: config = the sweep's
    parameters + the effective YACS config, summary = each key's last logged value overwritten by
    what the bridge wrote at the end, history rows with W&B's ``_step``. ``status`` None: the driver
    died mid-trial (nothing written at the end; ``wandb_state`` says what the server saw)."""
    sdk = SdkRun(params, str(tmp_path))
    bridge = TrialBridge(NoLedger(), Trial(name=name, seq=int(name[-3:]), state="running", params=params), sdk, WandbOutage())
    effective = dict(flat_keys(load_config(config_file, {k: v for k, v in params.items() if k != "config_file"})))
    bridge.on_scrap(contract.CONFIG, effective)
    history = [epoch(n, m, params["base_lr"]) for n, m in enumerate(maps, 1)]
    for row in history:
        bridge.on_scrap(contract.epoch_scrap_name(row["epoch"]), row)
    if status:
        result = SimpleNamespace(status=status, epochs_run=len(history), wall_time_s=1.5 * len(history),
                                 peak_mem_mb=0.0, checkpoint=f"/srv/runs/abc123/trials/{name}/checkpoint.pth",
                                 error="loss is nan" if status == "diverged" else None, history=history,
                                 untrained={"val/mAP": 0.01}, cmc=[0.5] * 20, val_ids=2,
                                 test={"test/mAP": 0.1} if status != "diverged" else {})
        bridge.on_scrap(contract.SUMMARY, contract.make_summary(result, max_epochs=3))
        bridge.close(state, reason=None, notebook=Path(f"/srv/runs/abc123/trials/{name}.ipynb"))
    last_logged = {k: v for row in sdk.logged for k, v in row.items()}
    rows = [{"_step": i, "_runtime": 2.0 * i, **row} for i, row in enumerate(sdk.logged)]
    return SimpleNamespace(name=name, id=f"run{name[-3:]}", config=dict(sdk.config),
                           summary={**last_logged, **sdk.summary}, scan_history=lambda: iter(rows),
                           state=wandb_state or ("finished" if sdk.exit_code == 0 else "failed"))


@pytest.fixture
def server_sweep(tmp_path, tiny_config):
    """Seven runs of a server sweep: two finished (trial-002 the best), one stopped by hyperband, one
    diverged, one crashed, one killed and one running, the last four with higher mAP than the best."""
    lr = lambda value: {"base_lr": value, "weight_decay": 1e-4, "config_file": str(tiny_config), "max_epochs": 3}
    runs = [
        server_run(tmp_path, tiny_config, "trial-001", lr(3e-4), [0.2, 0.4, 0.5], "finished", "finished"),
        server_run(tmp_path, tiny_config, "trial-002", lr(1e-3), [0.3, 0.6, 0.55], "finished", "finished"),
        server_run(tmp_path, tiny_config, "trial-003", lr(3e-3), [0.7], "stopped_early", "stopped"),
        server_run(tmp_path, tiny_config, "trial-004", lr(1e-1), [0.95, None], "diverged", "failed"),
        server_run(tmp_path, tiny_config, "trial-005", lr(2e-3), [0.99], wandb_state="crashed"),
        server_run(tmp_path, tiny_config, "trial-006", lr(4e-3), [0.97], wandb_state="killed"),
        server_run(tmp_path, tiny_config, "trial-007", lr(5e-3), [0.98], wandb_state="running"),
    ]
    config = {"method": "bayes", "metric": {"name": "val/mAP", "goal": "maximize"},
              "parameters": {"base_lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1},
                             "weight_decay": {"value": 1e-4}, "config_file": {"value": str(tiny_config)},
                             "max_epochs": {"value": 3}}}
    return SimpleNamespace(id="abc123", name="lr search", config=config, runs=runs)


@pytest.fixture
def api_calls(monkeypatch, server_sweep):
    """``wandb.Api`` patched: it knows one sweep, PATH; returns the paths it was asked for."""
    calls = []

    class Api:
        def sweep(self, path):
            calls.append(path)
            if path != PATH:  # what wandb raises for an unknown sweep
                raise ValueError(f"Could not find sweep <Sweep {path} (Unknown State)>")
            return server_sweep

    monkeypatch.setattr(wandb, "Api", Api)
    return calls


def test_a_wandb_path_opens_the_server_sweep(api_calls, tmp_path):
    sweep = analysis.open_sweep(PATH, runs_dir=tmp_path / "runs")
    assert isinstance(sweep, WandbSweep) and api_calls == [PATH]
    assert (sweep.id, sweep.name, sweep.metric) == ("abc123", "lr search", ("val/mAP", "maximize"))
    states = {run.name: run.state for run in sweep.runs}
    assert states == {"trial-001": "finished", "trial-002": "finished", "trial-003": "stopped", "trial-004": "failed",
                      "trial-005": "crashed", "trial-006": "stopped", "trial-007": "running"}


def test_only_finished_runs_win(api_calls):
    sweep = analysis.open_sweep(PATH)
    assert sweep.best_run().name == "trial-002"  # not the stopped, failed, crashed, killed or running ones
    assert sweep.best_run("-summary_metrics.val/mAP").name == "trial-002"
    assert sweep.best_run("+summary_metrics.val/mAP").name == "trial-001"
    assert sweep.best_run("-val/rank1").name == "trial-002"


def test_runs_read_back_what_the_bridge_recorded(api_calls, tiny_config):
    runs = {run.name: run for run in analysis.open_sweep(PATH).runs}
    best = runs["trial-002"]
    assert best.id == "run002"
    assert best.config == {"base_lr": 1e-3, "weight_decay": 1e-4, "config_file": str(tiny_config), "max_epochs": 3}
    assert best.effective_config["SOLVER.BASE_LR"] == 1e-3 and "base_lr" not in best.effective_config
    assert best.summary["val/mAP"] == 0.6 and best.summary["last/val/mAP"] == 0.55  # the best epoch's, and the last
    assert best.notebook_path == Path("/srv/runs/abc123/trials/trial-002.ipynb")
    assert best.checkpoint == Path("/srv/runs/abc123/trials/trial-002/checkpoint.pth")
    history = best.history()
    assert list(history["epoch"]) == [1, 2, 3] and list(history["val/mAP"]) == [0.3, 0.6, 0.55]
    assert not [c for c in history.columns if c.startswith("_")]
    assert runs["trial-004"].exit_reason == "loss is nan" and runs["trial-003"].exit_reason == "stopped_early"
    assert runs["trial-005"].exit_reason == "W&B state crashed" and best.exit_reason is None
    assert runs["trial-005"].notebook_path is None  # its driver died before the end


def test_analysis_functions_work_on_a_wandb_sweep(api_calls):
    sweep = analysis.open_sweep(PATH)
    board = analysis.leaderboard(sweep)
    assert list(board.index[:2]) == ["trial-002", "trial-001"] and board.loc["trial-004", "reason"] == "loss is nan"
    assert {"base_lr", "weight_decay"} <= set(board.columns) and "SOLVER.BASE_LR" not in board.columns
    assert set(analysis.best_config_diff(sweep).index) == {"SOLVER.BASE_LR", "SOLVER.MAX_EPOCHS", "SOLVER.WEIGHT_DECAY"}
    assert analysis.numeric_parameters(sweep) == ["base_lr"]  # the searched one; weight_decay is a constant
    assert analysis.cost_table(sweep).loc["trial-002", "s_to_best"] == 3.0  # two epochs of 1.5 s to its best
    assert "best run: trial-002, val/mAP 60.0% (test/mAP 10.0%)" in analysis.overview(sweep)


def test_the_analysis_notebook_runs_on_a_wandb_sweep(api_calls, capsys):
    cells = [c for c in json.loads((REPO / "notebooks" / "analysis.ipynb").read_text())["cells"]
             if c["cell_type"] == "code"]
    namespace: dict = {}
    for cell in cells:
        exec("".join(cell["source"]), namespace)
        if "parameters" in cell["metadata"].get("tags", []):
            namespace["sweep"] = PATH  # what papermill would inject
    assert api_calls == [PATH]
    assert "best run: trial-002" in capsys.readouterr().out


def test_a_local_sweep_of_that_name_wins(api_calls, tmp_path):
    (tmp_path / "runs" / PATH).mkdir(parents=True)
    Ledger.create(tmp_path / "runs" / PATH, "abc123", "local", {"method": "grid", "parameters": {}}).close()
    sweep = analysis.open_sweep(PATH, runs_dir=tmp_path / "runs")
    assert isinstance(sweep, analysis.LocalSweep) and api_calls == []


@pytest.mark.parametrize("ref", ["lab/abc123", "lab//abc123", "a/b/c/d", "nope"])
def test_a_malformed_ref_is_one_line_naming_it(api_calls, tmp_path, ref):
    with pytest.raises(SweepStateError) as err:
        analysis.open_sweep(ref, runs_dir=tmp_path)
    assert str(err.value).startswith(f"{ref}: ") and "\n" not in str(err.value) and "ENTITY/PROJECT/SWEEP_ID" in str(err.value)
    assert api_calls == []


def test_a_sweep_wandb_does_not_know_is_one_line_naming_it(api_calls, tmp_path):
    with pytest.raises(SweepStateError) as err:
        analysis.open_sweep("lab/reid/nope", runs_dir=tmp_path)
    assert str(err.value) == ("lab/reid/nope: no local sweep of that name, and W&B could not open it "
                              "(Could not find sweep <Sweep lab/reid/nope (Unknown State)>)")
