"""Data: the dataset registry (``datasets``), the synthetic generator, transforms, the PK sampler,
and ``build.make_data_loaders``. This package imports no torch, so the sweep side can check a
dataset before any trial runs."""
from reidlib.data.datasets import DATASET_REGISTRY, check_dataset, make_dataset

__all__ = ["DATASET_REGISTRY", "check_dataset", "make_dataset"]
