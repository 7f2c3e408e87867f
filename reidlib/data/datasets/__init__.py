"""Dataset registry: a dataset is a class that lists ``(image_path, person_id, camera_id)`` triples
for its train, query and gallery splits. ``make_dataset(cfg)`` builds the one ``DATASETS.NAMES`` names."""
from __future__ import annotations

from reidlib.data.datasets.aihub_kaist import AIHubKAIST
from reidlib.data.datasets.base import ImageDataset
from reidlib.data.datasets.dukemtmc import DukeMTMCreID
from reidlib.data.datasets.market1501 import Market1501
from reidlib.data.datasets.msmt17 import MSMT17
from reidlib.data.datasets.synthetic import SyntheticReID

# keyed by reidlib.config.checks.DATASET_NAMES, where DATASETS.NAMES is checked (a test keeps them in step)
DATASET_REGISTRY: dict[str, type[ImageDataset]] = {
    "market1501": Market1501,
    "dukemtmc": DukeMTMCreID,
    "msmt17": MSMT17,
    "aihub_kaist": AIHubKAIST,
    "synthetic": SyntheticReID,
}


def _dataset_class(cfg) -> type[ImageDataset]:
    return DATASET_REGISTRY[cfg.DATASETS.NAMES]  # a name of reidlib.config.checks.DATASET_NAMES


def make_dataset(cfg) -> ImageDataset:
    """The dataset ``DATASETS.NAMES`` names, with ``DATASETS.VAL_IDS`` training identities held out
    as its validation split (``ImageDataset.hold_out``)."""
    return _dataset_class(cfg).from_config(cfg).hold_out(cfg.DATASETS.VAL_IDS, cfg.DATASETS.VAL_SEED)


def check_dataset(cfg) -> None:
    """Raise ``DatasetError`` now if the dataset's folders or list files are missing (cheap: reads no image)."""
    _dataset_class(cfg).check(cfg)


__all__ = ["DATASET_REGISTRY", "ImageDataset", "check_dataset", "make_dataset"]
