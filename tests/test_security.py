"""Secrets never land in what a sweep writes; parameters are data; files keep the user's umask."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import yaml
from helpers.fake_trial import write_fake_trial

from reidlib.sweep.ledger import Ledger
from reidlib.trial import read_trial_notebook

FAKE_KEY = "fakewandbkey0123456789abcdef0123456789abcd"
FAKE_TOKEN = "ghp_faketoken_do_not_leak_42"


def test_secrets_never_reach_notebooks_ledger_reports_or_logs(tmp_path, tiny_config):
    # the trial reports what it can see of the secrets: it must see nothing
    prelude = ("trial.glue('seen', {k: v for k, v in os.environ.items() "
               "if 'KEY' in k or 'TOKEN' in k or 'SECRET' in k})")
    write_fake_trial(tmp_path / "fake.ipynb", prelude=prelude)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"config_file": str(tiny_config), "notebook": "fake.ipynb", "method": "grid",
                                    "parameters": {"base_lr": [1e-3, 1e-2], "max_epochs": 2}}))
    env = {**os.environ, "WANDB_API_KEY": FAKE_KEY, "GITHUB_TOKEN": FAKE_TOKEN, "MY_SERVICE_SECRET": FAKE_TOKEN}
    proc = subprocess.run([sys.executable, "-m", "reidlib.cli", "run", str(spec), "--runs-dir", "runs",
                           "--wandb", "offline"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [sweep_dir] = (tmp_path / "runs").iterdir()
    written = [p for p in sweep_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in written) and any(p.name == "index.html" for p in written)
    for path in written:
        data = path.read_bytes()
        assert FAKE_KEY.encode() not in data and FAKE_TOKEN.encode() not in data, path
    assert FAKE_KEY not in proc.stdout + proc.stderr
    for trial in Ledger(sweep_dir / "sweep.db").trials():
        import nbformat

        from reidlib.trial import scraps_in

        assert scraps_in(nbformat.read(trial.notebook, as_version=4))["seen"] == {}


def test_hostile_strings_in_a_spec_are_data(tmp_path, tiny_config):
    marker = tmp_path / "PWNED"
    hostile = f'x"; import pathlib; pathlib.Path("{marker}").touch(); y = "\n\'\'\' {{}}'
    write_fake_trial(tmp_path / "fake.ipynb")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"config_file": str(tiny_config), "notebook": "fake.ipynb", "method": "grid",
                                    "parameters": {"base_lr": [1e-3], "max_epochs": 1,
                                                   "DATASETS.ROOT_DIR": [hostile]}}))
    custom = json.dumps({"DATASETS.QUERY_FOLDER": {"value": hostile}})
    subprocess.run([sys.executable, "-m", "reidlib.cli", "run", str(spec), "--runs-dir", "runs",
                           "--wandb", "disabled", "--custom-params", custom], cwd=tmp_path, capture_output=True, text=True)
    assert not marker.exists()
    [sweep_dir] = (tmp_path / "runs").iterdir()
    [trial] = Ledger(sweep_dir / "sweep.db").trials()
    assert trial.params["DATASETS.ROOT_DIR"] == hostile  # arrived as that very string
    params, _, _ = read_trial_notebook(trial.notebook)
    assert params["overrides"]["DATASETS.ROOT_DIR"] == params["overrides"]["DATASETS.QUERY_FOLDER"] == hostile


def test_outputs_follow_the_umask_and_nothing_is_world_writable(tmp_path, tiny_config):
    write_fake_trial(tmp_path / "fake.ipynb")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"config_file": str(tiny_config), "notebook": "fake.ipynb", "method": "grid",
                                    "parameters": {"base_lr": [1e-3], "max_epochs": 1}}))
    proc = subprocess.run(f"umask 077 && {sys.executable} -m reidlib.cli run {spec} --runs-dir runs --wandb offline",
                          shell=True, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for path in (tmp_path / "runs").rglob("*"):
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        assert not mode & (stat.S_IRWXG | stat.S_IRWXO), f"{path}: {stat.filemode(mode)}"
