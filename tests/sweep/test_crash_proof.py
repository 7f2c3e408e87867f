"""Crash-proof sweeps (issue 13): drivers SIGKILLed at chosen moments, a kernel that keeps dying, a
damaged ledger or notebook, a read-only sweep, a full disk (a real tmpfs), hostile spec files and
symlinks planted under runs/<id>/. Each sweep is of fake trials (seconds). Nothing finished is lost
or run again, every grid point runs, nothing is written outside the sweep, no process is left, and
every failure a user meets is one line and exit 2."""
from __future__ import annotations

import json
import logging
import secrets
import shutil
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest
import yaml
from conftest import REPO
from helpers.fake_trial import write_fake_trial
from helpers.processes import assert_no_tagged_process, new_tag, tagged_environment
from test_faults import assert_no_process_left, error_line, trials_of

from reidlib import cli
from reidlib.sweep import create_sweep, run_sweep
from reidlib.sweep.controller import MAX_KERNEL_DEATHS
from reidlib.sweep.lease import DRIVER_GONE

VALUES = [1e-3, 1e-2, 1e-1]
TARGET = 1e-2  # the grid point the faults hit

# Run in the trial kernel (prelude): SIGKILL this trial's driver, its kernel's parent, at the next
# moment the plan file lists, when this trial is the target point; the kernel then follows its driver.
KILL_HOOK = '''
import json, os, pathlib, signal
def kill_driver_at(moment, plan=pathlib.Path(PLAN)):
    if lr != TARGET:
        return
    left = json.loads(plan.read_text())
    if left and left[0] == moment:
        plan.write_text(json.dumps(left[1:]))
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(60)  # ipykernel's parent poller ends this kernel within a second
'''
# A driver process of its own, to be SIGKILLed: argv = spec, sweep id, runs dir, project dir.
DRIVER = ("import sys; from reidlib.sweep import run_sweep; "
          "run_sweep(sys.argv[1], sweep_id=sys.argv[2], runs_dir=sys.argv[3], project_dir=sys.argv[4], "
          "wandb='disabled', progress=False)")


def write_spec(tmp_path: Path, tiny_config: Path, values=VALUES, max_epochs: int = 2) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"config_file": str(tiny_config), "notebook": "fake.ipynb", "method": "grid",
                                    "parameters": {"base_lr": {"values": values}, "max_epochs": max_epochs}}))
    return path


def killing_trial(tmp_path: Path, plan: list[str], epoch_seconds: float = 0.05) -> None:
    """The fake trial, with the driver SIGKILLed at the moments of ``plan`` ('epoch': during epoch 1;
    'after summary': once its summary is saved in its notebook, in a last cell)."""
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    prelude = KILL_HOOK.replace("PLAN", repr(str(tmp_path / "plan.json"))).replace("TARGET", repr(TARGET))
    path = write_fake_trial(tmp_path / "fake.ipynb", extra="kill_driver_at('epoch')", prelude=prelude,
                            epoch_seconds=epoch_seconds)
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("kill_driver_at('after summary')"))
    nbformat.write(nb, path)


def start_driver(spec: Path, sweep_id: str, tmp_path: Path, tag: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(spec), sweep_id, str(tmp_path / "runs"), str(tmp_path)],
                            cwd=tmp_path, env=tagged_environment(tag),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished_points(sweep_dir: Path) -> Counter:
    return Counter(t.params["base_lr"] for t in trials_of(sweep_dir) if t.state == "finished")


# --- 1. interrupted again and again: every point still runs; finished work is never run again --------


@pytest.mark.parametrize("plan", [["epoch", "epoch"], ["after summary"], ["epoch", "after summary"]],
                         ids=["retry-killed-too", "killed-after-summary", "retry-killed-after-summary"])
def test_a_driver_killed_again_and_again_loses_no_point_and_reruns_no_finished_trial(plan, tmp_path, tiny_config):
    spec = write_spec(tmp_path, tiny_config)
    killing_trial(tmp_path, plan)
    sweep_id = create_sweep(spec, tmp_path / "runs", tmp_path)
    directory, tag = tmp_path / "runs" / sweep_id, new_tag()
    codes = []
    for _ in range(len(plan) + 1):  # each run of the driver is killed once, then a resume ends the sweep
        driver = start_driver(spec, sweep_id, tmp_path, tag)
        _, stderr = driver.communicate(timeout=180)
        codes.append(driver.returncode)
    assert codes == [-9] * len(plan) + [0], stderr[-2000:]
    assert finished_points(directory) == Counter(VALUES)  # every point once: none lost, none twice
    target = [t for t in trials_of(directory) if t.params["base_lr"] == TARGET]
    assert len(target) == plan.count("epoch") + 1  # a trial killed after its summary is not run again
    assert [t.state for t in target[:-1]] == ["crashed"] * plan.count("epoch")
    assert all(t.exit_reason == DRIVER_GONE for t in target[:-1])
    last = target[-1]
    assert last.summary["status"] == "finished" and [row["epoch"] for row in last.history] == [1, 2]
    if plan[-1] == "after summary":  # recorded from its notebook; `reid-sweep sync` writes its W&B run
        assert last.exit_reason is None and last.wandb_id is None
    assert_no_tagged_process(tag)


def test_live_drivers_take_over_a_dead_drivers_trial(tmp_path, tiny_config):
    """Three drivers on one sweep; the one that runs the target point is SIGKILLed mid-trial. The other
    two run that point again (however the grid was shared out), and both end with the grid complete."""
    values = [round(1e-3 * (i + 1), 6) for i in range(6)] + [TARGET]
    spec = write_spec(tmp_path, tiny_config, values)
    killing_trial(tmp_path, ["epoch"], epoch_seconds=0.3)
    sweep_id = create_sweep(spec, tmp_path / "runs", tmp_path)
    directory, tag = tmp_path / "runs" / sweep_id, new_tag()
    drivers = [start_driver(spec, sweep_id, tmp_path, tag) for _ in range(3)]
    outputs = [driver.communicate(timeout=300) for driver in drivers]

    assert sorted(d.returncode for d in drivers) == [-9, 0, 0], [err[-2000:] for _, err in outputs]
    assert finished_points(directory) == Counter(values)
    [dead] = [t for t in trials_of(directory) if t.state != "finished"]
    assert dead.params["base_lr"] == TARGET and dead.state == "crashed" and dead.exit_reason == DRIVER_GONE
    [rerun] = [t for t in trials_of(directory) if t.retry_of == dead.name]
    assert rerun.state == "finished" and rerun.worker != dead.worker
    assert_no_tagged_process(tag)


# --- 2. a trial whose own kernel keeps dying: capped, failed with that reason --------------------------


def test_a_kernel_that_keeps_dying_is_retried_up_to_the_cap_then_failed(tmp_path, tiny_config, caplog):
    spec = write_spec(tmp_path, tiny_config)
    die = f"if lr == {TARGET!r} and epoch == 1: os.kill(os.getpid(), 9)"  # the kernel dies, its driver lives on
    write_fake_trial(tmp_path / "fake.ipynb", extra=die)
    with caplog.at_level(logging.WARNING, logger="reidlib"):
        result = run_sweep(spec, runs_dir=tmp_path / "runs", project_dir=tmp_path, wandb="disabled", progress=False)

    target = [t for t in result.trials if t.params["base_lr"] == TARGET]
    assert [t.state for t in target] == ["crashed"] * (MAX_KERNEL_DEATHS - 1) + ["failed"]
    assert all(t.exit_reason.startswith("kernel died") for t in target[:-1])
    assert target[-1].exit_reason.startswith(f"kernel died {MAX_KERNEL_DEATHS} times (the retry cap)")
    assert [t.retry_of for t in target[1:]] == [t.name for t in target[:-1]]
    assert finished_points(result.directory) == Counter(v for v in VALUES if v != TARGET)
    assert any(f"{target[-1].name} failed: kernel died {MAX_KERNEL_DEATHS} times" in r.getMessage() for r in caplog.records)
    again = run_sweep(spec, sweep_id=result.sweep_id, runs_dir=tmp_path / "runs", project_dir=tmp_path,
                      wandb="disabled", progress=False)
    assert len(again.trials) == len(result.trials)  # a resume does not run it a fourth time
    assert_no_process_left()


# --- 3. a damaged sweep: one line naming the file and what to do, exit 2 ------------------------------


@pytest.fixture(scope="module")
def _finished_sweep_once(tmp_path_factory, tiny_config) -> tuple[Path, Path]:
    """A finished two-point sweep of fake trials, run once per module by a driver process that has
    exited (so no connection holds its ledger and SQLite has folded its WAL in): ``(its directory,
    a pristine copy of its project dir)``."""
    project = tmp_path_factory.mktemp("finished")
    spec = write_spec(project, tiny_config, VALUES[:2])
    write_fake_trial(project / "fake.ipynb")
    sweep_id = create_sweep(spec, project / "runs", project)
    driver = start_driver(spec, sweep_id, project, "finished-sweep")
    assert driver.wait(timeout=180) == 0, driver.stderr.read()[-2000:]
    assert not (project / "runs" / sweep_id / "sweep.db-wal").exists()
    pristine = tmp_path_factory.mktemp("finished-pristine") / "project"
    shutil.copytree(project, pristine, symlinks=True)
    return project / "runs" / sweep_id, pristine


@pytest.fixture
def finished_sweep(_finished_sweep_once, monkeypatch) -> Path:
    """The finished sweep's directory, as the driver left it (restored in place: its ledger and notebooks
    name their absolute paths); cwd = its project dir."""
    directory, pristine = _finished_sweep_once
    project = directory.parents[1]
    shutil.rmtree(project)
    shutil.copytree(pristine, project, symlinks=True)
    monkeypatch.chdir(project)
    return directory


def _damage(db: Path, how: str) -> None:
    data = db.read_bytes()
    db.write_bytes({"emptied": b"", "truncated": data[:len(data) // 2], "garbage": secrets.token_bytes(len(data))}[how])


def test_a_damaged_ledger_is_one_line_pointing_to_reindex_and_only_reindex_rewrites_it(finished_sweep, capsys):
    db = finished_sweep / "sweep.db"
    for how in ("emptied", "truncated", "garbage"):  # one sweep, damaged and rebuilt three times
        _damage(db, how)
        damaged = db.read_bytes()
        for command in (["status", str(finished_sweep)], ["report", str(finished_sweep)], ["stop", str(finished_sweep)],
                        ["run", "spec.yaml", "--sweep-id", finished_sweep.name, "--runs-dir", "runs"]):
            assert cli.main(command) == 2, (how, command)
            line = error_line(capsys.readouterr().err)
            assert line.startswith(f"error: {db}: damaged") and f"reid-sweep reindex {finished_sweep}" in line, how
            assert db.read_bytes() == damaged, (how, command)  # not "repaired" into an empty ledger
        assert not (finished_sweep / "STOP").exists()  # nothing half-done either

        assert cli.main(["reindex", str(finished_sweep)]) == 0
        assert finished_points(finished_sweep) == Counter(VALUES[:2])
        assert cli.main(["status", str(finished_sweep)]) == 0
        capsys.readouterr()


def test_report_and_reindex_skip_a_half_written_notebook_with_one_warning(finished_sweep, caplog, capsys):
    notebook = finished_sweep / "trials" / "trial-001.ipynb"
    notebook.write_bytes(notebook.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING):
        assert cli.main(["report", str(finished_sweep)]) == 0
        assert (finished_sweep / "report" / "index.html").is_file()
        assert cli.main(["reindex", str(finished_sweep)]) == 0
    warnings = [r.getMessage() for r in caplog.records if str(notebook) in r.getMessage()]
    assert len(warnings) == 2 and all("not a readable notebook" in w for w in warnings)
    assert [t.name for t in trials_of(finished_sweep)] == ["trial-002"]


@contextmanager
def read_only(directory: Path):
    """``directory`` on a read-only bind mount (root only: as root, file modes stop nobody)."""
    subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=True)
        yield
    finally:
        subprocess.run(["umount", "--lazy", str(directory)], check=True)


def test_a_read_only_sweep_is_one_line_naming_the_file(finished_sweep, capsys):
    with read_only(finished_sweep):
        for command in (["status", str(finished_sweep)], ["report", str(finished_sweep)], ["stop", str(finished_sweep)],
                        ["run", "spec.yaml", "--sweep-id", finished_sweep.name, "--runs-dir", "runs"]):
            assert cli.main(command) == 2, command
            line = error_line(capsys.readouterr().err)
            assert line.startswith(f"error: {finished_sweep}") and ("permissions" in line or "read-only" in line), line


# --- 4. a full disk (a real tmpfs): no partial file, and the resume finishes -------------------------


@contextmanager
def small_disk(directory: Path, size: str):
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "--lazy", str(directory)], check=True)  # this process may still hold the ledger


def test_a_full_disk_leaves_no_partial_file_and_the_resume_finishes_with_a_report(tmp_path, tiny_config, monkeypatch,
                                                                                 capsys):
    spec = write_spec(tmp_path, tiny_config)
    # the target trial fills runs/ during its second epoch; the driver's next save of its notebook fails
    fill = (f"if lr == {TARGET!r} and epoch == 2 and not os.path.exists(cfg.OUTPUT_DIR + '/../../../filled'):\n"
            "        open(cfg.OUTPUT_DIR + '/../../../filled', 'w').close()\n"
            "        with open(cfg.OUTPUT_DIR + '/../../../filler', 'wb') as f:\n"
            "            try:\n"
            "                while True: f.write(bytes(1 << 16)); f.flush()\n"
            "            except OSError: pass")
    write_fake_trial(tmp_path / "fake.ipynb", extra=fill)
    monkeypatch.chdir(tmp_path)
    with small_disk(tmp_path / "runs", "4m") as runs:
        code = cli.main(["run", str(spec), "--runs-dir", "runs", "--wandb", "disabled"])
        [directory] = [p for p in runs.iterdir() if p.is_dir()]
        assert code == 2
        line = error_line(capsys.readouterr().err)  # the notebook's save or the ledger's commit met it first
        assert line.startswith(f"error: {directory}") and "disk full" in line and "free some space" in line
        assert not [p for p in runs.rglob("*") if ".partial" in p.name]
        for notebook in (directory / "trials").glob("*.ipynb"):
            nbformat.read(notebook, as_version=4)  # whole: the last complete save, never half of one
        assert_no_process_left()

        (runs / "filler").unlink()  # space freed
        assert cli.main(["run", str(spec), "--sweep-id", directory.name, "--runs-dir", "runs",
                         "--wandb", "disabled"]) == 0
        assert finished_points(directory) == Counter(VALUES)
        assert (directory / "report" / "index.html").is_file()


def test_a_checkpoint_that_meets_a_full_disk_leaves_nothing_behind(tmp_path):
    import torch

    from reidlib.engine.trainer import save_checkpoint

    model = torch.nn.Linear(512, 512)  # 1 MB of weights
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    with small_disk(tmp_path / "disk", "512k") as disk:
        with pytest.raises((OSError, RuntimeError)):  # torch's writer reports ENOSPC as a RuntimeError
            save_checkpoint(disk / "checkpoint.pth", model, optimizer, scheduler, epoch=1)
        assert list(disk.iterdir()) == []


# --- 5. spec files: encodings, an alias bomb, infinities ----------------------------------------------

BILLION_LAUGHS = "\n".join(["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + [
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi")])


@pytest.mark.parametrize("case", ["latin-1", "alias bomb", "inf min", "inf value"])
def test_a_hostile_spec_is_one_line_in_well_under_a_second(case, write_spec, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    if case == "latin-1":
        path.write_bytes("method: grid\nname: caf\u00e9\nparameters: {base_lr: [0.1]}\n".encode("latin-1"))
    elif case == "alias bomb":
        path.write_text(BILLION_LAUGHS + "\nmethod: grid\nparameters: {base_lr: [0.1]}\n")
    else:
        parameter = {"min": 0.001, "max": float("inf")} if case == "inf min" else {"value": float("inf")}
        path = write_spec({"method": "random", "parameters": {"base_lr": parameter}})
    start = time.perf_counter()
    assert cli.main(["validate", str(path)]) == 2
    assert time.perf_counter() - start < 1.0
    line = error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {path}"), line
    expected = {"latin-1": "not UTF-8 text", "alias bomb": "aliases expand to over",
                "inf min": "parameters.base_lr.max: expected a finite number", "inf value": "expected a finite number"}
    assert expected[case] in line


def test_a_spec_saved_as_utf16_reads_as_written(write_spec, tmp_path, capsys, monkeypatch):
    utf8 = write_spec({"method": "grid", "name": "caf\u00e9", "parameters": {"base_lr": [0.1]}})
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_text(utf8.read_text(), encoding="utf-16")  # with its byte-order mark
    monkeypatch.chdir(REPO)  # validate looks for the trial notebook from the project root
    assert cli.main(["validate", str(utf16)]) == 0
    assert '"name": "caf\\u00e9"' in capsys.readouterr().out  # JSON's escape of the \u00e9 it read


# --- 6. symlinks planted under runs/<id>/trials/ are replaced, never followed -------------------------


def test_links_planted_under_trials_are_not_followed(tmp_path, tiny_config):
    spec = write_spec(tmp_path, tiny_config, VALUES[:2])
    write_fake_trial(tmp_path / "fake.ipynb")
    sweep_id = create_sweep(spec, tmp_path / "runs", tmp_path)
    trials = tmp_path / "runs" / sweep_id / "trials"
    (trials / "trial-002").mkdir(parents=True)
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    for name in ("notebook", "log", "verdict"):
        (outside / name).write_text("precious")
    (trials / "trial-001.ipynb").symlink_to(outside / "notebook")
    (trials / "trial-001.log").symlink_to(outside / "log")
    (trials / "trial-001").symlink_to(outside / "dir")  # the trial's output directory
    (trials / "trial-002" / "VERDICT.tmp").symlink_to(outside / "verdict")  # a file the driver writes there
    result = run_sweep(spec, sweep_id=sweep_id, runs_dir=tmp_path / "runs", project_dir=tmp_path, wandb="disabled",
                       progress=False)

    assert [t.state for t in result.trials] == ["finished"] * 2
    assert [(outside / name).read_text() for name in ("notebook", "log", "verdict")] == ["precious"] * 3
    assert list((outside / "dir").iterdir()) == []
    assert not any(p.is_symlink() for p in trials.rglob("*"))
    for trial in result.trials:
        nbformat.read(trial.notebook, as_version=4)
