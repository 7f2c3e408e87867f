"""Which driver processes still work on a sweep: each holds a lock file in ``runs/<id>/workers/``."""
from __future__ import annotations

import fcntl
import os
import secrets
import string
from pathlib import Path

from reidlib.sweep.layout import WORKERS_DIR

DRIVER_GONE = "driver stopped while it ran"  # the exit reason of a running trial whose driver died


def new_sweep_id() -> str:
    """Eight lowercase letters and digits, like a W&B sweep id."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


class DriverLease:
    """This driver process's mark on the trials it claims: it holds an exclusive lock on
    ``runs/<id>/workers/<token>.lock`` (the OS lets go when the process dies, even by SIGKILL) and the
    ledger writes the token on its trials. So a driver joining or resuming the sweep leaves another live
    driver's running trials alone and marks a dead one's crashed."""

    def __init__(self, sweep_dir: Path):
        self.token = new_sweep_id()
        self.path = sweep_dir / WORKERS_DIR / f"{self.token}.lock"
        self.path.parent.mkdir(exist_ok=True)
        # locked under a name no prober looks at, then renamed into place (the lock follows the file):
        # a probe can never find the file unlocked and take it first
        unpublished = self.path.with_suffix(".new")
        self._file = unpublished.open("w")
        fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(unpublished, self.path)

    def release(self) -> None:
        if not self._file.closed:
            self.path.unlink(missing_ok=True)
            self._file.close()

    @staticmethod
    def alive(sweep_dir: Path, token: str | None) -> bool:
        """Whether the driver with this token still runs: a shared lock on its file fails. (Shared, so
        probes running at the same time never see each other's lock as a live driver.)"""
        if token is None:
            return False
        try:
            probe = (sweep_dir / WORKERS_DIR / f"{token}.lock").open()
        except FileNotFoundError:  # never made, or released
            return False
        with probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
        # a dead driver's file stays: a few bytes, and removing it would race its own release()
        return False

    @classmethod
    def any_alive(cls, sweep_dir: Path) -> bool:
        """Whether some driver still works on this sweep."""
        return any(cls.alive(sweep_dir, path.stem) for path in (sweep_dir / WORKERS_DIR).glob("*.lock"))
