"""Faults (issue 7): W&B failing, the ledger locked by another process, runs/ filling up, and four
driver processes on one ledger. Each sweep is of fake trials (seconds). Each test checks that the
sweep completes or resumes, that no completed trial is lost or run again, that the ledger, the wandb
offline runs and the executed notebooks agree, and that no kernel or other process is left alive."""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import papermill.iorw
import psutil
import pytest
import wandb
import yaml
from conftest import REPO
from helpers.fake_trial import barrier, wait_for_file, write_fake_trial
from helpers.processes import assert_no_tagged_process, new_tag, tagged_environment
from helpers.wandb_offline import read_run

from reidlib import cli
from reidlib.sweep import create_sweep, run_sweep
from reidlib.sweep import ledger as ledger_module
from reidlib.sweep.ledger import Ledger
from reidlib.trial import read_trial_notebook


@pytest.fixture
def grid_spec(tmp_path, tiny_config):
    """``make(values, max_epochs, epoch_seconds, extra)``: the path of a grid sweep of fake trials over base_lr."""

    def make(values: list[float], max_epochs: int = 2, epoch_seconds: float = 0.05, extra: str = "pass") -> Path:
        write_fake_trial(tmp_path / "fake.ipynb", extra, epoch_seconds=epoch_seconds)
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump({"config_file": str(tiny_config), "notebook": "fake.ipynb", "method": "grid",
                                        "parameters": {"base_lr": {"values": values}, "max_epochs": max_epochs}}))
        return path

    return make


def sweep(spec: Path, tmp_path: Path, **kwargs):
    """Run (or resume, with ``sweep_id``) a sweep of fake trials in this process, W&B offline."""
    return run_sweep(spec, runs_dir=tmp_path / "runs", project_dir=tmp_path, wandb="offline", progress=False, **kwargs)


def trials_of(sweep_dir: Path):
    ledger = Ledger.open(sweep_dir)
    try:
        return ledger.trials(with_history=True)
    finally:
        ledger.close()


def assert_records_agree(sweep_dir: Path) -> None:
    """Every trial that ran to its summary has the same epochs and summary in the ledger, in its
    executed notebook and in its one wandb offline run."""
    sweep_id = sweep_dir.name
    completed = [t for t in trials_of(sweep_dir) if t.summary]
    assert completed
    for trial in completed:
        params, epochs, summary = read_trial_notebook(trial.notebook)
        assert params["base_lr"] == trial.params["base_lr"]
        assert epochs == trial.history and summary == trial.summary, trial.name
        [run_dir] = (sweep_dir / "wandb").glob(f"offline-run-*-{sweep_id}-{trial.name}")
        run = read_run(run_dir / f"run-{sweep_id}-{trial.name}.wandb")
        assert [row["epoch"] for row in run["history"]] == [row["epoch"] for row in trial.history], trial.name
        assert [row["val/mAP"] for row in run["history"]] == pytest.approx([row["val/mAP"] for row in trial.history])
        assert run["summary"]["state"] == trial.state and run["summary"]["epochs_run"] == summary["epochs_run"]


def assert_no_process_left() -> None:
    """No kernel or other child of this test process is alive (after a short grace to exit); wandb's
    service process stays: there is one per process, reused by every later run."""
    children = [p for p in psutil.Process().children(recursive=True) if p.name() != "wandb-core"]
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], [p.cmdline()[:3] for p in alive]


def error_line(stderr: str) -> str:
    """The CLI's one error line (the rest of its stderr is the progress bar): no traceback."""
    assert "Traceback" not in stderr
    [line] = [line for line in stderr.splitlines() if line.startswith("error:")]
    return line


def assert_one_finished_trial_per_point(sweep_dir: Path, values: list[float]) -> None:
    finished = [t.params["base_lr"] for t in trials_of(sweep_dir) if t.state == "finished"]
    assert Counter(finished) == Counter(values)


# --- 1. W&B fails ------------------------------------------------------------------------------


def _raise(*_args, **_kwargs):
    raise ConnectionError("W&B is down")


@pytest.mark.parametrize("failure", ["init raises", "log raises", "wandb dir is a file"])
def test_wandb_failing_costs_no_trial_and_sync_writes_its_runs_from_the_ledger(failure, grid_spec, tmp_path, monkeypatch,
                                                                                caplog):
    values = [1e-3, 1e-2, 1e-1]
    spec = grid_spec(values, max_epochs=3)
    sweep_id = create_sweep(spec, tmp_path / "runs", tmp_path)
    directory = tmp_path / "runs" / sweep_id
    with monkeypatch.context() as broken:
        if failure == "init raises":
            broken.setattr(wandb, "init", _raise)
        elif failure == "log raises":
            broken.setattr(wandb.sdk.wandb_run.Run, "log", _raise)
        else:  # where wandb makes its directory there is a file: no one can write under it, root included
            (directory / "wandb").write_text("")
        with caplog.at_level(logging.WARNING, logger="reidlib"):
            result = sweep(spec, tmp_path, sweep_id=sweep_id)

    assert [t.state for t in result.trials] == ["finished"] * 3
    assert all(len(t.history) == 3 and t.summary["epochs_run"] == 3 for t in result.trials)
    assert all(t.wandb_id is None for t in result.trials)  # no trial has a complete wandb run
    [warning] = [r.getMessage() for r in caplog.records if "W&B" in r.getMessage()]
    assert "W&B logging failed" in warning and f"reid-sweep sync {directory}" in warning
    assert_no_process_left()

    # W&B works again: sync writes every trial's run from the ledger, then hands them all to `wandb sync`
    if failure == "wandb dir is a file":
        (directory / "wandb").unlink()
    uploads = []
    monkeypatch.setattr(subprocess, "call", lambda command: uploads.append(command) or 0)
    assert cli.main(["sync", str(directory)]) == 0
    assert_records_agree(directory)
    [command] = uploads
    assert command[1:4] == ["-m", "wandb", "sync"] and len(command[4:]) == 3
    assert cli.main(["sync", str(directory), "--project", "moved"]) == 0  # a second sync writes nothing new
    assert len(list((directory / "wandb").glob("offline-run-*"))) == 3
    assert uploads[1][4:6] == ["--project", "moved"] and len(uploads[1][6:]) == 3  # every run goes there


# --- 2. the ledger locked by another process ------------------------------------------------------

# Holds an exclusive SQLite transaction on the ledger once ``condition`` counts a row, until ``hold``
# seconds pass or the ``release`` file appears. It prints the time once it holds the lock (then makes
# the file ``locked`` beside the ledger) and the time just before it lets go: whatever waited for the
# lock happened after the second.
LOCKER = """
import pathlib, sqlite3, sys, time
db, condition, hold, release = pathlib.Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), pathlib.Path(sys.argv[4])
conn = sqlite3.connect(db, isolation_level=None)
while not conn.execute(condition).fetchone()[0]:
    time.sleep(0.02)
conn.execute("BEGIN EXCLUSIVE")
print(time.time(), flush=True)
(db.parent / "locked").touch()
until = time.time() + hold
while time.time() < until and not release.exists():
    time.sleep(0.02)
print(time.time(), flush=True)
conn.execute("COMMIT")
"""
FIRST_EPOCH = "SELECT COUNT(*) FROM history"
FIRST_FINISHED = "SELECT COUNT(*) FROM trials WHERE state = 'finished'"


def _lock_ledger(sweep_dir: Path, condition: str, hold: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", LOCKER, str(sweep_dir / "sweep.db"), condition, str(hold),
                             str(sweep_dir / "release")], stdout=subprocess.PIPE, text=True)


def test_a_ledger_locked_for_a_while_makes_the_sweep_wait_not_lose(grid_spec, tmp_path):
    values = [1e-3, 1e-2, 1e-1]
    # the first trial's second epoch waits for the lock: the driver meets it mid-trial, and waits
    spec = grid_spec(values, max_epochs=4, extra=wait_for_file("locked", epoch=2))
    sweep_id = create_sweep(spec, tmp_path / "runs", tmp_path)
    directory = tmp_path / "runs" / sweep_id
    locker = _lock_ledger(directory, FIRST_EPOCH, hold=3)
    result = sweep(spec, tmp_path, sweep_id=sweep_id)
    locked, unlocked = map(float, locker.communicate(timeout=30)[0].split())

    assert unlocked - locked >= 2.9
    first = result.trials[0]
    assert first.started < locked and first.ended > unlocked  # it ran through the lock
    assert [t.state for t in result.trials] == ["finished"] * 3 and all(len(t.history) == 4 for t in result.trials)
    assert_records_agree(directory)
    assert_no_process_left()


def test_a_ledger_locked_past_the_timeout_stops_the_sweep_with_one_line(grid_spec, tmp_path, monkeypatch, capsys):
    values = [1e-3, 1e-2, 1e-1]
    spec = grid_spec(values)
    sweep_id = create_sweep(spec, tmp_path / "runs", tmp_path)
    directory = tmp_path / "runs" / sweep_id
    monkeypatch.setattr(ledger_module, "LOCK_TIMEOUT_S", 1.0)
    monkeypatch.chdir(tmp_path)
    locker = _lock_ledger(directory, FIRST_FINISHED, hold=120)
    code = cli.main(["run", str(spec), "--sweep-id", sweep_id, "--runs-dir", "runs", "--wandb", "offline"])
    (directory / "release").touch()
    locker.communicate(timeout=30)

    assert code == 2
    assert error_line(capsys.readouterr().err).startswith(f"error: {directory / 'sweep.db'}: locked by another process for over 1 s")
    assert sqlite3.connect(directory / "sweep.db").execute("PRAGMA integrity_check").fetchone() == ("ok",)
    [first] = [t for t in trials_of(directory) if t.state == "finished"]
    assert len(first.history) == 2
    assert_no_process_left()

    sweep(spec, tmp_path, sweep_id=sweep_id)  # resumed once the lock is gone
    assert_one_finished_trial_per_point(directory, values)
    assert [t for t in trials_of(directory) if t.name == first.name] == [first]  # kept as it was, not run again
    assert_records_agree(directory)


# --- 3. runs/ fills up --------------------------------------------------------------------------


class FullDisk:
    """runs/ filling up, seen at the driver's two writers: papermill saving a trial notebook (an
    OSError ENOSPC without a file name, as ``write`` raises it) and the ledger's SQLite commits
    ('database or disk is full', what SQLite says on a full tmpfs). The disk fills when
    ``fills_at`` (a notebook's file name) is first saved, and is freed with ``free()``."""

    def __init__(self, monkeypatch, fills_at: str):
        self.full, self.fills_at = False, fills_at
        write, connect = papermill.iorw.papermill_io.write, sqlite3.connect

        def save(buf, path):
            self.full = self.full or Path(path).name == fills_at
            if self.full:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return write(buf, path)

        monkeypatch.setattr(papermill.iorw.papermill_io, "write", save)
        monkeypatch.setattr(ledger_module.sqlite3, "connect", lambda *a, **kw: _FullDiskConnection(connect(*a, **kw), self))

    def free(self) -> None:
        self.full, self.fills_at = False, None


class _FullDiskConnection:
    def __init__(self, conn: sqlite3.Connection, disk: FullDisk):
        self._conn, self._disk = conn, disk

    def execute(self, sql, *args):
        if self._disk.full and sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def test_a_full_disk_stops_the_sweep_with_one_line_and_it_resumes(grid_spec, tmp_path, monkeypatch, capsys):
    values = [1e-3, 1e-2, 1e-1, 1e-4]
    spec = grid_spec(values)
    monkeypatch.chdir(tmp_path)
    disk = FullDisk(monkeypatch, fills_at="trial-003.ipynb")
    code = cli.main(["run", str(spec), "--runs-dir", "runs", "--wandb", "offline"])
    [directory] = (tmp_path / "runs").iterdir()

    assert code == 2
    assert error_line(capsys.readouterr().err).startswith(f"error: {directory / 'sweep.db'}: disk full (database or disk is full)")
    disk.free()
    assert sqlite3.connect(directory / "sweep.db").execute("PRAGMA integrity_check").fetchone() == ("ok",)
    before = trials_of(directory)
    assert [(t.name, t.state) for t in before] == [("trial-001", "finished"), ("trial-002", "finished"),
                                                   ("trial-003", "running")]  # its end could not be written
    assert_no_process_left()

    sweep(spec, tmp_path, sweep_id=directory.name)
    after = trials_of(directory)
    assert after[:2] == before[:2]  # the completed trials are kept as they were, not run again
    assert after[2].state == "crashed" and after[3].retry_of == "trial-003"
    assert_one_finished_trial_per_point(directory, values)
    assert_records_agree(directory)


# --- 4. four driver processes on one ledger ---------------------------------------------------------


def test_four_driver_processes_share_one_sweep(grid_spec, tmp_path):
    # the first four trials wait for each other (one per driver: each runs one trial at a time), so all
    # four drivers claim from the ledger at once; the rest of the grid is shared out as they finish
    values = [round(1e-4 * (i + 1), 6) for i in range(8)]
    spec = grid_spec(values, extra=barrier(4))
    tag = new_tag()  # marks every process these drivers start, kernels and wandb's included
    env = tagged_environment(tag)
    command = [sys.executable, "-m", "reidlib.cli", "run", str(spec), "--runs-dir", "runs", "--wandb", "offline"]

    def start(*extra):
        return subprocess.Popen([*command, *extra], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    drivers = [start()]
    deadline = time.time() + 60
    while not list((tmp_path / "runs").glob("*/sweep.db")) and time.time() < deadline:
        time.sleep(0.1)
    [db] = (tmp_path / "runs").glob("*/sweep.db")
    drivers += [start("--sweep-id", db.parent.name) for _ in range(3)]
    outputs = [driver.communicate(timeout=300) for driver in drivers]

    assert [d.returncode for d in drivers] == [0] * 4, [err[-2000:] for _, err in outputs]
    trials = trials_of(db.parent)
    assert len(trials) == len(values) and all(t.state == "finished" and len(t.history) == 2 for t in trials)
    assert Counter(t.params["base_lr"] for t in trials) == Counter(values)  # no point twice, none lost
    assert len({t.worker for t in trials}) == 4  # every driver ran trials
    assert len(list((db.parent / "trials").glob("trial-*.ipynb"))) == len(values)
    assert len(list((db.parent / "wandb").glob("offline-run-*"))) == len(values)
    assert_records_agree(db.parent)
    assert any("best trial: " in out for out, _ in outputs) and (db.parent / "report" / "index.html").is_file()
    assert_no_tagged_process(tag)


def _probe_dead_lease(sweep_dir, token, rounds, results):
    from reidlib.sweep.lease import DriverLease

    seen_alive = 0
    for _ in range(rounds):
        seen_alive += DriverLease.alive(sweep_dir, token)
        DriverLease.any_alive(sweep_dir)  # meets drivers starting and releasing
    results.put(("seen alive", seen_alive))


def _start_and_release_drivers(sweep_dir, rounds, results):
    from reidlib.sweep.lease import DriverLease

    for _ in range(rounds):
        DriverLease(sweep_dir).release()
    results.put(("started", rounds))


def test_lease_probes_running_together_neither_revive_a_dead_driver_nor_block_a_starting_one(tmp_path):
    """status, stop, reports and joining drivers all probe leases, at any moment, from several processes."""
    import multiprocessing

    from reidlib.sweep.lease import DriverLease

    dead = DriverLease(tmp_path)
    dead._file.close()  # its process died: the lock is gone, the file stays
    results = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_probe_dead_lease, args=(tmp_path, dead.token, 1500, results))
               for _ in range(3)]
    workers.append(multiprocessing.Process(target=_start_and_release_drivers, args=(tmp_path, 800, results)))
    for worker in workers:
        worker.start()
    outcomes = sorted(results.get(timeout=120) for _ in workers)  # a probe that raised never reports
    for worker in workers:
        worker.join()
    assert outcomes == [("seen alive", 0)] * 3 + [("started", 800)]


def test_a_new_lease_file_is_locked_before_any_probe_can_see_it(tmp_path, monkeypatch):
    from reidlib.sweep import lease

    seen = []
    replace = os.replace

    def probe_then_replace(source, target):  # the moment before the file is published
        with open(source) as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
                seen.append("unlocked")
            except BlockingIOError:
                seen.append("locked")
        replace(source, target)

    monkeypatch.setattr(lease.os, "replace", probe_then_replace)
    held = lease.DriverLease(tmp_path)
    assert seen == ["locked"] and lease.DriverLease.alive(tmp_path, held.token)
    held.release()
    assert not lease.DriverLease.alive(tmp_path, held.token)


def _save_destinations(sweep_dir, rounds, results):
    from reidlib.sweep import reindex

    warnings = []
    reindex.log.warning = lambda *args: warnings.append(args)  # a failed write is only a warning
    for i in range(rounds):
        reindex.save_wandb_destination(sweep_dir, {"project": f"p{i % 2}", "entity": None})
    results.put(len(warnings))


def test_drivers_saving_the_wandb_destination_together_never_fail(tmp_path):
    import multiprocessing

    results = multiprocessing.Queue()
    writers = [multiprocessing.Process(target=_save_destinations, args=(tmp_path, 300, results)) for _ in range(2)]
    for writer in writers:
        writer.start()
    assert [results.get(timeout=60) for _ in writers] == [0, 0]
    for writer in writers:
        writer.join()
        assert writer.exitcode == 0
    assert json.loads((tmp_path / "wandb.json").read_text())["project"] in ("p0", "p1")
    assert [p.name for p in tmp_path.iterdir()] == ["wandb.json"]  # no partial copy left


def test_a_driver_joining_live_drivers_keeps_their_stop_and_one_resuming_clears_it(write_spec, tmp_path):
    from reidlib.sweep.layout import STOP_FILE
    from reidlib.sweep.lease import DriverLease
    from reidlib.sweep.session import open_session

    spec = write_spec({"method": "grid", "parameters": {"base_lr": [0.001, 0.002]}})
    runs = tmp_path / "runs"
    sweep_id = create_sweep(spec, runs, REPO)
    sweep_dir = runs / sweep_id
    live = DriverLease(sweep_dir)  # another driver, still finishing after `reid-sweep stop`
    (sweep_dir / STOP_FILE).write_text("stop")
    joined = open_session(spec, runs, sweep_id, REPO)
    assert (sweep_dir / STOP_FILE).exists()
    joined.lease.release()
    joined.ledger.close()
    live.release()
    resumed = open_session(spec, runs, sweep_id, REPO)
    assert not (sweep_dir / STOP_FILE).exists()
    resumed.lease.release()
    resumed.ledger.close()


def test_a_ledger_from_before_retries_drivers_and_wandb_destinations_were_recorded_still_opens(tmp_path):
    ledger = Ledger.create(tmp_path, "old", "old", {})
    ledger.claim_trial(lambda _trials: ({"base_lr": 0.1}, None))
    ledger.close()
    with sqlite3.connect(tmp_path / "sweep.db") as db:  # the schema of the first sessions' ledgers
        db.execute("ALTER TABLE trials DROP COLUMN retry_of")
        db.execute("ALTER TABLE trials DROP COLUMN worker")
        db.execute("ALTER TABLE sweep DROP COLUMN wandb")
    ledger = Ledger.open(tmp_path)
    [trial] = ledger.trials()
    assert trial.params == {"base_lr": 0.1} and trial.retry_of is None and trial.worker is None
    assert ledger.sweep()["wandb"] == {"project": "reid-sweep", "entity": None}  # where those sweeps logged
    assert ledger.record_wandb_destination({"project": "p", "entity": None})["project"] == "reid-sweep"
