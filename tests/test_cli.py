"""Errors a user causes: one line naming the file or field, exit 2, no runs/<id> left behind."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from conftest import REPO


def cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "reidlib.cli", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize("content, words", [
    (None, "sweep file not found"),
    ("method: grid\nparameters: {base_lr: [0.1\n", "not valid YAML"),
    ({"method": "grid", "parameters": {"base_lrr": [0.1]}}, "parameters.base_lrr: not a config key or alias; did you mean 'base_lr'?"),
    ({"method": "grid", "parameters": {"base_lr": {"min": 0.1, "max": 1.0}}}, "parameters.base_lr: grid search needs discrete values"),
    ({"method": "grid", "parameters": {"base_lr": [0.1]}, "config_file": "configs/nope.yml"}, "configs/nope.yml: config file not found"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, content, words, run_cli):
    spec = tmp_path / "spec.yaml"
    if content is not None:
        spec.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    runs = tmp_path / "runs"
    code, _, stderr = run_cli("run", str(spec), "--runs-dir", str(runs))
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], stderr
    assert not runs.exists() or not any(runs.iterdir())


def test_validate_prints_the_normalised_spec():
    proc = cli("validate", "sweeps/test.yaml")
    assert proc.returncode == 0, proc.stderr
    assert '"values": [' in proc.stdout and '"metric"' in proc.stdout


def test_status_of_unknown_sweep_is_exit_2_from_the_process(tmp_path):
    proc = cli("status", "nosuchid", "--runs-dir", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "no sweep found" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("command", ["report", "stop", "sync"])
def test_commands_on_local_files_refuse_a_wandb_path_without_asking_wandb(tmp_path, command, run_cli, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # unset: no server is asked
    code, _, stderr = run_cli(command, "lab/reid/abc123", "--runs-dir", str(tmp_path))
    assert code == 2 and stderr.strip().count("\n") == 0
    assert "lab/reid/abc123: no sweep found" in stderr


def test_the_driver_process_never_imports_torch(tmp_path):
    """Trials import torch in their own kernels; the driver checks specs and configs without it
    (torch alone would add ~500 MB to a driver that runs all night)."""
    spec = tmp_path / "rerank.yaml"
    spec.write_text(yaml.safe_dump({"method": "grid", "config_file": "configs/synthetic.yml",
                                    "parameters": {"base_lr": [0.1], "TEST.RE_RANKING": "yes"}}))
    code = ("import sys; from reidlib import cli, workflow; "
            f"code = cli.main(['validate', {str(spec)!r}]); "
            "print(code, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.stdout.split()[-2:] == ["0", "False"], result.stdout + result.stderr


def test_reading_a_sweep_imports_neither_the_search_nor_torch():
    """The analysis kernel and ``reid-sweep report`` only read the ledger: W&B's search (``sweeps``, with
    scipy.stats) would add a second to every report, torch half a gigabyte."""
    code = ("import sys, reidlib.analysis; "
            "print(sorted(m for m in ('sweeps', 'scipy.stats', 'torch', 'reidlib.sweep.driver') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
