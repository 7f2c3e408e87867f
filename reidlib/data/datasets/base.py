"""What every dataset provides: three lists of ``(path, pid, camid)`` with 0-based camera ids."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

Sample = tuple[str, int, int]


@dataclass
class ImageDataset:
    train: list[Sample]
    query: list[Sample]
    gallery: list[Sample]
    name: str = "dataset"
    root: Path = field(default_factory=Path)

    @property
    def num_train_pids(self) -> int:
        return len({pid for _, pid, _ in self.train})

    def describe(self) -> dict[str, dict[str, int]]:
        """Identities, images and cameras per split (what upstream prints at start-up)."""
        return {split: {"ids": len({p for _, p, _ in rows}), "images": len(rows),
                        "cameras": len({c for _, _, c in rows})}
                for split, rows in (("train", self.train), ("query", self.query), ("gallery", self.gallery))}
