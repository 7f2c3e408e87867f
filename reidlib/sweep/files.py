"""How a sweep writes its outputs under ``runs/<id>/``: whole or not at all, and never through a link.

A file is written to a temporary name beside it and renamed over it, so a reader (a live view of a
running trial's notebook, a resume after a crash, a full disk) sees the old file or the new one, never
half of one; and a symlink planted at its name is replaced, not followed out of the sweep directory.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import IO


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` (UTF-8) through a temporary file renamed over it; on failure (a full
    disk) nothing is left behind and the OSError names ``path``."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")  # each writer its own
    try:
        with os.fdopen(os.open(str(partial), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "w", encoding="utf-8") as out:
            out.write(text)  # O_EXCL: a new file (never a planted link); mode 0o666: the umask applies
        os.replace(partial, path)
    except BaseException as err:
        partial.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename in (None, str(partial)):
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def open_new(path: str | Path) -> IO[str]:
    """``path`` opened for writing as a new file: whatever was there (a symlink too) is removed first,
    and a link planted in between makes the open fail rather than be followed."""
    path = Path(path)
    path.unlink(missing_ok=True)
    return path.open("x")


def own_dir(path: str | Path) -> Path:
    """``path`` as a real directory of ours: a symlink at its place, or inside it, is removed (our
    outputs go there, not where the link points), then it is made if missing."""
    path = Path(path)
    if path.is_symlink():
        path.unlink()
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.iterdir():
        if entry.is_symlink():
            entry.unlink()
    return path
