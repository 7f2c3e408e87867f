"""``make_data_loaders``: datasets to batches (transforms, the PK sampler).

Each split takes the cached, batched path (``reidlib.data.cached``) when its decoded images fit what is
left of ``INPUT.CACHE_BUDGET_MB`` (on a GPU, at most a quarter of its free memory; train first, then
the validation split, then query and gallery), and the per-sample PIL path
(``ImageFolderSamples`` in a torch ``DataLoader`` with ``DATALOADER.NUM_WORKERS`` workers) otherwise."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from reidlib.data.cached import BatchTransform, CachedLoader, cache_bytes, decode_images
from reidlib.data.datasets import ImageDataset, make_dataset
from reidlib.data.images import ImageFolderSamples
from reidlib.data.samplers import RandomIdentitySampler
from reidlib.data.transforms import make_transforms
from reidlib.devices import resolve_device


Loader = DataLoader | CachedLoader
VAL, TEST = "val", "test"  # the two evaluations: held-out training identities, and query/gallery


@dataclass
class DataLoaders:
    dataset: ImageDataset
    train: Loader
    query: Loader
    gallery: Loader
    val_query: Loader | None = None  # the held-out identities (DATASETS.VAL_IDS > 0), else None
    val_gallery: Loader | None = None
    cached: list[str] = field(default_factory=list)  # the splits on the cached, batched path

    @property
    def num_classes(self) -> int:
        return self.dataset.num_train_pids

    @property
    def has_val_split(self) -> bool:
        return self.val_query is not None

    def evaluation_pair(self, split: str) -> tuple[Loader, Loader]:
        """``(query, gallery)`` of ``split``: 'test' is query/gallery; 'val' is the held-out
        identities, or query/gallery when none are held out (reid-strong-baseline's validation)."""
        if split == VAL and self.has_val_split:
            return self.val_query, self.val_gallery
        return self.query, self.gallery


def make_data_loaders(cfg, dataset: ImageDataset | None = None) -> DataLoaders:
    dataset = dataset or make_dataset(cfg)
    s, device = cfg.DATALOADER, resolve_device(cfg.MODEL.DEVICE)
    budget = cfg.INPUT.CACHE_BUDGET_MB * 2**20
    if device.type == "cuda":  # the cache lives on the GPU: leave most of what is free to training and other trials
        budget = min(budget, torch.cuda.mem_get_info(device)[0] // 4)
    pk_sampler = None
    if s.SAMPLER != "softmax":
        pk_sampler = RandomIdentitySampler(dataset.train, cfg.SOLVER.IMS_PER_BATCH, s.NUM_INSTANCE, seed=cfg.SEED)
    common = {"num_workers": s.NUM_WORKERS, "persistent_workers": s.NUM_WORKERS > 0}
    loaders, cached = {}, []
    splits = [("train", dataset.train), ("val_query", dataset.val_query), ("val_gallery", dataset.val_gallery),
              ("query", dataset.query), ("gallery", dataset.gallery)]
    for split, samples in splits:
        if not samples:  # no validation split
            continue
        train = split == "train"
        size = cfg.INPUT.SIZE_TRAIN if train else cfg.INPUT.SIZE_TEST
        batch_size = cfg.SOLVER.IMS_PER_BATCH if train else cfg.TEST.IMS_PER_BATCH
        batching = {"shuffle": train and pk_sampler is None, "drop_last": train}
        if cache_bytes(len(samples), size) <= budget:
            budget -= cache_bytes(len(samples), size)
            images = decode_images(samples, size, s.NUM_WORKERS).to(device)
            transform = BatchTransform(cfg, train, device, seed=cfg.SEED)
            loaders[split] = CachedLoader(images, samples, batch_size, transform,
                                          sampler=pk_sampler if train else None, seed=cfg.SEED, **batching)
            cached.append(split)
        else:
            generator = torch.Generator().manual_seed(cfg.SEED) if batching["shuffle"] else None
            loaders[split] = DataLoader(ImageFolderSamples(samples, make_transforms(cfg, is_train=train)),
                                        batch_size=batch_size, sampler=pk_sampler if train else None,
                                        generator=generator, **batching, **common)
    return DataLoaders(dataset, **loaders, cached=cached)


__all__ = ["TEST", "VAL", "DataLoaders", "ImageFolderSamples", "make_data_loaders"]
