"""Which driver processes still work on a sweep: each holds a lock file in ``runs/<id>/workers/``."""
from __future__ import annotations

import fcntl
import secrets
import string
from pathlib import Path

WORKERS_DIR = "workers"  # in runs/<id>/: one lock file per live driver process
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
        self._file = self.path.open("w")
        fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        if not self._file.closed:
            self.path.unlink(missing_ok=True)
            self._file.close()

    @staticmethod
    def alive(sweep_dir: Path, token: str | None) -> bool:
        """Whether the driver with this token still runs (a second lock on its file fails)."""
        path = sweep_dir / WORKERS_DIR / f"{token}.lock"
        if token is None or not path.is_file():
            return False
        with path.open() as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
        # the file stays: removing it here could race a new driver between its open and its lock
        return False

    @classmethod
    def any_alive(cls, sweep_dir: Path) -> bool:
        """Whether some driver still works on this sweep."""
        return any(cls.alive(sweep_dir, path.stem) for path in (sweep_dir / WORKERS_DIR).glob("*.lock"))
