"""Finding processes a fault test started (drivers and their kernels), tagged through their environment."""
from __future__ import annotations

import psutil

TAG_ENV = "REID_SWEEP_FAULT_TEST"


def assert_no_tagged_process(tag: str) -> None:
    """No process started under ``tag`` (drivers, their kernels) is left alive."""
    left = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(TAG_ENV) == tag and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    _, alive = psutil.wait_procs(left, timeout=10)
    assert not alive, [p.cmdline()[:3] for p in alive]
