"""Sweeps select on held-out identities by default.

A sweep whose config holds out no training identities (``DATASETS.VAL_IDS: 0``, reid-strong-baseline's
behaviour and every recipe's) gets ``DEFAULT_SHARE`` of the training identities seen by two or more
cameras held out as its validation split, added to the spec's ``defaults`` (so the ledger, ``validate``
and every trial's config show it). A spec that sets ``DATASETS.VAL_IDS`` itself (in ``defaults`` or as a
constant parameter) keeps its value; 0 runs, and every report then says that the configuration was
selected on the test set. The split must be the same for every trial, so it cannot be searched over.
"""
from __future__ import annotations

from dataclasses import replace

from reidlib.config import load_config
from reidlib.data import make_dataset
from reidlib.errors import ConfigError, DatasetError, SpecError
from reidlib.sweep.spec import Spec, flatten_parameters, leaves

VAL_IDS, VAL_SEED = "DATASETS.VAL_IDS", "DATASETS.VAL_SEED"
DEFAULT_SHARE = 0.125  # of the identities a split may draw: 94 of Market-1501's 751, 8 of the demo's 64
MIN_VAL_IDS = 2


def default_val_ids(capacity: int) -> int:
    """How many identities a sweep holds out when its spec does not say: ``DEFAULT_SHARE`` of what
    ``ImageDataset.holdout_capacity`` allows, at least ``MIN_VAL_IDS``; 0 when the dataset is too small."""
    return min(capacity, max(MIN_VAL_IDS, round(DEFAULT_SHARE * capacity)))


def _constant_split_keys(spec: Spec) -> dict:
    """The split keys a spec sets as constant parameters; a searched one is an error."""
    constants = {}
    for path, name, value in leaves(spec.search_config["parameters"]):
        if name in (VAL_IDS, VAL_SEED):
            if "value" not in value:
                raise SpecError(path, "the validation split must be the same for every trial: give one 'value' "
                                      "(or set it in 'defaults'), not a search")
            constants[name] = value["value"]
    return constants


def resolve_holdout(spec: Spec) -> Spec:
    """``spec`` with ``DATASETS.VAL_IDS`` in its defaults when neither it nor its config file sets it,
    and the value it will train with checked against the dataset (one line naming the key if too many)."""
    given = {**{k: v for k, v in flatten_parameters(spec.defaults).items() if k in (VAL_IDS, VAL_SEED)},
             **_constant_split_keys(spec)}
    try:
        cfg = load_config(spec.config_file, {**flatten_parameters(spec.defaults), **given, VAL_IDS: 0})
        capacity = make_dataset(cfg).holdout_capacity()  # lists the files; reads no image
        chosen = load_config(spec.config_file, given).DATASETS.VAL_IDS
    except (ConfigError, DatasetError) as err:
        raise SpecError(err.field, err.message) from None
    if VAL_IDS in given or chosen:
        if chosen > capacity:
            raise SpecError(VAL_IDS, f"expected at most {capacity} for {cfg.DATASETS.NAMES} (its training identities "
                                     f"seen by 2+ cameras, leaving 2 to train), got {chosen}")
        return spec
    return replace(spec, defaults={**spec.defaults, VAL_IDS: default_val_ids(capacity)})
