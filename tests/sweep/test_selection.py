"""The one definition of a sweep's selected trial, on trials made by hand (milliseconds: no ledger)."""
from __future__ import annotations

from reidlib.sweep.ledger import FAILED, FINISHED, STOPPED, Trial
from reidlib.sweep.selection import metric_value, ranked_trials, selected_trial

LOSS = {"name": "train/loss", "goal": "minimize"}


def trial(seq: int, state: str = FINISHED, mAP: float | None = None, loss: float | None = None) -> Trial:
    history = [{"epoch": 1, "val/mAP": mAP, "train/loss": loss}]
    summary = {"status": "finished", "best": {"val/mAP": mAP} if mAP is not None else {}}
    return Trial(name=f"trial-{seq:03d}", seq=seq, state=state, params={}, summary=summary, history=history)


def test_only_finished_trials_with_a_value_rank_best_first():
    trials = [trial(1, mAP=0.3), trial(2, STOPPED, mAP=0.9), trial(3, mAP=0.5), trial(4, FAILED, mAP=0.8),
              trial(5), trial(6, mAP=float("nan"))]
    assert [t.name for t in ranked_trials(trials)] == ["trial-003", "trial-001"]
    assert selected_trial(trials).name == "trial-003"
    assert selected_trial([trial(1, STOPPED, mAP=0.9)]) is None


def test_any_metric_and_goal_read_from_the_history_when_the_summary_lacks_it():
    trials = [trial(1, mAP=0.9, loss=0.7), trial(2, mAP=0.1, loss=0.2), trial(3, mAP=0.5, loss=0.4)]
    assert metric_value(trials[1], LOSS) == 0.2  # the trial itself only wrote its val/* best
    assert [t.name for t in ranked_trials(trials, LOSS)] == ["trial-002", "trial-003", "trial-001"]


def test_any_run_read_through_value_of():
    runs = [trial(1, mAP=0.9), trial(2, mAP=0.1)]
    assert selected_trial(runs, {"name": "x", "goal": "minimize"}, lambda run: run.summary["best"]["val/mAP"]) is runs[1]
