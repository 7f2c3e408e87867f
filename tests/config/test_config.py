import pytest

from reidlib.config import check_config, config_diff, load_config
from reidlib.errors import ConfigError
from reidlib.trial import build_config

UPSTREAM_YAML = """\
MODEL:
  PRETRAIN_PATH: '/home/user/.torch/models/resnet50-19c8e357.pth'
  METRIC_LOSS_TYPE: 'triplet'
  IF_LABELSMOOTH: 'on'
  IF_WITH_CENTER: no
INPUT:
  SIZE_TRAIN: [256, 128]
  SIZE_TEST: [256, 128]
  PROB: 0.5
  RE_PROB: 0.5
  PADDING: 10
DATASETS:
  NAMES: ('market1501')
  ROOT_DIR: ('/home/user/data')
DATALOADER:
  SAMPLER: 'softmax_triplet'
  NUM_INSTANCE: 4
  NUM_WORKERS: 8
SOLVER:
  OPTIMIZER_NAME: 'Adam'
  MAX_EPOCHS: 120
  BASE_LR: 0.00035
  STEPS: [40, 70]
  WARMUP_FACTOR: 0.01
  WARMUP_ITERS: 10
  IMS_PER_BATCH: 64
TEST:
  IMS_PER_BATCH: 128
  RE_RANKING: 'no'
OUTPUT_DIR: "/home/user/log"
"""


def test_reid_strong_baseline_yaml_loads_unchanged(tmp_path):
    path = tmp_path / "softmax_triplet.yml"
    path.write_text(UPSTREAM_YAML)
    cfg = load_config(path)
    assert cfg.DATASETS.NAMES == "market1501"  # YACS literal-evaluates ('market1501')
    assert cfg.DATASETS.ROOT_DIR == "/home/user/data"
    assert cfg.SOLVER.STEPS == (40, 70) and isinstance(cfg.SOLVER.STEPS, tuple)
    assert cfg.INPUT.SIZE_TRAIN == [256, 128]
    assert cfg.MODEL.IF_WITH_CENTER == "no"  # unquoted YAML `no` is a bool; the switch stays a string
    assert cfg.is_frozen()


def test_overrides_are_typed_per_key():
    cfg = load_config(None, {"SOLVER.BASE_LR": "1e-4", "SOLVER.MAX_EPOCHS": 3.0, "SOLVER.STEPS": "[10, 20]",
                             "MODEL.IF_LABELSMOOTH": False, "INPUT.SIZE_TRAIN": [128, 64]})
    assert cfg.SOLVER.BASE_LR == pytest.approx(1e-4) and isinstance(cfg.SOLVER.BASE_LR, float)
    assert cfg.SOLVER.MAX_EPOCHS == 3 and isinstance(cfg.SOLVER.MAX_EPOCHS, int)
    assert cfg.SOLVER.STEPS == (10, 20)
    assert cfg.MODEL.IF_LABELSMOOTH == "off"
    assert config_diff(cfg)["SOLVER.MAX_EPOCHS"] == (50, 3)


def test_aliases_reach_their_keys():
    cfg = build_config(None, {"DATALOADER.SAMPLER": "softmax_triplet"}, base_lr=0.01, num_instance=4,
                       ims_per_batch=16, margin=None)
    assert cfg.SOLVER.BASE_LR == 0.01 and cfg.DATALOADER.NUM_INSTANCE == 4 and cfg.SOLVER.IMS_PER_BATCH == 16
    assert cfg.SOLVER.MARGIN == 0.3  # None keeps the config's value


@pytest.mark.parametrize("overrides, field, words", [
    ({"SOLVER.BASE_RL": 0.1}, "SOLVER.BASE_RL", "did you mean 'SOLVER.BASE_LR'"),
    ({"base_lrr": 0.1}, "base_lrr", "did you mean 'base_lr'"),
    ({"solver.base_lr": 0.1}, "solver.base_lr", "did you mean 'SOLVER.BASE_LR'"),
    ({"SOLVER.MAX_EPOCHS": 2.5}, "SOLVER.MAX_EPOCHS", "expected an integer"),
    ({"SOLVER.BASE_LR": "fast"}, "SOLVER.BASE_LR", "expected a number"),
    ({"SOLVER.STEPS": 40}, "SOLVER.STEPS", "expected a list"),
    ({"SOLVER.IMS_PER_BATCH": True}, "SOLVER.IMS_PER_BATCH", "expected an integer"),
    ({"lr": 0.1}, "lr", "did you mean 'base_lr'"),  # a name others use for a knob: its last word
])
def test_bad_override_names_field_and_expectation(overrides, field, words):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert err.value.field == field
    assert words in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("overrides, field", [
    ({"DATALOADER.SAMPLER": "softmax_triplet", "DATALOADER.NUM_INSTANCE": 4, "SOLVER.IMS_PER_BATCH": 30}, "SOLVER.IMS_PER_BATCH"),
    ({"DATALOADER.SAMPLER": "triplet", "MODEL.METRIC_LOSS_TYPE": "softmax"}, "MODEL.METRIC_LOSS_TYPE"),
    ({"SOLVER.MAX_EPOCHS": 0}, "SOLVER.MAX_EPOCHS"),
    ({"SOLVER.BASE_LR": -1.0}, "SOLVER.BASE_LR"),
    ({"TEST.RE_RANKING": "yes", "TEST.RERANK_K1": 0}, "TEST.RERANK_K1"),
    ({"TEST.RE_RANKING": "yes", "TEST.RERANK_LAMBDA": 1.5}, "TEST.RERANK_LAMBDA"),
])
def test_impossible_combinations_fail_before_data(overrides, field):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert err.value.field == field


def test_alias_and_key_together_is_an_error():
    with pytest.raises(ConfigError, match="base_lr"):
        build_config(None, {"SOLVER.BASE_LR": 0.1}, base_lr=0.2)


def test_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("SOLVER:\n  BASE_LR: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    unknown = tmp_path / "unknown.yml"
    unknown.write_text("SOLVER:\n  BASE_LRR: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(unknown)
    assert str(unknown) in err.value.field and "SOLVER.BASE_LR" in str(err.value)


# (overrides, key, what the message must show): each of these used to load and fail inside the
# trial, after its data was read
@pytest.mark.parametrize("overrides, key, shown", [
    ({"SOLVER.OPTIMIZER_NAME": "Adamm"}, "SOLVER.OPTIMIZER_NAME", "'SGD', 'Adam', 'AdamW'"),
    ({"MODEL.NAME": "resnet5"}, "MODEL.NAME", "'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152'"),
    ({"MODEL.LAST_STRIDE": 3}, "MODEL.LAST_STRIDE", "expected one of 1, 2, got 3"),
    ({"SOLVER.STEPS": [70, 40]}, "SOLVER.STEPS", "in increasing order, got [70, 40]"),
    ({"DATASETS.NAMES": "market"}, "DATASETS.NAMES", "'market1501', 'dukemtmc', 'msmt17', 'aihub_kaist', 'synthetic'"),
    ({"SOLVER.WARMUP_FACTOR": 1.5}, "SOLVER.WARMUP_FACTOR", "[0, 1]"),
    ({"SOLVER.WEIGHT_DECAY": -0.1}, "SOLVER.WEIGHT_DECAY", ">= 0"),
    ({"SOLVER.MOMENTUM": -0.9}, "SOLVER.MOMENTUM", ">= 0"),
    ({"INPUT.SIZE_TRAIN": [256]}, "INPUT.SIZE_TRAIN", "[height, width]"),
    ({"INPUT.PIXEL_STD": [0.2, 0.0, 0.2]}, "INPUT.PIXEL_STD", "three positive numbers"),
    ({"DATALOADER.NUM_WORKERS": -1}, "DATALOADER.NUM_WORKERS", ">= 0"),
    ({"SEED": -1}, "SEED", "[0, 2**32)"),
    ({"DATASETS.SYNTHETIC.NUM_CAMERAS": 1}, "DATASETS.SYNTHETIC.NUM_CAMERAS", ">= 2"),
    ({"TEST.RERANK_K1": 0}, "TEST.RERANK_K1", ">= 1"),  # also without re-ranking on: a sweep may turn it on
])
def test_a_value_no_trial_can_train_with_is_refused_when_loaded(overrides, key, shown):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert err.value.field == key and shown in err.value.message and "\n" not in str(err.value)


def test_a_misspelt_choice_names_the_closest():
    with pytest.raises(ConfigError, match=r"got 'Adamm'; did you mean 'Adam'\?$"):
        load_config(None, {"optimizer": "Adamm"})
    with pytest.raises(ConfigError, match=r"did you mean 'base_lr'\?$"):
        build_config(None, lr=0.1)  # the trial side suggests with the same code


def test_the_registries_are_keyed_by_the_declared_names():
    """The allowed values are declared torch-free (reidlib.config.checks) and the builders look
    names up in them: each declared name must build, and the registries hold no other."""
    import torch

    from reidlib.config import checks, get_defaults
    from reidlib.data.datasets import DATASET_REGISTRY
    from reidlib.engine.trainer import AMP_DTYPES
    from reidlib.modeling.backbones import make_backbone
    from reidlib.solver import make_optimizer

    assert set(DATASET_REGISTRY) == set(checks.DATASET_NAMES)
    assert set(AMP_DTYPES) == set(checks.CHOICES["SOLVER.AMP"])
    for name in checks.BACKBONE_NAMES:
        with torch.device("meta"):  # shapes only: no weights are allocated
            trunk, channels = make_backbone(name, 1)
            assert trunk(torch.empty(1, 3, 64, 32)).shape == (1, channels, 4, 2), name
    model = torch.nn.Linear(4, 2)  # a weight and a bias: the two parameter groups
    for name in checks.OPTIMIZER_NAMES:
        cfg = get_defaults()
        cfg.SOLVER.OPTIMIZER_NAME = name
        optimizer = make_optimizer(cfg, model)
        model(torch.ones(3, 4)).sum().backward()
        optimizer.step()  # no closure, dense gradients, both groups
    # torch's other optimisers cannot train this model as make_optimizer builds it (see OPTIMIZER_NAMES)
    left_out = {"LBFGS", "SparseAdam", "Muon", "Rprop"}
    every = {n for n, c in vars(torch.optim).items() if isinstance(c, type) and issubclass(c, torch.optim.Optimizer)}
    assert every - {"Optimizer"} - left_out == set(checks.OPTIMIZER_NAMES)


def test_check_config_accepts_defaults():
    check_config(load_config())
