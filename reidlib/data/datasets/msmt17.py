"""MSMT17 (Wei et al., CVPR 2018), read from its list files as torchreid does:
``msmt17/MSMT17_V1/{train,test}/`` beside ``list_{train,query,gallery}.txt`` (or the blurred-face
release ``MSMT17_V2/{mask_train_v2,mask_test_v2}/``, the one reid-strong-baseline reads). Each line
is ``<folder>/<name> <pid>``; the camera is the name's third ``_`` field, made 0-based.

Training uses list_train alone, relabelled 0..N-1, as reid-strong-baseline does (its ``train += val``
is commented out; torchreid and fast-reid add list_val only with ``combineall``), so its numbers compare."""
from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from reidlib.data.datasets.base import ImageDataset, Sample
from reidlib.errors import DatasetError

LINE_EXAMPLE = "0000/0000_000_01_0303morning_0008_0.jpg 0"


class MSMT17(ImageDataset):
    dataset_dir = "msmt17"
    # release folder -> (training image folder, test image folder); the first one present is read
    releases: ClassVar[dict[str, tuple[str, str]]] = {"MSMT17_V1": ("train", "test"),
                                                       "MSMT17_V2": ("mask_train_v2", "mask_test_v2")}
    line_pattern: ClassVar[re.Pattern] = re.compile(
        r"(?P<path>(?:[^\s/]+/)*[^\s/_]+_[^\s/_]+_(?P<camera>\d+)_[^\s/]+)\s+(?P<pid>\d+)")

    @classmethod
    def _location(cls, cfg) -> tuple[Path]:
        return (Path(cfg.DATASETS.ROOT_DIR) / cls.dataset_dir,)

    @classmethod
    def _sources(cls, root: Path) -> dict[str, tuple[Path, Path]]:
        """``(list file, image folder its paths are relative to)`` for train, query and gallery."""
        release = next((name for name in cls.releases if (root / name).is_dir()), None)
        if release is None:
            raise cls._missing(root / "MSMT17_V1", "directory (or MSMT17_V2)", root)
        train_dir, test_dir = (root / release / folder for folder in cls.releases[release])
        sources = {split: (root / release / f"list_{split}.txt", train_dir if split == "train" else test_dir)
                   for split in ("train", "query", "gallery")}
        for list_file, folder in sources.values():
            if not folder.is_dir():
                raise cls._missing(folder, "directory", root / release)
            if not list_file.is_file():
                raise cls._missing(list_file, "list file", root / release)
        return sources

    @classmethod
    def load(cls, root: Path) -> MSMT17:
        root = Path(root)
        sources = cls._sources(root)
        rows = {split: cls._read(list_file, folder) for split, (list_file, folder) in sources.items()}
        return cls._from_splits(root, {split: sources[split][0] for split in rows}, rows,
                                f"lines like '{LINE_EXAMPLE}'")

    @classmethod
    def _read(cls, list_file: Path, folder: Path) -> list[Sample]:
        rows = []
        # a non-UTF-8 byte becomes U+FFFD, not a traceback: its line parses or is reported by number
        for number, line in enumerate(list_file.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            match = cls.line_pattern.fullmatch(line.strip())
            if not match:
                raise DatasetError(str(list_file), f"line {number}: expected '<folder>/<name> <pid>' with the camera "
                                                   f"as the name's third '_' field, e.g. '{LINE_EXAMPLE}', "
                                                   f"got {line.strip()[:80]!r}")
            rows.append((str(folder / match["path"]), int(match["pid"]), int(match["camera"]) - 1))
        return rows
