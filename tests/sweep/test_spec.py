
import pytest
from conftest import REPO

from reidlib.errors import SpecError
from reidlib.sweep.spec import (
    check_against_config,
    flatten_run_config,
    load_spec,
    normalise,
)


def test_old_shorthand_is_normalised(write_spec):
    spec = load_spec(write_spec({"name": "reid_test_sweep", "method": "random", "count": 3,
                                 "parameters": {"base_lr": [0.0001, 0.00035], "max_epochs": 2}}))
    assert spec.search_config["parameters"] == {"base_lr": {"values": [0.0001, 0.00035]}, "max_epochs": {"value": 2}}
    assert spec.metric == {"name": "val/mAP", "goal": "maximize"}
    assert spec.count == 3
    assert "count" not in spec.search_config and "config_file" not in spec.search_config
    check_against_config(spec)


def test_nested_parameters_are_dotted_keys(write_spec):
    spec = load_spec(write_spec({"method": "grid", "parameters": {
        "SOLVER": {"parameters": {"BASE_LR": {"values": [0.1, 0.2]}, "STEPS": {"value": [3, 4]}}}}}))
    check_against_config(spec)
    params, overrides = flatten_run_config({"SOLVER": {"BASE_LR": 0.1, "STEPS": [3, 4]}, "base_lr": 0.3})
    assert params == {"base_lr": 0.3}
    assert overrides == {"SOLVER.BASE_LR": 0.1, "SOLVER.STEPS": [3, 4]}


def test_min_max_infers_distribution_like_wandb():
    spec = normalise({"method": "random", "parameters": {"a": {"min": 1, "max": 4}, "b": {"min": 0.1, "max": 1.0}}})
    assert spec.search_config["parameters"]["a"]["distribution"] == "int_uniform"
    assert spec.search_config["parameters"]["b"]["distribution"] == "uniform"


@pytest.mark.parametrize("raw, field, words", [
    ({"method": "random", "parameters": {"base_lr": {"min": "abc", "max": 1.0}}}, "parameters.base_lr.min", "expected a number, got 'abc'"),
    ({"method": "grid", "parameters": {"base_lr": {"min": 0.1, "max": 1.0}}}, "parameters.base_lr", "grid search needs discrete values"),
    ({"method": "random", "parameters": {"base_lr": {"values": []}}}, "parameters.base_lr.values", "non-empty list"),
    ({"method": "random", "parameters": {"base_lr": [0.1]}, "count": -1}, "count", "positive integer"),
    ({"method": "random", "parameters": {"base_lr": [0.1]}, "count": 0}, "count", "positive integer"),
    ({"method": "anneal", "parameters": {"base_lr": [0.1]}}, "method", "grid, random, bayes"),
    ({"method": "random", "parameters": {}}, "parameters", "at least one"),
    ({"method": "random", "parameters": {"base_lr": [0.1]}, "early_terminate": {"type": "hyperband", "min_iter": 2, "s": 1.5}},
     "early_terminate.s", "positive integer"),
    ({"method": "random", "parameters": {"base_lr": [0.1]}, "early_terminate": {"type": "hyperband"}}, "early_terminate", "min_iter"),
    ({"method": "random", "parameters": {"base_lr": [0.1]}, "metric": {"name": "val/mAP", "goal": "up"}}, "metric.goal", "maximize"),
    ({"method": "random", "parameters": {"base_lr": {"distribution": "zipf", "min": 1, "max": 2}}}, "parameters.base_lr.distribution", "expected one of"),
    ({"method": "random", "parameters": {"base_lr": {"min": 2.0, "max": 1.0}}}, "parameters.base_lr.min", "min <= max"),
    ({"method": "random", "parameters": {"base_lr": {"min": 0.0, "max": 1.0, "distribution": "log_uniform_values"}}}, "parameters.base_lr.min", "positive"),
    ({"method": "random", "parameters": {"base_lr": [0.1]}, "cout": 3}, "cout", "unknown sweep key"),
    ({"method": "random", "parameters": {"opt": {"parameters": []}}}, "parameters.opt.parameters", "mapping"),
])
def test_bad_specs_name_the_field(raw, field, words):
    with pytest.raises(SpecError) as err:
        normalise(raw)
    assert err.value.field == field
    assert words in err.value.message


@pytest.mark.parametrize("parameters, field, words", [
    ({"base_lrr": [0.1]}, "parameters.base_lrr", "did you mean 'base_lr'"),
    ({"SOLVER": {"parameters": {"BASE_LRR": {"value": 0.1}}}}, "parameters.SOLVER.parameters.BASE_LRR", "SOLVER.BASE_LR"),
    ({"max_epochs": ["many"]}, "parameters.max_epochs", "expected an integer"),
])
def test_parameters_are_checked_against_the_config(write_spec, parameters, field, words):
    spec = load_spec(write_spec({"method": "grid", "parameters": parameters}))
    with pytest.raises(SpecError) as err:
        check_against_config(spec)
    assert err.value.field == field
    assert words in err.value.message


def test_file_errors(tmp_path):
    with pytest.raises(SpecError, match="sweep file not found"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: grid\nparameters: {base_lr: [0.1\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)


@pytest.mark.parametrize("preset", sorted((REPO / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_validates(preset, monkeypatch):
    import reidlib.sweep.spec as spec_module

    checked = []
    monkeypatch.setattr(spec_module, "check_dataset", lambda cfg: checked.append(cfg.DATASETS.NAMES))
    monkeypatch.chdir(preset.parents[1])
    check_against_config(load_spec(preset))
    assert checked and checked[0] in ("synthetic", "market1501")  # Market-1501 itself is not on this machine


def test_a_missing_dataset_stops_the_sweep_before_its_first_trial(write_spec, tmp_path):
    spec = load_spec(write_spec({"method": "grid", "parameters": {"base_lr": [0.1]},
                                 "defaults": {"overrides": {"DATASETS.NAMES": "market1501",
                                                            "DATASETS.ROOT_DIR": str(tmp_path / "nodata")}}}))
    with pytest.raises(SpecError) as err:
        check_against_config(spec)
    assert err.value.field.endswith("bounding_box_train") and "every trial would fail on it" in err.value.message


def test_overrides_parameter_values_are_checked(write_spec):
    spec = load_spec(write_spec({"method": "grid", "parameters": {"overrides": {"values": [{}, {"SOLVER.BASE_RL": 1}]}}}))
    with pytest.raises(SpecError) as err:
        check_against_config(spec)
    assert err.value.field == "parameters.overrides.values[1].SOLVER.BASE_RL"


# Each of these sweeps has a trial that can only fail, found before the first one starts.
@pytest.mark.parametrize("parameters, field, shown", [
    ({"optimizer": ["Adam", "Adamm"]}, "parameters.optimizer", "SOLVER.OPTIMIZER_NAME: expected one of 'SGD', 'Adam'"),
    ({"backbone": ["resnet18", "resnet5"]}, "parameters.backbone", "MODEL.NAME: expected one of 'resnet18', 'resnet34'"),
    ({"MODEL.LAST_STRIDE": [1, 3]}, "parameters.MODEL.LAST_STRIDE", "expected one of 1, 2, got 3"),
    ({"SOLVER": {"parameters": {"STEPS": {"values": [[3, 4], [70, 40]]}}}}, "parameters.SOLVER.parameters.STEPS",
     "in increasing order, got [70, 40]"),
    ({"DATASETS.NAMES": ["synthetic", "market"]}, "parameters.DATASETS.NAMES", "'market1501', 'dukemtmc'"),
    ({"overrides": {"values": [{}, {"MODEL.LAST_STRIDE": 3}]}}, "parameters.overrides.values[1].MODEL.LAST_STRIDE",
     "expected one of 1, 2"),
])
def test_a_value_no_trial_can_train_with_is_refused(write_spec, parameters, field, shown):
    spec = load_spec(write_spec({"method": "grid", "parameters": parameters}))
    with pytest.raises(SpecError) as err:
        check_against_config(spec)
    assert err.value.field == field and shown in err.value.message


def test_every_grid_point_is_checked(write_spec):
    # batch 36 is no multiple of 8 images per identity: one point of four can only fail
    spec = load_spec(write_spec({"method": "grid", "parameters": {"ims_per_batch": [32, 36], "num_instance": [4, 8]}}))
    with pytest.raises(SpecError) as err:
        check_against_config(spec)
    assert err.value.field == "parameters.ims_per_batch"
    assert err.value.message == ("SOLVER.IMS_PER_BATCH: expected a multiple of DATALOADER.NUM_INSTANCE (8), got 36 "
                                 "(in the trial ims_per_batch=36, num_instance=8)")
    # a point that leaves a conditional parameter out is checked without it: one image per identity
    # only with the plain softmax sampler, which draws no identities
    check_against_config(load_spec(write_spec({"method": "grid", "parameters": {
        "DATALOADER.SAMPLER": ["softmax", "softmax_triplet"], "ims_per_batch": [32, 64],
        "num_instance": {"values": [1], "parent": "DATALOADER.SAMPLER", "parent_values": ["softmax"]}}})))


@pytest.mark.parametrize("parameter, shown", [
    ({"re_prob": {"min": 0.1, "max": 1.5}}, "INPUT.RE_PROB: expected a probability in [0, 1], got 1.5"),
    ({"warmup_factor": {"distribution": "log_uniform_values", "min": 0.01, "max": 2.0}},
     "SOLVER.WARMUP_FACTOR: expected a number in [0, 1], got 2.0"),
    ({"MODEL.LAST_STRIDE": {"min": 1, "max": 3}}, "expected one of 1, 2, got 3"),
])
def test_a_range_whose_end_is_invalid_is_refused(write_spec, parameter, shown):
    spec = load_spec(write_spec({"method": "random", "parameters": {"base_lr": [0.1], **parameter}}))
    with pytest.raises(SpecError) as err:
        check_against_config(spec)
    assert err.value.field == f"parameters.{next(iter(parameter))}" and shown in err.value.message


def test_spec_mistakes_suggest_the_closest_name(write_spec):
    spec = load_spec(write_spec({"method": "grid", "parameters": {"lr": [0.1]}}))
    with pytest.raises(SpecError) as err:
        check_against_config(spec)
    assert (err.value.field, err.value.message) == ("parameters.lr", "not a config key or alias; did you mean 'base_lr'?")
    with pytest.raises(SpecError) as err:  # W&B's schema check answered with a dump of the whole parameter
        normalise({"method": "random", "parameters": {"optimizer": ["Adam", "SGD"], "momentum": {
            "values": [0.9], "parent": "optimizer", "parent_value": ["SGD"]}}})
    assert (err.value.field, err.value.message) == ("parameters.momentum.parent_value",
                                                    "not a parameter key; did you mean 'parent_values'?")
