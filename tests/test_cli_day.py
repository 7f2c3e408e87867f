"""The CLI as a researcher uses it over a day (issue 17): presets with --custom-params, a sweep whose
every trial failed, resume by id, the checkpoints a sweep keeps, standalone runs' output directories,
and the one line a sweep without a count prints."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from helpers.fake_trial import write_fake_trial

from reidlib import cli
from reidlib.sweep import create_sweep, run_sweep
from reidlib.sweep.ledger import Ledger
from reidlib.sweep.spec import DEFAULT_KEEP_CHECKPOINTS, leaves, load_spec
from reidlib.trial import build_config


def names(spec) -> list[str]:
    return [name for _, name, _ in leaves(spec.search_config["parameters"])]


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture
def project(tmp_path, tiny_config, monkeypatch):
    """``write(spec, extra=..., prelude=...)``: a spec of fake trials in ``tmp_path`` (the working
    directory, as a user's project), returning its path."""
    monkeypatch.chdir(tmp_path)

    def write(spec: dict, extra: str = "pass", prelude: str = "", epoch_seconds: float = 0.05, name="spec.yaml"):
        write_fake_trial(tmp_path / "fake.ipynb", extra, epoch_seconds, prelude)
        path = tmp_path / name
        path.write_text(yaml.safe_dump({"config_file": str(tiny_config), "notebook": "fake.ipynb", **spec}))
        return path

    return write


# --- presets with --custom-params ---------------------------------------------------------------

def test_a_custom_parameter_replaces_the_presets_parameter_for_its_key_aliased_or_dotted(project, tmp_path):
    """The seed users' command: a dotted custom parameter on a preset that names it by its alias (and the
    reverse, nested groups and the preset's defaults too) runs the custom values, every trial finishing."""
    spec = load_spec(REPO / "sweeps" / "lr.yaml", custom_params='{"SOLVER.BASE_LR": {"values": [0.001, 0.01]}}')
    assert names(spec) == ["SOLVER.BASE_LR"]
    reverse = project({"method": "grid", "parameters": {"SOLVER": {"parameters": {"BASE_LR": [0.1, 0.2]}},
                                                        "max_epochs": 2},
                       "defaults": {"overrides": {"SOLVER.BASE_LR": 0.3}, "weight_decay": 0.001}})
    amended = load_spec(reverse, custom_params='{"base_lr": [0.003]}', values=["SOLVER.WEIGHT_DECAY=0.01,0.02"])
    assert sorted(names(amended)) == ["SOLVER.WEIGHT_DECAY", "base_lr", "max_epochs"]
    assert amended.defaults == {"overrides": {}}

    preset = project({"method": "grid", "parameters": {"base_lr": [0.0001, 0.00035], "max_epochs": 2}})
    custom = load_spec(preset, custom_params='{"SOLVER.BASE_LR": {"values": [0.001, 0.01]}}')
    result = run_sweep(custom, runs_dir=tmp_path / "runs", project_dir=tmp_path, wandb="disabled", progress=False)
    assert sorted(t.params["SOLVER.BASE_LR"] for t in result.trials) == [0.001, 0.01]
    assert [t.state for t in result.trials] == ["finished", "finished"], [t.exit_reason for t in result.trials]


def test_one_key_spelt_two_ways_in_a_spec_is_one_line_before_any_trial(project, tmp_path, capsys):
    spec = project({"method": "grid", "parameters": {"base_lr": [0.1], "SOLVER.BASE_LR": [0.2]}})
    assert cli.main(["validate", str(spec)]) == 2
    [line] = lines(capsys.readouterr().err)
    assert line == "error: parameters.base_lr: SOLVER.BASE_LR is also given as parameters.SOLVER.BASE_LR; keep one " \
                   "of the two names"  # the YAML's order (safe_dump sorts: upper case first)
    spec = project({"method": "grid", "parameters": {"max_epochs": [2]}, "defaults": {"overrides": {"SOLVER.MAX_EPOCHS": 3}}})
    assert cli.main(["run", str(spec), "--runs-dir", "runs"]) == 2
    assert "parameters.max_epochs: SOLVER.MAX_EPOCHS is also given as defaults.SOLVER.MAX_EPOCHS" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_sweep_whose_every_trial_failed_exits_1_saying_so(project, tmp_path, capsys):
    """As papermill exits 1 when its notebook fails: a sweep with nothing but failed trials is not a success."""
    spec = project({"method": "grid", "parameters": {"base_lr": [0.1, 0.2], "max_epochs": 2}},
                   prelude="raise RuntimeError('no GPU here')")
    assert cli.main(["run", str(spec), "--runs-dir", "runs", "--wandb", "disabled"]) == 1
    [directory] = (tmp_path / "runs").iterdir()
    err = lines(capsys.readouterr().err)
    assert err[-1].startswith(f"error: sweep {directory.name}: every trial failed (2); trial-001: ")
    assert "no GPU here" in err[-1] and str(directory / "trials" / "trial-001.ipynb") in err[-1]


# --- resume by id --------------------------------------------------------------------------------

def test_resume_by_id_reads_the_spec_from_the_ledger_and_a_sweep_without_count_says_it_runs_until_stopped(
        project, tmp_path, capsys):
    # each trial asks its sweep for no new trials (as 'reid-sweep stop' would, letting it finish): one trial a command
    stop = "open(os.path.join(cfg.OUTPUT_DIR, '..', '..', 'STOP'), 'w').close()"
    spec = project({"method": "random", "seed": 3, "parameters": {
        "base_lr": {"distribution": "log_uniform_values", "min": 0.0001, "max": 0.01}, "max_epochs": 2}}, extra=stop)
    assert cli.main(["run", str(spec), "--runs-dir", "runs", "--wandb", "disabled"]) == 0
    out = lines(capsys.readouterr().out)
    assert out[0] == (f"{spec}: no count: this random sweep runs trials until it is stopped (Ctrl-C, or 'reid-sweep "
                      "stop ID' from another shell); give --count N or count: N to end it after N trials")
    [directory] = (tmp_path / "runs").iterdir()
    spec.unlink()  # the ledger has it
    assert cli.main(["resume", directory.name, "--runs-dir", "runs", "--wandb", "disabled"]) == 0
    assert "no count: this random sweep runs trials until it is stopped" in capsys.readouterr().out
    assert cli.main(["run", "--sweep-id", str(directory), "--count", "3", "--wandb", "disabled"]) == 0
    ledger = Ledger.open(directory)
    trials = ledger.trials()
    ledger.close()
    assert [t.name for t in trials] == ["trial-001", "trial-002", "trial-003"]
    assert all(0.0001 <= t.params["base_lr"] <= 0.01 and t.params["max_epochs"] == 2 for t in trials)
    assert len({t.params["base_lr"] for t in trials}) == 3  # the seeded search went on, not again from its start


def test_resuming_with_a_different_spec_is_one_line_saying_what_differs_and_writes_nothing(project, tmp_path, capsys):
    spec = project({"method": "grid", "parameters": {"base_lr": [0.1, 0.2], "max_epochs": 2}})
    sweep_id = create_sweep(spec, tmp_path / "runs", tmp_path)
    directory = tmp_path / "runs" / sweep_id

    def snapshot():
        return {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}

    before = snapshot()
    other = project({"method": "grid", "parameters": {"base_lr": [0.1, 0.3], "max_epochs": 2}}, name="other.yaml")
    assert cli.main(["run", str(other), "--sweep-id", sweep_id, "--runs-dir", "runs"]) == 2
    [line] = lines(capsys.readouterr().err)
    assert line == (f"error: {other}: differs from sweep {sweep_id}'s spec at parameters.base_lr.values: [0.1, 0.3] "
                    f"here, [0.1, 0.2] in its ledger; resume it without a spec ('reid-sweep resume {sweep_id}'), "
                    "or start a new sweep")
    assert cli.main(["run", "--sweep-id", sweep_id, "--method", "random", "--runs-dir", "runs"]) == 2
    assert "at method: 'random' here, 'grid' in its ledger" in capsys.readouterr().err
    assert cli.main(["resume", "nosuch", "--runs-dir", "runs"]) == 2
    assert "error: nosuch: no sweep found" in capsys.readouterr().err
    assert snapshot() == before


# --- checkpoints kept on purpose -----------------------------------------------------------------

CHECKPOINT = ("ckpt = os.path.join(cfg.OUTPUT_DIR, 'checkpoint.pth')\n"
              "epoch_ckpt = os.path.join(cfg.OUTPUT_DIR, 'checkpoint_epoch1.pth')\n"
              "for path in (ckpt, epoch_ckpt):\n"
              "    os.makedirs(path + '.features', exist_ok=True)\n"
              "    open(path, 'wb').write(bytes(1000))")
STILL_THERE = "assert os.path.exists(ckpt), 'a running trial lost its checkpoint'"  # each epoch


def test_a_sweep_keeps_the_checkpoints_of_its_best_trials_only(project, tmp_path):
    """keep_checkpoints: 2 of a 5-point grid on two workers: the two best by val/mAP keep theirs when
    the sweep ends, and no running trial ever lost its own (each checks at every epoch)."""
    values = [0.1, 0.03, 0.001, 0.0003, 0.01]  # the fake landscape peaks at 1e-3
    spec = project({"method": "grid", "keep_checkpoints": 2, "parameters": {"base_lr": values, "max_epochs": 3}},
                   extra=STILL_THERE, prelude=CHECKPOINT, epoch_seconds=0.3)
    result = run_sweep(spec, runs_dir=tmp_path / "runs", project_dir=tmp_path, wandb="disabled", progress=False,
                       workers=2)
    assert [t.state for t in result.trials] == ["finished"] * 5, [t.exit_reason for t in result.trials]
    kept = {t.params["base_lr"] for t in result.trials
            if (result.directory / "trials" / t.name / "checkpoint.pth").is_file()}
    assert kept == {0.001, 0.0003}
    assert len(list(result.directory.glob("trials/*/checkpoint.pth.features"))) == 2
    # an epoch's kept checkpoint and its features go with the trial's last one
    assert {p.parent for p in result.directory.glob("trials/*/checkpoint_epoch1.pth*")} == \
        {p.parent for p in result.directory.glob("trials/*/checkpoint.pth")}
    assert len(list(result.directory.glob("trials/*/checkpoint_epoch1.pth.features"))) == 2


def test_keep_checkpoints_defaults_to_a_few_and_all_keeps_every_one(project, tmp_path):
    assert DEFAULT_KEEP_CHECKPOINTS == 3
    assert load_spec(REPO / "sweeps" / "lr.yaml").keep_checkpoints == 3
    spec = project({"method": "grid", "keep_checkpoints": "all", "parameters": {"base_lr": [0.1, 0.01], "max_epochs": 1}},
                   prelude=CHECKPOINT)
    result = run_sweep(spec, runs_dir=tmp_path / "runs", project_dir=tmp_path, wandb="disabled", progress=False,
                       count=2)
    assert len(list(result.directory.glob("trials/*/checkpoint.pth"))) == 2


def test_standalone_runs_without_an_output_dir_each_get_a_fresh_directory(tiny_config, tmp_path):
    base = yaml.safe_load(tiny_config.read_text())["OUTPUT_DIR"]
    first, second = (build_config(str(tiny_config)).OUTPUT_DIR for _ in range(2))
    assert first != second and Path(first).parent == Path(second).parent == Path(base)
    assert Path(first).name.startswith("run-")
    assert build_config(str(tiny_config), output_dir=str(tmp_path)).OUTPUT_DIR == str(tmp_path)
    assert build_config(str(tiny_config), {"OUTPUT_DIR": str(tmp_path)}).OUTPUT_DIR == str(tmp_path)
    assert not os.path.exists(first)  # made when the run writes there


def test_the_spec_keeps_keep_checkpoints_and_refuses_a_bad_one(project, capsys):
    spec = project({"method": "grid", "keep_checkpoints": 0, "parameters": {"base_lr": [0.1]}})
    assert cli.main(["validate", str(spec)]) == 2
    assert lines(capsys.readouterr().err) == [f"error: {spec}: keep_checkpoints: expected a number of trials >= 1 (the "
                                              "best one's checkpoint always stays) or 'all', got 0"]
    spec = project({"method": "grid", "keep_checkpoints": 5, "parameters": {"base_lr": [0.1]}})
    assert cli.main(["validate", str(spec)]) == 0
    assert json.loads(capsys.readouterr().out.split("\ngrid points")[0])["keep_checkpoints"] == 5
