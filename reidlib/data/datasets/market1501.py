"""Market-1501 (Zheng et al., ICCV 2015): ``{pid}_c{cam}s{seq}_{frame}_{box}.jpg`` in
``bounding_box_train``, ``query`` and ``bounding_box_test``. Junk images (pid -1) are dropped,
distractors (pid 0) kept, camera ids made 0-based and training ids relabelled 0..N-1."""
from __future__ import annotations

import re
from pathlib import Path

from reidlib.data.datasets.base import ImageDataset, Sample
from reidlib.errors import DatasetError

_NAME = re.compile(r"^(-?\d+)_c(\d+)")


class Market1501(ImageDataset):
    dataset_dir = "market1501"

    @classmethod
    def _folder_names(cls, cfg) -> tuple[Path, str, str, str]:
        d = cfg.DATASETS
        return Path(d.ROOT_DIR) / cls.dataset_dir, d.TRAIN_FOLDER, d.QUERY_FOLDER, d.GALLERY_FOLDER

    @classmethod
    def from_config(cls, cfg) -> "Market1501":
        return cls.load(*cls._folder_names(cfg))

    @classmethod
    def check(cls, cfg) -> None:
        cls._folders(*cls._folder_names(cfg))

    @classmethod
    def _folders(cls, root: Path, train_folder: str, query_folder: str, gallery_folder: str) -> dict[str, Path]:
        folders = {"train": root / train_folder, "query": root / query_folder, "gallery": root / gallery_folder}
        for folder in folders.values():
            if not folder.is_dir():
                raise DatasetError(str(folder), f"directory not found ({cls.__name__} expects it under {root})")
        return folders

    @classmethod
    def load(cls, root: Path, train_folder="bounding_box_train", query_folder="query",
             gallery_folder="bounding_box_test") -> "Market1501":
        folders = cls._folders(root, train_folder, query_folder, gallery_folder)
        train = cls._read(folders["train"], relabel=True)
        query = cls._read(folders["query"])
        gallery = cls._read(folders["gallery"])
        for split, rows in (("train", train), ("query", query), ("gallery", gallery)):
            if not rows:
                raise DatasetError(str(folders[split]), "no images with a person id (expected names like 0002_c1s1_000451_03.jpg)")
        return cls(train=train, query=query, gallery=gallery, name=cls.dataset_dir, root=root)

    @staticmethod
    def _read(folder: Path, relabel: bool = False) -> list[Sample]:
        rows = []
        for path in sorted(folder.glob("*.jpg")):
            match = _NAME.match(path.name)
            if not match:
                raise DatasetError(str(path), "file name does not follow Market-1501's {pid}_c{camera}... pattern")
            pid, cam = int(match.group(1)), int(match.group(2))
            if pid == -1:
                continue
            rows.append((str(path), pid, cam - 1))
        if relabel:
            labels = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in rows}))}
            rows = [(p, labels[pid], cam) for p, pid, cam in rows]
        return rows
