"""``make_data_loaders``: datasets to torch loaders (transforms, the PK sampler)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from reidlib.data.datasets import ImageDataset, make_dataset
from reidlib.data.samplers import RandomIdentitySampler
from reidlib.data.transforms import make_transforms
from reidlib.errors import DatasetError


class ImageFolderSamples(Dataset):
    """``(image tensor, pid, camid)`` from ``(path, pid, camid)`` rows."""

    def __init__(self, samples, transform):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        path, pid, camid = self.samples[index]
        try:
            with Image.open(path) as img:
                image = img.convert("RGB")
        except (OSError, UnidentifiedImageError) as err:
            raise DatasetError(path, f"unreadable image ({err.__class__.__name__})") from None
        return self.transform(image), pid, camid


@dataclass
class DataLoaders:
    dataset: ImageDataset
    train: DataLoader
    query: DataLoader
    gallery: DataLoader

    @property
    def num_classes(self) -> int:
        return self.dataset.num_train_pids


def make_data_loaders(cfg, dataset: ImageDataset | None = None) -> DataLoaders:
    dataset = dataset or make_dataset(cfg)
    s = cfg.DATALOADER
    train_set = ImageFolderSamples(dataset.train, make_transforms(cfg, is_train=True))
    generator = torch.Generator().manual_seed(cfg.SEED)
    common = {"num_workers": s.NUM_WORKERS, "persistent_workers": s.NUM_WORKERS > 0}
    if s.SAMPLER == "softmax":
        train = DataLoader(train_set, batch_size=cfg.SOLVER.IMS_PER_BATCH, shuffle=True, drop_last=True,
                           generator=generator, **common)
    else:
        sampler = RandomIdentitySampler(dataset.train, cfg.SOLVER.IMS_PER_BATCH, s.NUM_INSTANCE, seed=cfg.SEED)
        train = DataLoader(train_set, batch_size=cfg.SOLVER.IMS_PER_BATCH, sampler=sampler, drop_last=True, **common)
    test_tf = make_transforms(cfg, is_train=False)
    query = DataLoader(ImageFolderSamples(dataset.query, test_tf), batch_size=cfg.TEST.IMS_PER_BATCH, **common)
    gallery = DataLoader(ImageFolderSamples(dataset.gallery, test_tf), batch_size=cfg.TEST.IMS_PER_BATCH, **common)
    return DataLoaders(dataset, train, query, gallery)


__all__ = ["DataLoaders", "ImageFolderSamples", "make_data_loaders"]
