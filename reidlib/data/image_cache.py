"""The decoded-image cache on disk: a split's images, resized once, in one file per (dataset, split,
size), memory-mapped by every later trial (no decode, no copy).

Where: ``$REID_SWEEP_CACHE_DIR`` if set (``off`` turns the cache off), else
``$XDG_CACHE_HOME/reid-sweep`` (``~/.cache/reid-sweep``), like torch hub's and pip's caches; the
images are under ``images/``. ``reid-sweep clean-cache`` removes them.

- **Keyed on the split**: the file name and header carry a SHA-256 of the size and every image's path,
  byte size and mtime, so a changed, added or removed image, another split (``DATASETS.VAL_IDS``) or
  another input size never reads a stale file.
- **One writer**: the first trial to miss decodes under an exclusive lock on ``<file>.lock`` while a
  second waits and then maps what the first wrote; the file is written to a temporary name and
  renamed, so nothing ever maps a half-written file.
- **Checked on every open**: header, shape, exact length, end marker and a CRC of a few images spread
  over the file (reading them all would cost what the cache saves); a file that fails is rebuilt with
  one warning. A byte flipped elsewhere goes unseen, as in any cache.

This module imports no torch (``clean-cache`` runs in the driver).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from reidlib.errors import DatasetError

log = logging.getLogger(__name__)

CACHE_ENV = "REID_SWEEP_CACHE_DIR"
OFF = "off"
MAGIC, END = b"RSIMG001", b"RSIMGEND"
HEADER = struct.Struct("<8s32s3Q")  # magic, key digest, N, H, W
FOOTER = struct.Struct("<I8s")  # CRC32 of the sampled images, end marker
HEADER_BYTES = 64  # the header padded, so the images start aligned
CHECKED_IMAGES = 16


def cache_root() -> Path | None:
    """The cache's directory, or None when ``$REID_SWEEP_CACHE_DIR`` is ``off``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return None if configured.lower() == OFF else Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reid-sweep"


def images_dir() -> Path | None:
    root = cache_root()
    return root / "images" if root is not None else None


def split_key(samples: Sequence[tuple], size: Sequence[int]) -> bytes:
    """SHA-256 of the input size and every image's path, byte size and mtime (ns)."""
    digest = hashlib.sha256(json.dumps([1, list(size)]).encode())
    for path, *_ in samples:
        try:
            stat = os.stat(path)
        except OSError as err:
            raise DatasetError(path, f"unreadable image ({err.__class__.__name__})") from None
        digest.update(f"\0{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.digest()


def cache_file(directory: Path, name: str, key: bytes, size: Sequence[int]) -> Path:
    return directory / f"{name}-{size[0]}x{size[1]}-{key.hex()[:16]}.u8"


def _checked_rows(n: int) -> list[int]:
    return sorted({round(i * (n - 1) / (CHECKED_IMAGES - 1)) for i in range(CHECKED_IMAGES)}) if n else []


def _sample_crc(images: np.ndarray) -> int:
    crc = 0
    for row in _checked_rows(len(images)):
        crc = zlib.crc32(np.ascontiguousarray(images[row]).data, crc)
    return crc


def _open(path: Path, key: bytes, shape: tuple[int, ...]) -> tuple[np.ndarray | None, str | None]:
    """``(memory map, None)`` of a valid file; ``(None, why)`` otherwise (why None: there is none)."""
    try:
        with path.open("rb") as f:
            length = os.fstat(f.fileno()).st_size
            head = f.read(HEADER.size)
            if len(head) < HEADER.size:
                return None, "truncated header"
            magic, digest, *stored = HEADER.unpack(head)
            if magic != MAGIC or digest != key or tuple(stored) != (shape[0], *shape[2:]):
                return None, "header does not match the split"
            expected = HEADER_BYTES + int(np.prod(shape)) + FOOTER.size
            if length != expected:
                return None, f"{length} bytes instead of {expected} (truncated or overwritten)"
            f.seek(expected - FOOTER.size)
            crc, end = FOOTER.unpack(f.read(FOOTER.size))
    except FileNotFoundError:
        return None, None
    if end != END:
        return None, "end marker missing"
    # copy-on-write: the trial may write to its view; nothing reaches the file or another trial
    images = np.memmap(path, dtype=np.uint8, mode="c", offset=HEADER_BYTES, shape=shape)
    if _sample_crc(images) != crc:
        return None, "checksum mismatch"
    return images, None


@contextmanager
def _locked(path: Path):
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write(path: Path, key: bytes, images: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(HEADER.pack(MAGIC, key, images.shape[0], *images.shape[2:]).ljust(HEADER_BYTES, b"\0"))
            for row in images:  # one image at a time: no second copy of the split in memory
                f.write(np.ascontiguousarray(row).data)
            f.write(FOOTER.pack(_sample_crc(images), END))
        os.replace(tmp, path)  # atomic: a reader maps the old file, or none, or the whole new one
    finally:
        tmp.unlink(missing_ok=True)


def load_or_decode(directory: Path, name: str, samples: Sequence[tuple], size: Sequence[int],
                   decode: Callable[[], np.ndarray]) -> np.ndarray:
    """The split's ``N x 3 x H x W`` uint8 images, memory-mapped from the cache; on a miss ``decode()``
    makes them and the cache keeps them. ``name`` says which dataset and split (part of the file name)."""
    key = split_key(samples, size)
    shape = (len(samples), 3, *size)
    path = cache_file(directory, name, key, size)
    images, _ = _open(path, key, shape)
    if images is not None:
        return images
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        images, problem = _open(path, key, shape)  # another trial may have written it meanwhile
        if images is not None:
            return images
        if problem:
            log.warning("image cache %s is unusable (%s): decoding the split again", path, problem)
        _write(path, key, decode())
        images, problem = _open(path, key, shape)
    if images is None:
        raise OSError(f"image cache {path} unreadable right after writing it ({problem})")
    return images


def clean(directory: Path | None = None) -> tuple[int, int]:
    """Remove the cached images; ``(files, bytes)`` removed."""
    directory = directory or images_dir()
    if directory is None or not directory.is_dir():
        return 0, 0
    files = [p for p in directory.rglob("*") if p.is_file()]
    freed = sum(p.stat().st_size for p in files)
    shutil.rmtree(directory)
    return len(files), freed


__all__ = ["CACHE_ENV", "cache_root", "clean", "images_dir", "load_or_decode", "split_key"]
