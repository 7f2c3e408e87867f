"""The W&B-server path with wandb patched at its edge (no server is reachable here): the calls made,
the config each side receives, runs belonging to the sweep, and the server's stop honoured."""
from __future__ import annotations

import threading

import pytest
import wandb
import yaml
from helpers.fake_trial import write_fake_trial
from helpers.fake_wandb import SdkRun
from wandb.agents.pyagent import _terminate_thread

from reidlib.sweep.ledger import Ledger
from reidlib.sweep.spec import load_spec
from reidlib.sweep.wandb_server import create_server_sweep, run_agent
from reidlib.trial import read_trial_notebook


class FakeRun(SdkRun):
    def log(self, row):
        super().log(row)
        FakeServer.on_log(self)


class FakeServer:
    """Hands out the configured runs, like a W&B server and its agent would."""

    sweeps: dict = {}
    runs: list = []
    queue: list = []
    current: dict = {}
    stop_run_at_epoch: dict = {}
    threads: dict = {}

    @classmethod
    def on_log(cls, run):
        if cls.stop_run_at_epoch.get(len(cls.runs) - 1) == run.logged[-1].get("epoch"):
            _terminate_thread(cls.threads[len(cls.runs) - 1])  # what the real agent does on "stop"


@pytest.fixture
def fake_wandb(monkeypatch, tmp_path):
    FakeServer.sweeps, FakeServer.runs, FakeServer.queue = {}, [], []
    FakeServer.stop_run_at_epoch, FakeServer.threads = {}, {}
    calls = {}

    def sweep(sweep, entity=None, project=None):
        calls["sweep"] = dict(sweep=sweep, entity=entity, project=project)
        FakeServer.sweeps["abc123"] = sweep
        return "abc123"

    def agent(sweep_id, function, entity=None, project=None, count=None):
        calls["agent"] = dict(sweep_id=sweep_id, entity=entity, project=project, count=count)
        for i, config in enumerate(FakeServer.queue[:count]):
            FakeServer.current = config
            thread = threading.Thread(target=function)
            FakeServer.threads[i] = thread
            thread.start()
            thread.join()

    def init(**kwargs):
        calls.setdefault("init", []).append(kwargs)
        run = FakeRun(FakeServer.current, kwargs.get("dir"), f"run{len(FakeServer.runs)}")
        FakeServer.runs.append(run)
        return run

    class Api:
        def sweep(self, path):
            calls["api_sweep"] = path
            return type("Sweep", (), {"config": FakeServer.sweeps[path.split("/")[-1]]})()

    monkeypatch.setattr(wandb, "sweep", sweep)
    monkeypatch.setattr(wandb, "agent", agent)
    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setattr(wandb, "Api", Api)
    return calls


def test_sweep_created_on_the_server_and_trials_run_by_the_agent(fake_wandb, tmp_path, tiny_config):
    write_fake_trial(tmp_path / "fake.ipynb", epoch_seconds=0.3)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({
        "config_file": str(tiny_config), "notebook": "fake.ipynb", "method": "bayes", "count": 5,
        "defaults": {"max_epochs": 6}, "early_terminate": {"type": "hyperband", "min_iter": 2},
        "parameters": {"base_lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1}}}))
    spec = load_spec(spec_path)
    path = create_server_sweep(spec, project="reid", entity="lab")
    assert path == "lab/reid/abc123"
    # W&B's schema only (no count, notebook or defaults); ours travel as constant parameters
    assert fake_wandb["sweep"]["sweep"] == {
        "method": "bayes", "metric": {"name": "val/mAP", "goal": "maximize"},
        "early_terminate": {"type": "hyperband", "min_iter": 2},
        "parameters": {"base_lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1},
                       "max_epochs": {"value": 6}, "config_file": {"value": str(tiny_config)}}}

    FakeServer.queue = [{"base_lr": 1e-3, "config_file": str(tiny_config), "max_epochs": 6},
                        {"base_lr": 1e-5, "config_file": str(tiny_config), "max_epochs": 6}]
    FakeServer.stop_run_at_epoch = {1: 2}  # the server stops the second run after its second epoch
    session = run_agent(path, count=2, runs_dir=tmp_path / "runs", project_dir=tmp_path, notebook="fake.ipynb")

    assert fake_wandb["agent"] == {"sweep_id": "abc123", "entity": "lab", "project": "reid", "count": 2}
    for kwargs in fake_wandb["init"]:  # the agent's run: no id/project/config of ours to fight it
        assert not {"id", "project", "config", "entity"} & set(kwargs)
    first, second = FakeServer.runs
    assert [r["epoch"] for r in first.logged] == [1, 2, 3, 4, 5, 6]
    assert first.summary["val/mAP"] == max(r["val/mAP"] for r in first.logged) and first.exit_code == 0
    assert second.summary["state"] == "stopped" and 2 <= len(second.logged) <= 3

    trials = Ledger(session.directory / "sweep.db").trials()
    assert session.directory == tmp_path / "runs" / "abc123"
    assert [t.state for t in trials] == ["finished", "stopped"]
    assert trials[1].exit_reason == "wandb server" and trials[0].wandb_id == first.id
    _, _, summary = read_trial_notebook(trials[1].notebook)
    assert summary["status"] == "stopped_early"  # stopped through the trial contract, notebook complete


def test_one_run_of_several_specs_creates_each_sweep_in_its_own_project(fake_wandb, tmp_path, tiny_config, monkeypatch):
    """wandb.sweep sets WANDB_PROJECT/WANDB_ENTITY in the process: the next spec must not inherit them."""
    from reidlib import cli

    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    created = []

    def sweep(sweep, entity=None, project=None):  # as wandb.sweep does, it exports what it used
        created.append((project, entity))
        monkeypatch.setenv("WANDB_PROJECT", project)
        if entity:
            monkeypatch.setenv("WANDB_ENTITY", entity)
        FakeServer.sweeps[f"sweep{len(created)}"] = sweep
        return f"sweep{len(created)}"

    monkeypatch.setattr(wandb, "sweep", sweep)
    monkeypatch.setattr(cli, "_report", lambda directory, outputs: None)
    monkeypatch.chdir(tmp_path)
    write_fake_trial(tmp_path / "fake.ipynb")
    specs = []
    for name, extra in (("first", {"project": "market-bot", "entity": "lab"}), ("second", {})):
        specs.append(tmp_path / f"{name}.yaml")
        specs[-1].write_text(yaml.safe_dump({"config_file": str(tiny_config), "notebook": "fake.ipynb",
                                             "method": "grid", "parameters": {"base_lr": [0.1]}, **extra}))
    assert cli.main(["run", *map(str, specs), "--wandb", "online", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert created == [("market-bot", "lab"), ("reid-sweep", None)]
