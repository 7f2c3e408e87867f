"""``make_data_loaders``: datasets to batches (transforms, the PK sampler).

Each split takes the cached, batched path (``reidlib.data.cached``) when its decoded images fit what is
left of ``INPUT.CACHE_BUDGET_MB`` (on a GPU, at most a quarter of its free memory; train first, then
the validation split, then query and gallery), and the per-sample PIL path
(``ImageFolderSamples`` in a torch ``DataLoader`` with ``DATALOADER.NUM_WORKERS`` workers) otherwise.
A cached split is decoded once per machine and memory-mapped after that (``reidlib.data.image_cache``);
the budget bounds what goes to the device."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from reidlib.data.cached import BatchTransform, CachedLoader, cache_bytes, split_images
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


def _cache_budget(cfg, device: torch.device) -> int:
    budget = cfg.INPUT.CACHE_BUDGET_MB * 2**20
    if device.type == "cuda":  # the cache lives on the GPU: leave most of what is free to training and other trials
        budget = min(budget, torch.cuda.mem_get_info(device)[0] // 4)
    return budget


def _split_loader(cfg, name: str, samples, train: bool, device, budget: int, pk_sampler=None) -> tuple[Loader, int]:
    """One split's loader, and the bytes of cache it took (0 on the per-sample PIL path). ``name``
    (dataset and split) names its file in the image cache."""
    s = cfg.DATALOADER
    size = cfg.INPUT.SIZE_TRAIN if train else cfg.INPUT.SIZE_TEST
    batch_size = cfg.SOLVER.IMS_PER_BATCH if train else cfg.TEST.IMS_PER_BATCH
    batching = {"shuffle": train and pk_sampler is None, "drop_last": train}
    cost = cache_bytes(len(samples), size)
    if cost <= budget:
        images = split_images(name, samples, size, s.NUM_WORKERS).to(device)
        transform = BatchTransform(cfg, train, device, seed=cfg.SEED)
        return CachedLoader(images, samples, batch_size, transform, sampler=pk_sampler if train else None,
                            seed=cfg.SEED, **batching), cost
    generator = torch.Generator().manual_seed(cfg.SEED) if batching["shuffle"] else None
    return DataLoader(ImageFolderSamples(samples, make_transforms(cfg, is_train=train)), batch_size=batch_size,
                      sampler=pk_sampler if train else None, generator=generator, **batching,
                      num_workers=s.NUM_WORKERS, persistent_workers=s.NUM_WORKERS > 0), 0


def make_data_loaders(cfg, dataset: ImageDataset | None = None) -> DataLoaders:
    dataset = dataset or make_dataset(cfg)
    s, device = cfg.DATALOADER, resolve_device(cfg.MODEL.DEVICE)
    budget = _cache_budget(cfg, device)
    pk_sampler = None
    if s.SAMPLER != "softmax":
        pk_sampler = RandomIdentitySampler(dataset.train, cfg.SOLVER.IMS_PER_BATCH, s.NUM_INSTANCE, seed=cfg.SEED)
    loaders, cached = {}, []
    splits = [("train", dataset.train), ("val_query", dataset.val_query), ("val_gallery", dataset.val_gallery),
              ("query", dataset.query), ("gallery", dataset.gallery)]
    for split, samples in splits:
        if not samples:  # no validation split
            continue
        loaders[split], cost = _split_loader(cfg, f"{dataset.name}-{split}", samples, split == "train", device, budget,
                                             pk_sampler)
        if cost:
            budget -= cost
            cached.append(split)
    return DataLoaders(dataset, **loaders, cached=cached)


def make_evaluation_loader(cfg, samples) -> Loader:
    """An evaluation loader over ``samples`` (the test transform), on the path ``make_data_loaders``
    takes for an evaluation split: the same batches, so the same features."""
    device = resolve_device(cfg.MODEL.DEVICE)
    return _split_loader(cfg, f"{cfg.DATASETS.NAMES}-evaluation", samples, False, device, _cache_budget(cfg, device))[0]


__all__ = ["TEST", "VAL", "DataLoaders", "ImageFolderSamples", "make_data_loaders", "make_evaluation_loader"]
