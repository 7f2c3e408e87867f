"""Search you can repeat and steer: seeds, no repeats, conditional parameters, Optuna's tpe and gp.

Most tests drive the controller directly with made-up trial results (milliseconds per trial); the
ones about resume, workers, the ledger and W&B run sweeps of fake trial notebooks."""
from __future__ import annotations

import json
import logging
import math
import sqlite3

import pytest
import yaml
from helpers.fake_trial import write_fake_trial
from helpers.wandb_offline import _items, read_run

from reidlib.errors import SpecError, SweepStateError
from reidlib.sweep import run_sweep
from reidlib.sweep.controller import LocalController
from reidlib.sweep.ledger import FINISHED, RUNNING, Ledger, Trial
from reidlib.sweep.spec import check_against_config, check_notebook_parameters, load_spec, normalise

LR = {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1}
CONDITIONAL = {"optimizer": {"values": ["SGD", "Adam"]},
               "momentum": {"values": [0.5, 0.9, 0.99], "parent": "optimizer", "parent_values": ["SGD"]}}


def score(params: dict) -> float:
    """A made-up landscape: best at lr 1e-3 with SGD and momentum 0.9."""
    lr = params.get("base_lr", 1e-3)
    return math.exp(-abs(math.log10(lr) + 3)) * (1.0 if params.get("momentum", 0.9) == 0.9 else 0.8)


def canon(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def drive(raw: dict, n: int, seed: int | None = 7, controller: LocalController | None = None,
          trials: list[Trial] | None = None) -> list[dict]:
    """Ask the controller for up to ``n`` trials, each finishing with ``score`` at once."""
    controller = controller or LocalController(normalise(raw), seed=seed)
    trials = [] if trials is None else trials
    for _ in range(n):
        chosen = controller.next_trial(trials)
        if chosen is None:
            break
        params, _ = chosen
        history = [{"epoch": e, "val/mAP": score(params) * e / 2} for e in (1, 2)]
        trials.append(Trial(name=f"trial-{len(trials) + 1:03d}", seq=len(trials) + 1, state=FINISHED,
                            params=params, history=history))
    return [t.params for t in trials]


@pytest.mark.parametrize("method", ["random", "bayes", "tpe", "gp"])
def test_a_seed_repeats_the_sweeps_configurations(method):
    raw = {"method": method, "parameters": {"base_lr": LR, **CONDITIONAL}}
    n = 12 if method == "gp" else 8  # past Optuna's 10 random start-up trials for one of its samplers
    first = drive(raw, n, seed=7)
    assert drive(raw, n, seed=7) == first
    assert drive(raw, n, seed=8) != first
    assert drive({**raw, "seed": 7}, n, seed=None) == first  # the spec's seed is the same seed


def test_without_a_seed_one_is_drawn_and_repeats_the_sweep():
    raw = {"method": "random", "parameters": {"base_lr": LR}}
    controller = LocalController(normalise(raw))
    drawn = drive(raw, 4, controller=controller)
    assert drive(raw, 4, seed=controller.seed) == drawn
    assert drive(raw, 4, seed=None) != drawn  # no seed: a different sweep each time, as before


def test_a_random_sweep_draws_the_same_configurations_however_its_trials_interleave():
    """Each draw's random state comes from the seed and the number of draws before it, not from the
    results or the order of the trials: two workers hand out the same set as one."""
    raw = {"method": "random", "parameters": {"base_lr": LR, **CONDITIONAL}}
    alone = drive(raw, 6)
    controller = LocalController(normalise(raw), seed=7)
    trials: list[Trial] = []
    for i in range(6):  # a second worker's trial still runs while the next is drawn
        params, _ = controller.next_trial(trials)
        trials.append(Trial(name=f"trial-{i + 1:03d}", seq=i + 1, state=RUNNING, params=params))
        if i % 2:
            trials[-2].state = FINISHED
    assert sorted(map(canon, (t.params for t in trials))) == sorted(map(canon, alone))


@pytest.mark.parametrize("method", ["random", "bayes", "tpe", "gp"])
def test_a_discrete_space_is_never_drawn_twice_and_ends_when_exhausted(method, caplog):
    raw = {"method": method, "parameters": {"base_lr": [1e-4, 1e-3, 1e-2], "margin": [0.3, 0.5]}}
    with caplog.at_level(logging.INFO, logger="reidlib.sweep.controller"):
        drawn = drive(raw, 20)
    assert len(drawn) == 6 and len({canon(p) for p in drawn}) == 6
    assert [r.message for r in caplog.records if "every configuration" in r.message] == \
        ["every configuration of the search space has been tried (6 trials): the sweep ends"]


def test_running_and_failed_trials_count_as_drawn_and_retries_aside():
    raw = {"method": "random", "parameters": {"base_lr": [1e-4, 1e-3, 1e-2]}}
    trials = [Trial(name="trial-001", seq=1, state=RUNNING, params={"base_lr": 1e-4}),
              Trial(name="trial-002", seq=2, state="failed", params={"base_lr": 1e-3})]
    controller = LocalController(normalise(raw), seed=3)
    assert controller.next_trial(trials) == ({"base_lr": 1e-2}, None)
    trials.append(Trial(name="trial-003", seq=3, state="crashed", params={"base_lr": 1e-2}))
    assert controller.next_trial(trials) == ({"base_lr": 1e-2}, "trial-003")  # a retry reruns its trial
    trials.append(Trial(name="trial-004", seq=4, state=FINISHED, params={"base_lr": 1e-2}, retry_of="trial-003"))
    assert controller.next_trial(trials) is None


@pytest.mark.parametrize("method", ["grid", "random", "bayes", "tpe", "gp"])
def test_a_conditional_child_is_present_exactly_when_its_parent_calls_for_it(method):
    raw = {"method": method, "parameters": {"base_lr": [1e-4, 1e-3], **CONDITIONAL}}
    drawn = drive(raw, 20)
    for params in drawn:
        assert ("momentum" in params) == (params["optimizer"] == "SGD"), params
    assert len({canon(p) for p in drawn}) == len(drawn)
    # 2 learning rates x (Adam, or SGD with one of 3 momenta): 8 points, none differing only in an absent child
    assert len(drawn) == 8


def test_conditional_children_nest_and_chain():
    raw = {"method": "grid", "parameters": {
        "optimizer": ["SGD", "Adam"],
        "SOLVER": {"parameters": {
            "MOMENTUM": {"values": [0.9, 0.99], "parent": "optimizer", "parent_values": ["SGD"]},
            "NESTEROV": {"values": [True, False], "parent": "MOMENTUM", "parent_values": [0.9]}}}}}
    drawn = drive(raw, 20)
    assert sorted(map(canon, drawn)) == sorted(map(canon, [
        {"optimizer": "SGD", "SOLVER": {"MOMENTUM": 0.9, "NESTEROV": True}},
        {"optimizer": "SGD", "SOLVER": {"MOMENTUM": 0.9, "NESTEROV": False}},
        {"optimizer": "SGD", "SOLVER": {"MOMENTUM": 0.99}},
        {"optimizer": "Adam"}]))


@pytest.mark.parametrize("parameters, field, words", [
    ({"momentum": {"values": [0.9], "parent": "optimiser", "parent_values": ["SGD"]}, "optimizer": ["SGD"]},
     "parameters.momentum.parent", "unknown parameter 'optimiser'; expected one of optimizer"),
    ({"a": {"values": [1], "parent": "b", "parent_values": [1]}, "b": {"values": [1], "parent": "a", "parent_values": [1]}},
     "parameters.a.parent", "parents form a cycle: a -> b -> a"),
    ({"momentum": {"values": [0.9], "parent": "optimizer", "parent_values": ["SGD", "sgd"]}, "optimizer": ["SGD", "Adam"]},
     "parameters.momentum.parent_values[1]", "'optimizer' never takes 'sgd' (its values: ['SGD', 'Adam'])"),
    ({"momentum": {"values": [0.9], "parent": "base_lr", "parent_values": [0.1]}, "base_lr": LR},
     "parameters.momentum.parent", "'base_lr' is continuous"),
    ({"momentum": {"values": [0.9], "parent_values": ["SGD"]}, "optimizer": ["SGD"]},
     "parameters.momentum.parent", "parent_values needs a parent"),
    ({"momentum": {"values": [0.9], "parent": "optimizer"}, "optimizer": ["SGD"]},
     "parameters.momentum.parent_values", "expected a non-empty list"),
])
def test_bad_parents_are_one_line_naming_the_field(parameters, field, words):
    with pytest.raises(SpecError) as err:
        normalise({"method": "random", "parameters": parameters})
    assert err.value.field == field and words in err.value.message
    assert "\n" not in str(err.value)


def test_a_bad_parent_is_one_line_from_the_cli(tmp_path, capsys):
    from reidlib.cli import main

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"method": "tpe", "parameters": {
        "optimizer": ["SGD"], "momentum": {"values": [0.9], "parent": "optimiser", "parent_values": ["SGD"]}}}))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "parameters.momentum.parent: unknown parameter 'optimiser'" in err


def test_momentum_is_an_alias_and_a_trial_notebook_parameter(write_spec):
    from conftest import REPO

    spec = load_spec(write_spec({"method": "tpe", "parameters": {"optimizer": ["SGD", "Adam"], "momentum": {
        "distribution": "uniform", "min": 0.5, "max": 0.99, "parent": "optimizer", "parent_values": ["SGD"]}}}))
    check_against_config(spec)
    check_notebook_parameters(spec, REPO)
    assert spec.to_dict()["parameters"]["momentum"]["parent"] == "optimizer"  # the ledger keeps the condition


@pytest.mark.parametrize("method", ["tpe", "gp"])
def test_optuna_reads_every_wandb_distribution(method):
    parameters = {
        "categorical": ["a", "b"], "weighted": {"distribution": "categorical_w_probabilities", "values": [1, 2],
                                                 "probabilities": [0.3, 0.7]},
        "constant": 5, "int_uniform": {"min": 2, "max": 6}, "uniform": {"min": 0.1, "max": 0.2},
        "q_uniform": {"distribution": "q_uniform", "min": 0, "max": 1, "q": 0.25},
        "log_uniform_values": LR,
        "q_log_uniform_values": {"distribution": "q_log_uniform_values", "min": 16, "max": 256, "q": 16},
        "inv_log_uniform_values": {"distribution": "inv_log_uniform_values", "min": 0.01, "max": 0.1},
        "normal": {"distribution": "normal", "mu": 1, "sigma": 0.1},
        "log_normal": {"distribution": "log_normal", "mu": 0, "sigma": 0.5},
        "beta": {"distribution": "beta", "a": 2, "b": 5},
        "nested": {"parameters": {"leaf": [True, False]}},
    }
    drawn = drive({"method": method, "parameters": parameters}, 12)  # 2 past Optuna's random start-up
    assert len(drawn) == 12
    for p in drawn:
        assert p["categorical"] in ("a", "b") and p["weighted"] in (1, 2) and p["constant"] == 5
        assert p["int_uniform"] in range(2, 7) and 0.1 <= p["uniform"] <= 0.2
        assert p["q_uniform"] in (0, 0.25, 0.5, 0.75, 1.0)
        assert 1e-5 <= p["log_uniform_values"] <= 1e-1
        assert p["q_log_uniform_values"] % 16 == 0 and 0.01 <= p["inv_log_uniform_values"] <= 0.1
        assert 0 < p["log_normal"] and 0 <= p["beta"] <= 1 and math.isfinite(p["normal"])
        assert p["nested"]["leaf"] in (True, False)
    assert len({p["uniform"] for p in drawn}) == 12


def test_hyperband_judges_optuna_trials_as_wandb_does():
    raw = {"method": "tpe", "parameters": {"base_lr": LR},
           "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2}}
    controller = LocalController(normalise(raw), seed=1)
    trials = [Trial(name=f"trial-{i}", seq=i, state=RUNNING if i == 4 else FINISHED, params={"base_lr": 1e-3},
                    history=[{"epoch": 1, "val/mAP": value}]) for i, value in enumerate([0.5, 0.6, 0.7, 0.1], 1)]
    assert controller.to_stop(trials) == {"trial-4"}


# --- through the driver, with fake trial notebooks ---


@pytest.fixture
def sweep_of(tmp_path, tiny_config):
    """``sweep_of(spec, extra=..., **run_sweep kwargs)`` runs a sweep of fake trials."""

    def make(spec: dict, extra: str = "pass", **kwargs):
        write_fake_trial(tmp_path / "fake.ipynb", extra, 0.02)
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump({"config_file": str(tiny_config), "notebook": "fake.ipynb", **spec}))
        kwargs.setdefault("wandb", "disabled")
        kwargs.setdefault("runs_dir", tmp_path / "runs")
        return run_sweep(path, project_dir=tmp_path, progress=False, **kwargs)

    return make


def searched(result) -> list[dict]:
    """The configurations a sweep ran, its retries standing for the trials they reran."""
    superseded = {t.retry_of for t in result.trials if t.retry_of}
    return [t.params for t in result.trials if t.name not in superseded]


def test_an_interrupted_and_resumed_tpe_sweep_draws_what_one_in_one_go_does(sweep_of, tmp_path):
    spec = {"method": "tpe", "seed": 11, "count": 3, "parameters": {"base_lr": LR, "max_epochs": 2}}
    in_one_go = searched(sweep_of(spec, runs_dir=tmp_path / "one-go"))
    stop_once = ("if cfg.OUTPUT_DIR.endswith('trial-002') and not os.path.exists('stopped-once'):\n"
                 "        open('stopped-once', 'w').close(); from reidlib.sweep import stop_sweep\n"
                 "        stop_sweep(__import__('pathlib').Path(cfg.OUTPUT_DIR).parents[1])")
    first = sweep_of(spec, extra=stop_once, runs_dir=tmp_path / "resumed")
    assert [t.state for t in first.trials] == ["finished", "stopped"]
    resumed = sweep_of(spec, extra=stop_once, runs_dir=tmp_path / "resumed", sweep_id=first.sweep_id)
    assert resumed.trials[2].retry_of == "trial-002"
    assert searched(resumed) == in_one_go and len(in_one_go) == 3


def test_a_discrete_random_sweep_of_six_points_runs_six_distinct_trials_and_ends(sweep_of):
    result = sweep_of({"method": "random", "parameters": {"base_lr": [1e-4, 1e-3, 1e-2], "ims_per_batch": [8, 16],
                                                          "max_epochs": 1}})
    assert len(result.trials) == 6 and all(t.state == "finished" for t in result.trials)
    assert len({(t.params["base_lr"], t.params["ims_per_batch"]) for t in result.trials}) == 6


def test_two_workers_on_a_seeded_tpe_sweep_hand_out_no_configuration_twice(sweep_of):
    result = sweep_of({"method": "tpe", "seed": 5, "count": 6,
                       "parameters": {"base_lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2], "max_epochs": 2}}, workers=2)
    assert sorted(t.params["base_lr"] for t in result.trials) == [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]


def test_the_seed_is_in_the_ledger_and_each_wandb_run_and_children_are_absent(sweep_of, tmp_path):
    spec = {"method": "grid", "parameters": {
        "SOLVER.OPTIMIZER_NAME": ["Adam", "SGD"], "max_epochs": 1,
        "SOLVER.MOMENTUM": {"values": [0.5, 0.9], "parent": "SOLVER.OPTIMIZER_NAME", "parent_values": ["SGD"]}}}
    result = sweep_of(spec, wandb="offline", seed=42)
    ledger = Ledger.open(result.directory)
    assert ledger.sweep()["seed"] == 42
    assert sorted(map(canon, (t.params for t in result.trials))) == sorted(map(canon, [
        {"SOLVER.OPTIMIZER_NAME": "Adam", "max_epochs": 1},
        {"SOLVER.OPTIMIZER_NAME": "SGD", "SOLVER.MOMENTUM": 0.5, "max_epochs": 1},
        {"SOLVER.OPTIMIZER_NAME": "SGD", "SOLVER.MOMENTUM": 0.9, "max_epochs": 1}]))
    for trial in result.trials:
        [run_file] = (result.directory / "wandb").glob(f"offline-run-*-{trial.name}/run-*.wandb")
        config = _items(read_run(run_file)["run"].config.update)
        assert config["sweep_seed"] == 42
        assert ("SOLVER.MOMENTUM" in config) == (trial.params["SOLVER.OPTIMIZER_NAME"] == "SGD")
    # a resume keeps the sweep's seed; asking for another would not repeat it: one line, nothing run
    with pytest.raises(SweepStateError, match="seed: sweep .* draws with seed 42 .*not 43"):
        sweep_of(spec, sweep_id=result.sweep_id, seed=43)
    assert len(ledger.trials()) == 3


def test_a_ledger_from_before_seeds_gets_one_on_resume(tmp_path):
    path = tmp_path / "sweep.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE sweep (id TEXT PRIMARY KEY, name TEXT, spec TEXT NOT NULL, created REAL NOT NULL, wandb TEXT);"
        "CREATE TABLE trials (name TEXT PRIMARY KEY, seq INTEGER UNIQUE NOT NULL, state TEXT NOT NULL, params TEXT "
        "NOT NULL, config TEXT, summary TEXT, notebook TEXT, wandb_id TEXT, started REAL, ended REAL, exit_reason TEXT, "
        "retry_of TEXT, worker TEXT);"
        "CREATE TABLE history (trial TEXT NOT NULL, epoch INTEGER NOT NULL, metrics TEXT NOT NULL, PRIMARY KEY (trial, epoch));"
        "INSERT INTO sweep VALUES ('s1', 'old', '{}', 0, NULL);")
    old.close()
    ledger = Ledger(path)
    assert ledger.sweep()["seed"] is None
    assert ledger.record_seed(123) == 123 and ledger.record_seed(456) == 123
