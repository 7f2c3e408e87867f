"""What every dataset provides: three lists of ``(path, pid, camid)`` with 0-based camera ids, built
from a config by ``from_config`` and checked (cheaply, reading no image) by ``check``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from reidlib.errors import DatasetError

Sample = tuple[str, int, int]


@dataclass
class ImageDataset:
    train: list[Sample]
    query: list[Sample]
    gallery: list[Sample]
    name: str = "dataset"
    root: Path = field(default_factory=Path)

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

    def describe(self) -> dict[str, dict[str, int]]:
        """Identities, images and cameras per split (what upstream prints at start-up)."""
        return {split: {"ids": len({p for _, p, _ in rows}), "images": len(rows),
                        "cameras": len({c for _, _, c in rows})}
                for split, rows in (("train", self.train), ("query", self.query), ("gallery", self.gallery))}
