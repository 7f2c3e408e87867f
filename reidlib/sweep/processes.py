"""The kernel processes of the trials a driver runs: a stop asked through the trial contract (the trial
ends after its epoch), or a kill, also of a kernel still starting."""
from __future__ import annotations

import os
import signal
import threading

from reidlib import trial as contract


class RunningTrials:
    """The trials this driver is running: their output directories and kernel processes."""

    def __init__(self):
        self._lock = threading.Lock()
        self._dirs: dict[str, str] = {}
        self._pids: dict[str, int] = {}
        self._doomed: set[str] = set()  # to be killed once their kernel is known

    def add(self, name: str, output_dir: str) -> None:
        with self._lock:
            self._dirs[name] = output_dir

    def kernel_started(self, name: str, pid: int) -> None:
        with self._lock:
            self._pids[name] = pid
            doomed = name in self._doomed
        if doomed:  # its kill came while papermill was still starting it (a slow, loaded machine)
            self.kill(name)

    def remove(self, name: str) -> None:
        with self._lock:
            self._dirs.pop(name, None)
            self._pids.pop(name, None)
            self._doomed.discard(name)

    def stop(self, name: str, reason: str) -> None:
        with self._lock:
            if name in self._dirs:
                contract.request_stop(self._dirs[name], reason)

    def stop_all(self, reason: str) -> None:
        for name in list(self._dirs):
            self.stop(name, reason)

    def kill(self, name: str) -> None:
        with self._lock:
            pid = self._pids.get(name)
            if name in self._dirs:
                self._doomed.add(name)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def kill_all(self) -> None:
        for name in list(self._dirs):  # also trials still waiting for their (warming) kernel
            self.kill(name)
