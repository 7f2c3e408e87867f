"""What every dataset provides: three lists of ``(path, pid, camid)`` with 0-based camera ids, built
from a config by ``from_config`` and checked (cheaply, reading no image) by ``check``; and the
validation split that ``hold_out`` carves from the training identities (``DATASETS.VAL_IDS``)."""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from reidlib.errors import ConfigError, DatasetError

Sample = tuple[str, int, int]


@dataclass
class ImageDataset:
    train: list[Sample]
    query: list[Sample]
    gallery: list[Sample]
    name: str = "dataset"
    root: Path = field(default_factory=Path)
    # the held-out training identities (``hold_out``): one query per identity and camera, the rest gallery
    val_query: list[Sample] = field(default_factory=list)
    val_gallery: list[Sample] = field(default_factory=list)

    dataset_dir: ClassVar[str] = ""  # the dataset's folder under DATASETS.ROOT_DIR

    @classmethod
    def _location(cls, cfg) -> tuple:
        """The arguments of ``load`` and ``_sources`` that ``cfg`` gives."""
        raise NotImplementedError

    @classmethod
    def _sources(cls, *location) -> dict:
        """What each split is read from; ``DatasetError`` naming the first folder or file missing."""
        raise NotImplementedError

    @classmethod
    def load(cls, *location) -> ImageDataset:
        raise NotImplementedError

    @classmethod
    def from_config(cls, cfg) -> ImageDataset:
        return cls.load(*cls._location(cfg))

    @classmethod
    def check(cls, cfg) -> None:
        cls._sources(*cls._location(cfg))

    @classmethod
    def _missing(cls, path: Path, what: str, root: Path) -> DatasetError:
        return DatasetError(str(path), f"{what} not found ({cls.__name__} expects it under {root})")

    @classmethod
    def _from_splits(cls, root: Path, sources: dict[str, Path], splits: dict[str, list[Sample]],
                     expected: str) -> ImageDataset:
        """The dataset, with training ids relabelled 0..N-1 (what the classifier's labels are), or
        ``DatasetError`` naming the folder or list file of the first empty split."""
        for split, rows in splits.items():
            if not rows:
                raise DatasetError(str(sources[split]), f"no images with a person id (expected {expected})")
        labels = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in splits["train"]}))}
        train = [(path, labels[pid], cam) for path, pid, cam in splits["train"]]
        return cls(train=train, query=splits["query"], gallery=splits["gallery"], name=cls.dataset_dir, root=root)

    @property
    def num_train_pids(self) -> int:
        return len({pid for _, pid, _ in self.train})

    def holdout_candidates(self) -> list[int]:
        """The training identities a validation split may draw: those seen by two or more cameras
        (a query needs a match from another camera under the Market-1501 protocol)."""
        cameras = defaultdict(set)
        for _, pid, cam in self.train:
            cameras[pid].add(cam)
        return sorted(pid for pid, cams in cameras.items() if len(cams) >= 2)

    def holdout_capacity(self) -> int:
        """The most identities ``hold_out`` accepts: candidates only, and two identities left to train."""
        return max(0, min(len(self.holdout_candidates()), self.num_train_pids - 2))

    def hold_out(self, num_ids: int, seed: int) -> ImageDataset:
        """This dataset with ``num_ids`` training identities moved to a validation query/gallery pair.

        Which identities, and which image of each (identity, camera) is the query, depend only on the
        training list and ``seed``: every trial of a sweep sees the same split, whatever its ``SEED``.
        The remaining training identities are relabelled 0..N-1 (the classifier's labels)."""
        if num_ids == 0:
            return self
        capacity = self.holdout_capacity()
        if not 0 < num_ids <= capacity:
            raise ConfigError("DATASETS.VAL_IDS", f"expected at most {capacity} for {self.name} (its training "
                              f"identities seen by 2+ cameras, leaving 2 to train), got {num_ids}")
        rng = random.Random(seed)
        held = set(rng.sample(self.holdout_candidates(), num_ids))
        by_view = defaultdict(list)
        for sample in sorted(s for s in self.train if s[1] in held):
            by_view[sample[1], sample[2]].append(sample)
        queries = {rng.choice(samples) for _, samples in sorted(by_view.items())}
        val = sorted(s for s in self.train if s[1] in held)
        kept = [s for s in self.train if s[1] not in held]
        labels = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in kept}))}
        return replace(self, train=[(path, labels[pid], cam) for path, pid, cam in kept],
                       val_query=[s for s in val if s in queries], val_gallery=[s for s in val if s not in queries])

    def describe(self) -> dict[str, dict[str, int]]:
        """Identities, images and cameras per split (what upstream prints at start-up)."""
        splits = [("train", self.train), ("val query", self.val_query), ("val gallery", self.val_gallery),
                  ("query", self.query), ("gallery", self.gallery)]
        return {split: {"ids": len({p for _, p, _ in rows}), "images": len(rows),
                        "cameras": len({c for _, _, c in rows})}
                for split, rows in splits if rows or split in ("train", "query", "gallery")}
