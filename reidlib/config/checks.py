"""What each knob accepts, declared beside the knobs and checked before any data is read (torch-free:
the sweep driver checks every trial of a sweep with it before the first one starts).

``check_value`` holds the rules of one key (choices, ranges, orderings); ``check_combination`` the
rules between keys. The names the builders look up (backbones, optimisers, datasets) are declared
here once: their registries are keyed by these tuples (``tests/config/test_config.py`` keeps them in step).
"""
from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import Any

from reidlib.config.overrides import did_you_mean
from reidlib.errors import ConfigError

# reidlib.modeling.backbones builds each from torchvision under this name
BACKBONE_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
# torch.optim classes that train this model from its two parameter groups (lr, weight_decay); not
# LBFGS (needs a closure), SparseAdam (sparse gradients only), Muon (2-D parameters only) nor Rprop
# (no weight decay)
OPTIMIZER_NAMES = ("SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad", "Adadelta", "ASGD",
                   "Adafactor")
# reidlib.data.datasets.DATASET_REGISTRY's keys
DATASET_NAMES = ("market1501", "dukemtmc", "msmt17", "aihub_kaist", "synthetic")

YES_NO = ("yes", "no")
# Keys whose value is one of a few words or numbers.
CHOICES: dict[str, tuple] = {
    "MODEL.DEVICE": ("auto", "cpu", "cuda"),
    "MODEL.NAME": BACKBONE_NAMES,
    "MODEL.LAST_STRIDE": (1, 2),
    "MODEL.PRETRAIN_CHOICE": ("imagenet", "self", "none"),
    "MODEL.NECK": ("bnneck", "no"),
    "MODEL.IF_WITH_CENTER": YES_NO,
    "MODEL.METRIC_LOSS_TYPE": ("softmax", "triplet", "center", "triplet_center"),
    "MODEL.IF_LABELSMOOTH": ("on", "off"),
    "MODEL.STEM_RELU": YES_NO,
    "MODEL.CHANNELS_LAST": YES_NO,
    "DATASETS.NAMES": DATASET_NAMES,
    "DATALOADER.SAMPLER": ("softmax", "triplet", "softmax_triplet"),
    "SOLVER.OPTIMIZER_NAME": OPTIMIZER_NAMES,
    "SOLVER.SOFT_MARGIN": YES_NO,
    "SOLVER.WARMUP_METHOD": ("linear", "constant"),
    "SOLVER.AMP": ("no", "bf16", "fp16"),
    "SOLVER.COMPILE": YES_NO,
    "TEST.RE_RANKING": YES_NO,
    "TEST.NECK_FEAT": ("before", "after"),
    "TEST.FEAT_NORM": YES_NO,
    "TEST.EVAL_BEFORE_TRAINING": YES_NO,
    "TEST.EVAL_TEST_SET": YES_NO,
}
# MODEL.METRIC_LOSS_TYPE by MODEL.IF_WITH_CENTER, as reid-strong-baseline accepts them.
LOSS_TYPES = {"no": ("softmax", "triplet"), "yes": ("center", "triplet_center")}
PK_SAMPLERS = ("triplet", "softmax_triplet")  # P identities x K instances per batch


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


Rule = tuple[Callable[[Any], bool], str]  # (accepts the value, what was expected)
POSITIVE_INTEGER: Rule = (lambda v: _integer(v) and v >= 1, "a positive integer")
COUNT: Rule = (lambda v: _integer(v) and v >= 0, "an integer >= 0")
POSITIVE: Rule = (lambda v: _number(v) and v > 0, "a positive number")
NON_NEGATIVE: Rule = (lambda v: _number(v) and v >= 0, "a number >= 0")
PROBABILITY: Rule = (lambda v: _number(v) and 0 <= v <= 1, "a probability in [0, 1]")
FRACTION: Rule = (PROBABILITY[0], "a number in [0, 1]")
IMAGE_SIZE: Rule = (lambda v: len(v) == 2 and all(_integer(x) and x >= 1 for x in v), "[height, width], two positive integers")
SEED: Rule = (lambda v: _integer(v) and 0 <= v < 2 ** 32, "an integer in [0, 2**32)")  # numpy's seed range

RANGES: dict[str, Rule] = {
    "INPUT.SIZE_TRAIN": IMAGE_SIZE,
    "INPUT.SIZE_TEST": IMAGE_SIZE,
    "INPUT.PROB": PROBABILITY,
    "INPUT.RE_PROB": PROBABILITY,
    "INPUT.PIXEL_MEAN": (lambda v: len(v) == 3, "three numbers (R, G, B)"),
    "INPUT.PIXEL_STD": (lambda v: len(v) == 3 and all(x > 0 for x in v), "three positive numbers (R, G, B)"),
    "INPUT.PADDING": COUNT,
    "INPUT.CACHE_BUDGET_MB": COUNT,
    "DATASETS.VAL_IDS": (COUNT[0], "a number of identities >= 0 (0 = no validation split)"),
    "DATASETS.VAL_SEED": SEED,
    "DATASETS.SYNTHETIC.NUM_TRAIN_IDS": POSITIVE_INTEGER,
    "DATASETS.SYNTHETIC.NUM_TEST_IDS": POSITIVE_INTEGER,
    "DATASETS.SYNTHETIC.NUM_CAMERAS": (lambda v: _integer(v) and v >= 2, "an integer >= 2 (a query is matched in another camera)"),
    "DATASETS.SYNTHETIC.IMAGES_PER_CAMERA": POSITIVE_INTEGER,
    "DATASETS.SYNTHETIC.IMAGE_SIZE": IMAGE_SIZE,
    "DATASETS.SYNTHETIC.SEED": SEED,
    "DATALOADER.NUM_WORKERS": COUNT,
    "DATALOADER.NUM_INSTANCE": POSITIVE_INTEGER,
    "SOLVER.MAX_EPOCHS": POSITIVE_INTEGER,
    "SOLVER.BASE_LR": POSITIVE,
    "SOLVER.BIAS_LR_FACTOR": NON_NEGATIVE,
    "SOLVER.MOMENTUM": NON_NEGATIVE,
    "SOLVER.MARGIN": NON_NEGATIVE,
    "SOLVER.CENTER_LR": POSITIVE,
    "SOLVER.CENTER_LOSS_WEIGHT": NON_NEGATIVE,
    "SOLVER.WEIGHT_DECAY": NON_NEGATIVE,
    "SOLVER.WEIGHT_DECAY_BIAS": NON_NEGATIVE,
    "SOLVER.GAMMA": POSITIVE,
    "SOLVER.STEPS": (lambda v: all(_integer(x) and x >= 0 for x in v) and list(v) == sorted(v),
                     "epochs (integers >= 0) in increasing order"),
    "SOLVER.WARMUP_FACTOR": FRACTION,
    "SOLVER.WARMUP_ITERS": COUNT,
    "SOLVER.CHECKPOINT_PERIOD": POSITIVE_INTEGER,
    "SOLVER.LOG_PERIOD": POSITIVE_INTEGER,
    "SOLVER.EVAL_PERIOD": POSITIVE_INTEGER,
    "SOLVER.IMS_PER_BATCH": POSITIVE_INTEGER,
    "TEST.IMS_PER_BATCH": POSITIVE_INTEGER,
    "TEST.RERANK_K1": (POSITIVE_INTEGER[0], "an integer >= 1"),
    "TEST.RERANK_K2": (POSITIVE_INTEGER[0], "an integer >= 1"),
    "TEST.RERANK_LAMBDA": FRACTION,
    "TEST.RERANK_MEMORY_MB": (POSITIVE[0], "a positive number of MB"),
    "TEST.CHECKPOINT_EPOCH": (COUNT[0], "an epoch (0: TEST.WEIGHT itself)"),
    "SEED": SEED,
}
# The keys check_combination reads: a sweep checks these per combination, the rest per value.
COMBINED_KEYS = ("MODEL.IF_WITH_CENTER", "MODEL.METRIC_LOSS_TYPE", "DATALOADER.SAMPLER", "DATALOADER.NUM_INSTANCE",
                 "SOLVER.IMS_PER_BATCH", "SOLVER.CENTER_LOSS_WEIGHT")


def check_value(key: str, value: Any) -> None:
    """Raise ``ConfigError`` if ``value`` (already of the default's type) is not one ``key`` accepts."""
    if key in CHOICES:
        allowed = CHOICES[key]
        if value not in allowed:
            hint = did_you_mean(value, map(str, allowed)) if isinstance(value, str) else ""
            raise ConfigError(key, f"expected one of {', '.join(map(repr, allowed))}, got {value!r}{hint}")
    elif key in RANGES:
        accepts, expected = RANGES[key]
        if not accepts(value):
            raise ConfigError(key, f"expected {expected}, got {list(value) if isinstance(value, tuple) else value!r}")


def check_combination(values: Mapping[str, Any]) -> None:
    """The rules between keys, on ``{dotted key: value}`` (every key of ``COMBINED_KEYS``), each
    value already accepted by ``check_value``."""
    center, loss, sampler = values["MODEL.IF_WITH_CENTER"], values["MODEL.METRIC_LOSS_TYPE"], values["DATALOADER.SAMPLER"]
    if loss not in LOSS_TYPES[center]:
        raise ConfigError("MODEL.METRIC_LOSS_TYPE", f"expected one of {', '.join(map(repr, LOSS_TYPES[center]))} with "
                          f"IF_WITH_CENTER {center!r}, got {loss!r}")
    instances, batch = values["DATALOADER.NUM_INSTANCE"], values["SOLVER.IMS_PER_BATCH"]
    if sampler in PK_SAMPLERS:
        if instances < 2:
            raise ConfigError("DATALOADER.NUM_INSTANCE", f"expected at least 2 images per identity for the PK sampler, got {instances}")
        if batch % instances:
            raise ConfigError("SOLVER.IMS_PER_BATCH", f"expected a multiple of DATALOADER.NUM_INSTANCE ({instances}), got {batch}")
        if loss == "softmax":
            raise ConfigError("MODEL.METRIC_LOSS_TYPE", f"DATALOADER.SAMPLER {sampler!r} trains with a triplet loss: "
                              "expected 'triplet', got 'softmax'")
    if center == "yes" and not values["SOLVER.CENTER_LOSS_WEIGHT"] > 0:
        raise ConfigError("SOLVER.CENTER_LOSS_WEIGHT", f"expected a positive number with center loss, got {values['SOLVER.CENTER_LOSS_WEIGHT']}")


def check_values(values: Mapping[str, Any]) -> None:
    """Every rule, on a whole config as ``{dotted key: value}``."""
    for key, value in values.items():
        check_value(key, value)
    check_combination(values)


def check_rerank_parameters(k1, k2, lambda_value, memory_mb) -> None:
    """The TEST.RERANK_* values re-ranking can run with (for re-ranking called without a config)."""
    for key, value in (("TEST.RERANK_K1", k1), ("TEST.RERANK_K2", k2), ("TEST.RERANK_LAMBDA", lambda_value),
                       ("TEST.RERANK_MEMORY_MB", memory_mb)):
        check_value(key, value)
