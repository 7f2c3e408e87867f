"""The ledger's own logic (milliseconds, a SQLite file in a temp dir, no kernels): claiming trials,
epochs in order, conditional updates, a failed choice leaving nothing, two connections (as two
driver processes) never claiming one point twice."""
from __future__ import annotations

import threading

import pytest

from reidlib.errors import SweepStateError
from reidlib.sweep.ledger import FAILED, FINISHED, RUNNING, STOPPED, Ledger

SPEC = {"method": "grid", "parameters": {"base_lr": {"values": [0.1, 0.01]}}, "seed": 5}


@pytest.fixture
def ledger(tmp_path):
    made = Ledger.create(tmp_path, "s1", "a sweep", SPEC)
    yield made
    made.close()


def test_a_new_ledger_records_the_sweep_and_leaves_no_partial_file(tmp_path, ledger):
    sweep = ledger.sweep()
    assert (sweep["id"], sweep["name"], sweep["spec"], sweep["seed"], sweep["wandb"]) == ("s1", "a sweep", SPEC, 5, {})
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    with pytest.raises(SweepStateError, match="no sweep here"):
        Ledger.open(tmp_path / "elsewhere")


def test_trials_are_claimed_in_order_and_the_choice_sees_every_trial_with_its_epochs(ledger):
    ledger.worker = "driver-a"
    seen = []

    def choose(trials):
        seen.append([(t.name, len(t.history)) for t in trials])
        return {"base_lr": 0.1 / (len(trials) + 1)}, None

    first = ledger.claim_trial(choose)
    ledger.add_epoch(first.name, {"epoch": 1, "val/mAP": 0.2})
    second = ledger.claim_trial(choose)
    assert (first.name, second.name) == ("trial-001", "trial-002") and seen == [[], [("trial-001", 1)]]
    assert [(t.name, t.state, t.params, t.worker) for t in ledger.trials()] == [
        ("trial-001", RUNNING, {"base_lr": 0.1}, "driver-a"), ("trial-002", RUNNING, {"base_lr": 0.05}, "driver-a")]
    assert ledger.claim_trial(lambda trials: None) is None and len(ledger.trials()) == 2  # the sweep is done


def test_a_choice_that_raises_claims_nothing(ledger):
    def broken(trials):
        raise RuntimeError("search failed")

    with pytest.raises(RuntimeError):
        ledger.claim_trial(broken)
    assert ledger.trials() == [] and ledger.claim_trial(lambda trials: ({"base_lr": 0.1}, None)).name == "trial-001"


def test_epochs_read_back_in_epoch_order_and_a_repeated_epoch_replaces_the_first(ledger):
    trial = ledger.claim_trial(lambda trials: ({"base_lr": 0.1}, None))
    for epoch in (10, 2, 1, 11):
        ledger.add_epoch(trial.name, {"epoch": epoch, "val/mAP": epoch / 100})
    ledger.add_epoch(trial.name, {"epoch": 2, "val/mAP": 0.5})
    [read] = ledger.trials(with_history=True)
    assert [(row["epoch"], row["val/mAP"]) for row in read.history] == [(1, 0.01), (2, 0.5), (10, 0.1), (11, 0.11)]
    assert ledger.trials()[0].history == []  # without history unless asked


def test_an_update_only_while_the_trial_is_in_the_given_states(ledger):
    trial = ledger.claim_trial(lambda trials: ({"base_lr": 0.1}, None))
    ledger.end_trial(trial.name, FINISHED, {"status": "finished", "best": {"val/mAP": 0.4}})
    # another process ended it first: adopting it as an orphan must not overwrite that
    assert not ledger.update_trial(trial.name, if_state=(RUNNING,), state=FAILED, exit_reason="orphaned")
    [read] = ledger.trials()
    assert (read.state, read.summary, read.exit_reason) == (FINISHED, {"status": "finished", "best": {"val/mAP": 0.4}}, None)
    assert read.ended >= read.started
    assert ledger.update_trial(trial.name, if_state=(FINISHED, STOPPED), exit_reason="checked")
    assert ledger.trials()[0].exit_reason == "checked"
    with pytest.raises(ValueError, match="unknown trial fields"):
        ledger.update_trial(trial.name, params={"base_lr": 1})


def test_the_first_recorded_seed_and_wandb_destination_are_kept(ledger):
    assert ledger.record_seed(9) == 5  # the spec's seed was recorded at creation
    destination = {"project": "reid", "entity": None}
    assert ledger.record_wandb_destination(destination) == destination
    assert ledger.record_wandb_destination({"project": "other", "entity": "lab"}) == destination


def test_two_connections_claiming_at_once_never_take_one_point_twice(tmp_path, ledger):
    """Two driver processes' connections to one file: each claim sees every earlier one."""
    points = [{"base_lr": i} for i in range(40)]

    def choose(trials):
        taken = [t.params for t in trials]
        free = [p for p in points if p not in taken]
        return (free[0], None) if free else None

    def claim_all(worker):
        own = Ledger.open(tmp_path)
        own.worker = worker
        start.wait()
        while own.claim_trial(choose) is not None:
            pass
        own.close()

    start = threading.Barrier(2)
    threads = [threading.Thread(target=claim_all, args=(w,)) for w in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    trials = ledger.trials()
    assert sorted(t.params["base_lr"] for t in trials) == list(range(40))
    assert [t.seq for t in trials] == list(range(1, 41))
