"""The local controller's own logic on trials made by hand (milliseconds: no kernels, no ledger):
what runs again (interruptions, kernel deaths up to the cap, out of memory with half the batch),
when a sweep pauses (the start-up-failure guard), what counts towards ``count`` and ``run_cap``,
when a metric target ends the sweep, what the search engine sees of each trial, and that bayes
steers by the results."""
from __future__ import annotations

import pytest

from reidlib.sweep import controller as ctl
from reidlib.sweep.controller import (
    MAX_KERNEL_DEATHS,
    MAX_STARTUP_FAILURES,
    LocalController,
    SweepPaused,
)
from reidlib.sweep.ledger import CRASHED, FAILED, FINISHED, RUNNING, STOPPED, Trial
from reidlib.sweep.spec import normalise
from reidlib.trial import TrialState
from sweeps import RunState

LRS = [1e-1, 1e-2, 1e-3, 1e-4]
GRID = {"method": "grid", "parameters": {"base_lr": LRS}}


def epochs(*maps: float) -> list[dict]:
    return [{"epoch": e, "val/mAP": m} for e, m in enumerate(maps, 1)]


def trial(seq: int, state: str = FINISHED, params: dict | None = None, history: list[dict] | None = None,
          **fields) -> Trial:
    return Trial(name=f"trial-{seq:03d}", seq=seq, state=state, params=params or {"base_lr": LRS[(seq - 1) % 4]},
                 history=history or [], **fields)


def controller(raw: dict = GRID, **kwargs) -> LocalController:
    return LocalController(normalise(raw), seed=kwargs.pop("seed", 1), **kwargs)


# --- count, run_cap, metric target -----------------------------------------------------------------


def test_a_retry_does_not_count_towards_count():
    """count is points searched: a trial run again stands in for the one it reruns."""
    crashed = trial(1, CRASHED, exit_reason="driver interrupted")
    retry = trial(2, params=crashed.params, retry_of=crashed.name, history=epochs(0.5))
    chosen = controller({**GRID, "count": 2}).next_trial([crashed, retry])
    assert chosen is not None and chosen[1] is None and chosen[0] != crashed.params  # a second point
    second = trial(3, params=chosen[0], history=epochs(0.4))
    assert controller({**GRID, "count": 2}).next_trial([crashed, retry, second]) is None


def test_running_trials_count_and_the_smaller_of_count_and_run_cap_is_the_limit():
    running = [trial(1, RUNNING), trial(2, RUNNING)]
    assert controller({**GRID, "count": 3}).next_trial(running)[0] == {"base_lr": LRS[2]}
    assert controller({**GRID, "count": 2}).next_trial(running) is None  # a second worker may not add a third
    assert controller({**GRID, "count": 3, "run_cap": 2}).next_trial(running) is None
    assert controller({**GRID, "run_cap": 3}, count=2).next_trial(running) is None  # the CLI's --count
    assert controller(GRID).next_trial(running)[0] == {"base_lr": LRS[2]}  # no limit: the grid's end


@pytest.mark.parametrize("goal, target, values, reached", [
    ("maximize", 0.9, [0.5, 0.95, 0.7], True),  # the best epoch counts, not the last
    ("maximize", 0.9, [0.5, 0.89], False),
    ("minimize", 0.1, [0.5, 0.05, 0.3], True),
    ("minimize", 0.1, [0.5, 0.2], False),
])
def test_a_metric_target_ends_the_sweep_once_any_epoch_reaches_it(goal, target, values, reached):
    raw = {**GRID, "metric": {"name": "val/mAP", "goal": goal, "target": target}}
    trials = [trial(1, history=epochs(*values))]
    assert controller(raw).target_reached(trials) is reached
    assert (controller(raw).next_trial(trials) is None) is reached


def test_without_a_target_the_sweep_runs_on_whatever_the_results():
    trials = [trial(1, history=epochs(1.0))]
    assert not controller(GRID).target_reached(trials) and controller(GRID).next_trial(trials) is not None


# --- what runs again ----------------------------------------------------------------------------


@pytest.mark.parametrize("state, reason, retried", [
    (CRASHED, "driver interrupted", True),
    (CRASHED, "kernel died (exit code -9)", True),
    (STOPPED, "interrupted", True),  # Ctrl-C
    (STOPPED, "stop command", True),
    (STOPPED, "hyperband", False),  # the search's own decision
    (STOPPED, "time limit", False),
    (FAILED, "ValueError: boom", False),
    (FINISHED, None, False),
])
def test_what_runs_again_with_the_same_parameters(state, reason, retried):
    first = trial(1, state, params={"base_lr": 0.5}, exit_reason=reason)
    chosen = controller().next_trial([first])
    assert (chosen == ({"base_lr": 0.5}, first.name)) is retried, chosen


def test_a_retry_that_is_interrupted_again_runs_again_and_a_rerun_trial_is_not_rerun_twice():
    first = trial(1, CRASHED, params={"base_lr": 0.5}, exit_reason="driver interrupted")
    retry = trial(2, STOPPED, params={"base_lr": 0.5}, exit_reason="interrupted", retry_of=first.name)
    assert controller().next_trial([first, retry]) == ({"base_lr": 0.5}, retry.name)
    done = trial(3, params={"base_lr": 0.5}, retry_of=retry.name, history=epochs(0.3))
    assert controller().next_trial([first, retry, done])[1] is None  # a new point, nothing rerun


def _died(seq: int, retry_of: str | None = None) -> Trial:
    return trial(seq, CRASHED, params={"base_lr": 0.5}, exit_reason="kernel died (exit code -9)", retry_of=retry_of)


def test_a_kernel_that_keeps_dying_is_failed_at_the_cap():
    deaths = [_died(1)]
    for seq in range(2, MAX_KERNEL_DEATHS + 1):
        deaths.append(_died(seq, retry_of=deaths[-1].name))
    *before, last = deaths
    assert ctl.capped_crash(before, before[-1], "kernel died (x)") == (CRASHED, "kernel died (x)")
    state, reason = ctl.capped_crash(deaths, last, "kernel died (exit code -9)")
    assert state == FAILED and reason == f"kernel died {MAX_KERNEL_DEATHS} times (the retry cap); last: kernel died (exit code -9)"


def test_only_the_kernels_own_deaths_count_towards_the_cap():
    """A driver killed under its trial (crashed, 'driver interrupted') is not the trial's fault."""
    lineage = [trial(1, CRASHED, params={"base_lr": 0.5}, exit_reason="driver interrupted")]
    for seq in range(2, MAX_KERNEL_DEATHS + 1):
        lineage.append(trial(seq, CRASHED, params={"base_lr": 0.5}, exit_reason="driver interrupted",
                             retry_of=lineage[-1].name))
    lineage.append(_died(MAX_KERNEL_DEATHS + 1, retry_of=lineage[-1].name))
    assert ctl.capped_crash(lineage, lineage[-1], "kernel died (y)") == (CRASHED, "kernel died (y)")


def _oom(seq: int, batch: int, k: int = 4, sampler: str = "softmax_triplet", params: dict | None = None,
         **fields) -> Trial:
    return trial(seq, FAILED, params=params or {"base_lr": 1e-3, "ims_per_batch": batch}, summary={"status": "oom"},
                 config={"SOLVER.IMS_PER_BATCH": batch, "DATALOADER.NUM_INSTANCE": k, "DATALOADER.SAMPLER": sampler},
                 exit_reason="oom", **fields)


@pytest.mark.parametrize("batch, k, sampler, halved", [
    (64, 4, "softmax_triplet", 32),
    (28, 4, "softmax_triplet", 12),  # a multiple of NUM_INSTANCE: whole identities per batch
    (8, 4, "triplet", 4),
    (4, 4, "softmax_triplet", None),  # one identity cannot shrink
    (3, 4, "softmax", 1),  # no identities per batch: any size
    (1, 4, "softmax", None),
])
def test_out_of_memory_halves_the_batch_keeping_whole_identities(batch, k, sampler, halved):
    params = ctl.halved_batch(_oom(1, batch, k, sampler))
    assert params == (None if halved is None else {"base_lr": 1e-3, "ims_per_batch": halved})


def test_the_halved_batch_replaces_the_dotted_key_too():
    oom = _oom(1, 64, params={"base_lr": 1e-3, "SOLVER.IMS_PER_BATCH": 64})
    assert ctl.halved_batch(oom) == {"base_lr": 1e-3, "ims_per_batch": 32}


def test_out_of_memory_runs_again_once_per_point_with_half_the_batch():
    first = _oom(1, 64)
    assert controller().next_trial([first]) == ({"base_lr": 1e-3, "ims_per_batch": 32}, first.name)
    again = _oom(2, 32, params={"base_lr": 1e-3, "ims_per_batch": 32}, retry_of=first.name)
    chosen = controller().next_trial([first, again])
    assert chosen[1] is None  # the retry ran out of memory too: the point is failed, the search moves on
    assert controller().next_trial([_oom(1, 4)])[1] is None  # nothing smaller to try


# --- the start-up-failure guard -----------------------------------------------------------------


def _broken(seq: int, **fields) -> Trial:
    return trial(seq, FAILED, exit_reason="ValueError: broken dataset", notebook=f"trials/trial-{seq:03d}.ipynb", **fields)


def test_trials_failing_before_their_first_epoch_pause_the_sweep():
    broken = [_broken(seq) for seq in range(1, MAX_STARTUP_FAILURES + 1)]
    controller().next_trial(broken[:-1])  # one fewer: not yet
    with pytest.raises(SweepPaused, match=f"the last {MAX_STARTUP_FAILURES} trials failed before their first epoch "
                                          r"\(last: ValueError: broken dataset; see trials/trial-005.ipynb\)"):
        controller().next_trial(broken)


def test_trials_failing_after_their_first_epoch_do_not_pause_the_sweep():
    """Diverging or out of memory mid-training is the search's business (bad parameters), not a broken setup."""
    late = [_broken(seq, history=epochs(0.1)) for seq in range(1, MAX_STARTUP_FAILURES + 3)]
    controller().next_trial(late)
    mixed = [_broken(1)] + late[1:2] + [_broken(seq) for seq in range(3, MAX_STARTUP_FAILURES + 2)]
    controller().next_trial(mixed)  # only four in a row failed at start-up


def test_the_startup_streak_counts_dead_kernels_and_passes_over_interruptions_and_running_trials():
    streak = [_broken(1), _died(2), _broken(3)]
    passed_over = [trial(4, CRASHED, exit_reason="driver interrupted"), trial(5, STOPPED, exit_reason="interrupted"),
                   trial(6, RUNNING)]
    with pytest.raises(SweepPaused, match="the last 5 trials"):
        controller().next_trial(streak + passed_over + [_broken(7), _died(8)])
    controller().next_trial(streak + [trial(4, history=epochs(0.5))] + [_broken(5), _died(6)])  # a finished one ends it


# --- what the search engine sees ----------------------------------------------------------------


@pytest.mark.parametrize("status, errored, state", [
    ("finished", False, FINISHED), ("stopped_early", False, STOPPED), ("finished", True, FAILED),
    ("stopped_early", True, FAILED), ("diverged", False, FAILED), ("oom", False, FAILED), (None, True, FAILED),
    (None, False, FAILED),  # no summary: it never got to the end
])
def test_a_trials_state_from_its_own_account(status, errored, state):
    assert TrialState.of(status, errored) == state


@pytest.mark.parametrize("state, run_state, stopped", [
    (RUNNING, RunState.running, False), (FINISHED, RunState.finished, False),
    (STOPPED, RunState.finished, True),  # hyperband's stop is a finished run for sweeps, flagged stopped
    (FAILED, RunState.failed, False), (CRASHED, RunState.crashed, False),
])
def test_each_state_is_the_run_state_wandb_sweeps_expects(state, run_state, stopped):
    run = ctl._as_sweep_run(trial(1, state, history=epochs(0.2, 0.6, 0.4)), "val/mAP", "maximize")
    assert (run.state, run.stopped) == (run_state, stopped)
    assert run.summary_metrics == {"val/mAP": 0.6} and run.config == {"base_lr": {"value": LRS[0]}}


def test_the_best_value_follows_the_goal_and_skips_what_is_not_a_number():
    history = [{"epoch": 1, "train/loss": 2.0}, {"epoch": 2, "train/loss": float("nan")},
               {"epoch": 3, "train/loss": None}, {"epoch": 4, "train/loss": 0.5}, {"epoch": 5}]
    assert ctl.best_value(history, "train/loss", "minimize") == 0.5
    assert ctl.best_value(history, "train/loss", "maximize") == 2.0
    assert ctl.best_value(history, "val/mAP", "maximize") is None
    assert ctl._as_sweep_run(trial(1, FAILED), "val/mAP", "maximize").summary_metrics == {}


def test_bayes_steers_towards_the_better_results():
    """The same trials with opposite results: bayes (same seed) looks where the results were good."""
    raw = {"method": "bayes", "parameters": {"base_lr": {"distribution": "log_uniform_values", "min": 1e-6, "max": 1.0}}}
    lrs = [1e-6, 1e-5, 1e-4, 1e-2, 1e-1, 1.0]

    def next_lr(scores: list[float]) -> float:
        trials = [trial(seq, params={"base_lr": lr}, history=epochs(score))
                  for seq, (lr, score) in enumerate(zip(lrs, scores, strict=True), 1)]
        params, _ = controller(raw, seed=3).next_trial(trials)
        return params["base_lr"]

    small_lrs_win, large_lrs_win = next_lr([0.9, 0.8, 0.6, 0.3, 0.2, 0.1]), next_lr([0.1, 0.2, 0.3, 0.6, 0.8, 0.9])
    assert small_lrs_win < 1e-3 < large_lrs_win
