"""The sweep driver's semantics on fake trials (the real trial contract, no training): grid,
count, workers, hyperband, failures, retries, time limits, stop, resume."""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from urllib.parse import unquote

import pytest
import yaml
from helpers.fake_trial import barrier, write_fake_trial
from helpers.processes import assert_no_tagged_process, new_tag, tagged_environment
from helpers.wandb_offline import read_run

from reidlib.analysis import open_local_sweep
from reidlib.errors import SweepStateError
from reidlib.sweep import driver, run_sweep, trial_run, workers
from reidlib.sweep.bridge import wandb_destination, write_missing_runs
from reidlib.sweep.controller import SweepPaused
from reidlib.sweep.lease import DriverLease
from reidlib.sweep.ledger import Ledger
from reidlib.trial import read_trial_notebook


@pytest.fixture
def sweep_env(tmp_path, tiny_config):
    """``make(spec, notebook_extra=..., **run_sweep kwargs)`` runs a sweep of fake trials."""

    def make(spec: dict, extra: str = "pass", epoch_seconds: float = 0.05, prelude: str = "", **kwargs):
        write_fake_trial(tmp_path / "fake.ipynb", extra, epoch_seconds, prelude)
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump({"config_file": str(tiny_config), "notebook": "fake.ipynb", **spec}))
        kwargs.setdefault("wandb", "disabled")
        return run_sweep(path, runs_dir=tmp_path / "runs", project_dir=tmp_path, progress=False, **kwargs)

    return make


def grid(values, **extra):
    return {"method": "grid", "parameters": {"base_lr": {"values": values}, "max_epochs": 3}, **extra}


def test_grid_runs_every_point_once_then_ends(sweep_env):
    result = sweep_env(grid([0.1, 0.01, 0.001]))
    assert sorted(t.params["base_lr"] for t in result.trials) == [0.001, 0.01, 0.1]
    assert all(t.state == "finished" and len(t.history) == 3 for t in result.trials)


def test_progress_clocks_tick_live_only_where_someone_watches(monkeypatch):
    """A terminal (or a notebook widget) redraws the bars' clocks every second; a log file gets a redraw
    only when something happens, or once a minute: a night's sweep under nohup leaves kilobytes of log."""
    import io

    from reidlib.sweep.progress import CLOCK_S, LOG_CLOCK_S, SweepProgress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, clock in ((io.StringIO(), LOG_CLOCK_S), (Terminal(), CLOCK_S)):
        monkeypatch.setattr(sys, "stderr", stream)
        progress = SweepProgress("s", 2, 0, 1, "val/mAP", enabled=True)
        assert progress.clock_s == clock
        drawn = len(stream.getvalue())
        progress._drawn = time.monotonic() - 2  # two seconds without news
        progress.tick()
        assert (len(stream.getvalue()) > drawn) is (clock == CLOCK_S)


def test_wandb_destination_precedence(monkeypatch):
    """Given, else the sweep's recorded one (whole), else as the ``wandb sweep`` CLI: environment,
    then the spec, then project 'reid-sweep'."""
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    spec = {"project": "spec-p", "entity": "spec-e"}
    assert wandb_destination({}) == {"project": "reid-sweep", "entity": None}
    assert wandb_destination(spec) == spec
    monkeypatch.setenv("WANDB_PROJECT", "env-p")
    monkeypatch.setenv("WANDB_ENTITY", "env-e")
    assert wandb_destination(spec) == {"project": "env-p", "entity": "env-e"}
    recorded = {"project": "ledger-p", "entity": None}  # a recorded default entity stays the default
    assert wandb_destination(spec, recorded=recorded) == recorded
    assert wandb_destination(spec, "given-p", "given-e", recorded) == {"project": "given-p", "entity": "given-e"}


def test_the_ledger_keeps_a_sweeps_wandb_project_for_resume_and_sync(sweep_env, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_PROJECT", "not-this-one")
    result = sweep_env(grid([0.1, 0.2]), wandb="offline", project="market-bot", entity="lab", count=1)
    [trial] = result.trials
    [run_file] = (result.directory / "wandb").glob(f"offline-run-*-{trial.name}/run-*.wandb")
    written = read_run(run_file)["run"]
    assert (written.project, written.entity) == ("market-bot", "lab")
    # W&B missed the trial: sync, told nothing, writes its run from the ledger to the sweep's project
    run_file.parent.rename(run_file.parent.with_name("lost"))
    ledger = Ledger.open(result.directory)
    ledger.update_trial(trial.name, wandb_id=None)
    ledger.close()
    assert write_missing_runs(result.directory) == [trial.name]
    [run_file] = (result.directory / "wandb").glob(f"offline-run-*-{trial.name}/run-*.wandb")
    rewritten = read_run(run_file)
    assert (rewritten["run"].project, rewritten["run"].entity) == ("market-bot", "lab")
    assert [row["epoch"] for row in rewritten["history"]] == [1, 2, 3]
    # a resume keeps it (and restores the copy reindex reads); one that asks for another project
    # would split the sweep: one line, nothing run, the sweep let go
    (result.directory / "wandb.json").unlink()
    resumed = sweep_env(grid([0.1, 0.2]), wandb="offline", sweep_id=result.sweep_id, count=2)
    assert len(resumed.trials) == 2
    assert json.loads((result.directory / "wandb.json").read_text()) == {"project": "market-bot", "entity": "lab"}
    with pytest.raises(SweepStateError, match="project: sweep .* logs to W&B project 'market-bot'.*sync"):
        sweep_env(grid([0.1, 0.2]), wandb="offline", sweep_id=result.sweep_id, project="elsewhere")
    assert len(Ledger.open(result.directory).trials()) == 2 and not DriverLease.any_alive(result.directory)


def test_count_caps_a_random_sweep(sweep_env):
    spec = {"method": "random", "count": 4,
            "parameters": {"base_lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1}}}
    result = sweep_env(spec)
    assert len(result.trials) == 4


def test_two_workers_never_share_a_grid_point(sweep_env):
    values = [10.0 ** -e for e in range(1, 7)]
    result = sweep_env(grid(values), extra=barrier(2), workers=2)  # the first two trials wait for each other
    assert all(t.state == "finished" for t in result.trials), [t.exit_reason for t in result.trials]
    assert Counter(t.params["base_lr"] for t in result.trials) == Counter(values)
    first, second = result.trials[:2]
    assert first.started < second.ended and second.started < first.ended  # they did overlap


def test_hyperband_stops_trials_that_fall_behind(sweep_env):
    spec = grid([1e-3, 1.1e-3, 1e-7, 1e-8], early_terminate={"type": "hyperband", "min_iter": 1, "eta": 2})
    spec["parameters"]["max_epochs"] = 6
    result = sweep_env(spec)
    by_lr = {t.params["base_lr"]: t for t in result.trials}
    assert by_lr[1e-3].state == "finished" and len(by_lr[1e-3].history) == 6
    stopped = [t for t in result.trials if t.state == "stopped"]
    assert stopped and all(t.exit_reason == "hyperband" for t in stopped)
    # judged at the first band (epoch 1) against the trials before them, they stop there, not one epoch later
    assert [len(t.history) for t in stopped] == [1] * len(stopped)
    assert by_lr[1e-8] in stopped
    _, _, summary = read_trial_notebook(by_lr[1e-8].notebook)
    assert summary["status"] == "stopped_early"  # the trial saw the stop and ended itself


def test_metric_target_ends_the_sweep(sweep_env):
    spec = grid([1e-3, 1e-2, 1e-1], metric={"name": "val/mAP", "goal": "maximize", "target": 0.9})
    result = sweep_env(spec)
    assert len(result.trials) == 1  # lr 1e-3 reaches 1.0 at its last epoch


def test_a_failing_trial_does_not_stop_the_sweep(sweep_env):
    result = sweep_env(grid([1e-3, 1e-2, 1e-1]), extra='assert lr != 1e-2, "boom"')
    states = {t.params["base_lr"]: (t.state, t.exit_reason) for t in result.trials}
    assert states[1e-3] == ("finished", None) and states[1e-1] == ("finished", None)
    assert states[1e-2] == ("failed", "AssertionError: boom")


def test_a_diverged_trial_is_failed_with_its_reason_and_the_sweep_goes_on(sweep_env):
    result = sweep_env(grid([1e-3, 1e-1, 1e-2]), extra='''if lr == 1e-1:
        row["train/loss"] = float("nan")
        status = "diverged"''')
    states = {t.params["base_lr"]: (t.state, t.exit_reason) for t in result.trials}
    assert states == {1e-3: ("finished", None), 1e-1: ("failed", "diverged"), 1e-2: ("finished", None)}
    diverged = next(t for t in result.trials if t.params["base_lr"] == 1e-1)
    loss = diverged.history[0]["train/loss"]
    assert len(diverged.history) == 3 and (loss is None or math.isnan(loss))  # JSON keeps no NaN: null


def test_a_killed_kernel_is_recorded_retried_once_and_the_sweep_goes_on(sweep_env):
    result = sweep_env(grid([1e-3, 1e-2]), extra="if lr == 1e-2 and epoch == 2: os.kill(os.getpid(), 9)")
    crashed = [t for t in result.trials if t.state == "crashed"]
    assert len(crashed) == 2  # the trial and its one retry
    assert crashed[1].retry_of == crashed[0].name and "kernel died" in crashed[0].exit_reason
    assert [len(t.history) for t in crashed] == [1, 1]  # what it logged before dying is kept
    assert sum(t.state == "finished" for t in result.trials) == 1


def test_out_of_memory_is_retried_once_with_half_the_batch(sweep_env):
    prelude = ('if cfg.SOLVER.IMS_PER_BATCH > 4:\n'
               '    trial.glue(trial.SUMMARY, {"status": "oom", "epochs_run": 0})\n'
               '    raise RuntimeError("CUDA out of memory")')
    result = sweep_env(grid([1e-3], **{"defaults": {"ims_per_batch": 8}}), prelude=prelude)
    first, retry = result.trials
    assert first.state == "failed" and first.summary["status"] == "oom"
    assert retry.retry_of == first.name and retry.params["ims_per_batch"] == 4 and retry.state == "finished"


def test_startup_failures_pause_the_sweep(sweep_env):
    spec = {"method": "random", "count": 20, "parameters": {"base_lr": {"min": 0.001, "max": 0.01}}}
    with pytest.raises(SweepPaused, match="last 5 trials failed before their first epoch"):
        sweep_env(spec, prelude="raise ValueError('broken dataset')")


def test_time_limit_stops_a_slow_trial(sweep_env):
    spec = grid([1e-3])
    spec["parameters"]["max_epochs"] = 200
    result = sweep_env(spec, epoch_seconds=0.2, time_limit=2)
    [t] = result.trials
    assert t.state == "stopped" and t.exit_reason == "time limit" and len(t.history) < 200


def test_a_trial_that_ignores_its_time_limit_is_killed(sweep_env, monkeypatch):
    monkeypatch.setattr(trial_run, "grace_period", lambda limit: 1.0)
    result = sweep_env(grid([1e-3]), extra="time.sleep(600)", time_limit=1)
    [t] = result.trials
    assert t.state == "failed" and t.exit_reason.startswith("time limit")


def _cli_sweep(tmp_path, tiny_config, spec: dict, extra: str = "pass", epoch_seconds: float = 0.5):
    """A fake-trial sweep run by the CLI in a subprocess: ``(command, runs_dir)``."""
    write_fake_trial(tmp_path / "fake.ipynb", extra=extra, epoch_seconds=epoch_seconds)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"config_file": str(tiny_config), "notebook": "fake.ipynb", **spec}))
    runs = tmp_path / "runs"
    return [sys.executable, "-m", "reidlib.cli", "run", str(path), "--runs-dir", str(runs), "--wandb", "disabled"], runs


def _wait_for_epochs(runs, trials_with_history: int):
    """The ledger, once ``trials_with_history`` trials have logged an epoch (five minutes at most: a
    loaded machine starts a driver and two kernels slowly)."""
    deadline = time.time() + 300
    while time.time() < deadline:
        for db in runs.glob("*/sweep.db"):
            if sum(bool(t.history) for t in Ledger(db).trials(with_history=True)) >= trials_with_history:
                return db
        time.sleep(0.2)
    pytest.fail(f"the sweep never had {trials_with_history} trials with an epoch")


def test_driver_killed_mid_trial_then_resumed(tmp_path, tiny_config):
    cmd, runs = _cli_sweep(tmp_path, tiny_config, grid([1e-3, 1e-2, 1e-1]))
    tag = new_tag()  # the driver's kernels inherit it
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=tagged_environment(tag), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    db = _wait_for_epochs(runs, 2)  # the second trial is running
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert_no_tagged_process(tag, timeout=15)  # ipykernel's parent poller ends the orphaned kernel

    resumed = subprocess.run(cmd + ["--sweep-id", db.parent.name], cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    trials = Ledger(db).trials()
    assert [(t.name, t.state) for t in trials] == [("trial-001", "finished"), ("trial-002", "crashed"),
                                                   ("trial-003", "finished"), ("trial-004", "finished")]
    assert trials[2].retry_of == "trial-002" and trials[2].params == trials[1].params
    assert sorted(t.params["base_lr"] for t in trials if t.state == "finished") == [1e-3, 1e-2, 1e-1]


def test_ctrl_c_stops_the_running_trial_cleanly_and_resume_reruns_it(tmp_path, tiny_config):
    spec = grid([1e-3, 1e-2])
    spec["parameters"]["max_epochs"] = 6
    interrupted_once = tmp_path / "interrupted"  # until then an epoch takes 5 s: the signal lands mid-trial
    cmd, runs = _cli_sweep(tmp_path, tiny_config, spec, epoch_seconds=0.05,
                           extra=f"os.path.exists({str(interrupted_once)!r}) or time.sleep(5)")
    tag = new_tag()
    # Ctrl-C as a terminal delivers it: a background job (nohup, `make test &`) inherits SIGINT ignored,
    # and Python then never raises KeyboardInterrupt
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=tagged_environment(tag), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    db = _wait_for_epochs(runs, 1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "resume" in stderr
    [interrupted] = Ledger(db).trials()
    assert interrupted.state == "stopped" and interrupted.exit_reason == "interrupted"
    _, epochs, summary = read_trial_notebook(interrupted.notebook)
    assert summary["status"] == "stopped_early" and 1 <= len(epochs) < 6  # saved, with its summary
    assert_no_tagged_process(tag, timeout=5)  # the driver ended its kernel, not its parent poller

    interrupted_once.touch()
    resumed = subprocess.run(cmd + ["--sweep-id", db.parent.name], cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    trials = Ledger(db).trials()
    assert [t.state for t in trials] == ["stopped", "finished", "finished"]
    assert trials[1].retry_of == interrupted.name


def test_stop_command_ends_the_sweep_after_running_trials(sweep_env, tmp_path):
    spec = grid([1e-3, 1e-2, 1e-1])
    spec["parameters"]["max_epochs"] = 50
    extra = "if epoch == 2: from reidlib.sweep import stop_sweep; stop_sweep(__import__('pathlib').Path(cfg.OUTPUT_DIR).parents[1])"
    result = sweep_env(spec, extra=extra)
    [t] = result.trials
    assert t.state == "stopped" and t.exit_reason == "stop command" and len(t.history) <= 3


def test_driver_notebook_runs_and_resumes_a_sweep(tmp_path, tiny_config):
    from conftest import REPO

    from reidlib.sweep.runner import execute_notebook

    write_fake_trial(tmp_path / "fake.ipynb")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"config_file": str(tiny_config), "notebook": str(tmp_path / "fake.ipynb"),
                                    "results_dir_base": str(tmp_path / "runs"), **grid([1e-3, 1e-2, 1e-1])}))
    first = execute_notebook(REPO / "notebooks" / "sweep.ipynb", tmp_path / "sweep1.ipynb",
                             {"spec": str(spec), "count": 2}, cwd=REPO)
    assert first.error is None
    [db] = (tmp_path / "runs").glob("*/sweep.db")
    assert len(Ledger(db).trials()) == 2
    # it ends as reid-sweep run does: the analysis, best/ and report/ (finish_sweep)
    assert all((db.parent / name).is_file() for name in ("report/analysis.ipynb", "best/summary.json", "report/index.html"))
    # the executed analysis's links open from where it lies, as from its HTML page beside it
    cells = json.loads((db.parent / "report" / "analysis.ipynb").read_text())["cells"]
    html = "".join("".join(o.get("data", {}).get("text/html", "")) for c in cells for o in c.get("outputs", []))
    hrefs = {unquote(h) for h in re.findall(r'href="([^"]+)"', html) if not h.startswith(("http", "#"))}
    assert any(h.endswith("trial-001.ipynb") for h in hrefs)
    assert all((db.parent / "report" / h).exists() for h in hrefs), hrefs
    outputs = json.dumps([c.get("outputs") for c in json.loads((tmp_path / "sweep1.ipynb").read_text())["cells"]])
    assert "application/vnd.jupyter.widget-view+json" in outputs  # tqdm.auto's widget bars
    assert "reid-leaderboard" in outputs and "reid-report" in outputs  # the leaderboard with its report links
    again = execute_notebook(REPO / "notebooks" / "sweep.ipynb", tmp_path / "sweep2.ipynb",
                             {"spec": str(spec), "sweep_id": db.parent.name}, cwd=REPO)
    assert again.error is None
    assert [t.state for t in Ledger(db).trials()] == ["finished"] * 3  # resumed: the grid's last point


def test_reindex_rebuilds_the_ledger_from_the_notebooks(sweep_env):
    from reidlib.sweep.reindex import reindex

    result = sweep_env(grid([1e-3, 1e-2, 1e-1]), extra='assert lr != 1e-2, "boom"', project="market-bot")
    before = {t.name: (t.state, t.params, t.exit_reason, len(t.history), t.summary) for t in result.trials}
    (result.directory / "sweep.db").unlink()
    reindex(result.directory)
    rebuilt = Ledger(result.directory / "sweep.db")
    after = {t.name: (t.state, t.params, t.exit_reason, len(t.history), t.summary)
             for t in rebuilt.trials(with_history=True)}
    assert after == before
    assert rebuilt.sweep()["wandb"]["project"] == "market-bot"


def _analysis_text(path) -> tuple[str, list]:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    return text, [o for o in outputs if o.get("output_type") == "error"]


def test_analysis_of_an_all_failed_sweep_says_so(sweep_env):
    from reidlib.workflow import make_report

    result = sweep_env(grid([1e-3, 1e-2]), prelude="raise ValueError('no data here')")
    outputs = make_report(result.directory)
    text, errors = _analysis_text(outputs["analysis"])
    assert not errors and "no trial finished: 2x ValueError: no data here" in text
    assert "config" not in outputs and outputs["report"].is_file()  # nothing to export, still a report


def test_analysis_of_a_running_sweep_is_partial_not_broken(sweep_env):
    from reidlib.workflow import run_analysis

    result = sweep_env(grid([1e-3]))
    ledger = Ledger(result.directory / "sweep.db")
    lease = DriverLease(result.directory)  # the driver running it, alive while the analysis runs
    ledger.worker = lease.token
    ledger.claim_trial(lambda trials: ({"base_lr": 0.5}, None))  # a trial that is still running
    text, errors = _analysis_text(run_analysis(result.directory))
    assert not errors and "1 finished, 1 running" in text and "best run: trial-001" in text
    # its driver dies: the trial reads as crashed (W&B's state when a run's heartbeat stops)
    lease.release()
    [_, gone] = open_local_sweep(result.directory).runs
    assert (gone.state, gone.exit_reason) == ("crashed", "driver stopped while it ran")
    assert Ledger(result.directory / "sweep.db").trials()[1].state == "running"  # reading writes nothing
    assert driver.stop_sweep(result.directory) == []  # no live trial to wait for


def test_a_trial_whose_driver_ends_it_while_the_reader_looks_is_not_called_crashed(sweep_env, monkeypatch):
    """A driver records its trial's end, then lets go of its lease: a reader between the two reads again."""
    from reidlib.analysis import readers

    result = sweep_env(grid([1e-3]))
    ledger = Ledger(result.directory / "sweep.db")
    lease = DriverLease(result.directory)
    ledger.worker = lease.token
    trial = ledger.claim_trial(lambda trials: ({"base_lr": 0.5}, None))

    def driver_finishes_first(sweep_dir, token):
        ledger.end_trial(trial.name, "finished", {"status": "finished"})
        lease.release()
        return False

    monkeypatch.setattr(readers.DriverLease, "alive", staticmethod(driver_finishes_first))
    states = {run.name: run.state for run in open_local_sweep(result.directory).runs}
    assert states[trial.name] == "finished"


def test_a_bayes_sweep_runs_distinct_trials_up_to_its_count(sweep_env):
    """Through the driver; that bayes steers by the results is test_controller's (no kernels needed)."""
    spec = {"method": "bayes", "count": 4,
            "parameters": {"base_lr": {"distribution": "log_uniform_values", "min": 1e-6, "max": 1.0}, "max_epochs": 2}}
    result = sweep_env(spec)
    assert len(result.trials) == 4 and all(t.state == "finished" for t in result.trials)
    assert len({t.params["base_lr"] for t in result.trials}) == 4


def test_each_worker_sees_only_its_gpu_and_a_share_of_the_cpus(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert workers.worker_environments(gpus=["0", "3"]) == [{"CUDA_VISIBLE_DEVICES": "0", "OMP_NUM_THREADS": "8"},
                                                           {"CUDA_VISIBLE_DEVICES": "3", "OMP_NUM_THREADS": "8"}]
    assert workers.worker_environments(workers=4) == [{"OMP_NUM_THREADS": "4"}] * 4
