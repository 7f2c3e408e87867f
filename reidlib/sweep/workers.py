"""What each worker of a sweep runs its trials with: its environment (a GPU of its own, a share of the
CPU threads) and when its next kernel starts warming."""
from __future__ import annotations

import os


def worker_environments(workers: int = 1, gpus: list[str] | None = None) -> list[dict[str, str]]:
    """One environment per worker: its own GPU when GPUs are given (the kernel sees only that one),
    and an equal share of the CPU threads."""
    slots = len(gpus) if gpus else max(1, workers)
    threads = str(max(1, (os.cpu_count() or 1) // slots))
    if gpus:
        return [{"CUDA_VISIBLE_DEVICES": str(g), "OMP_NUM_THREADS": threads} for g in gpus]
    return [{"OMP_NUM_THREADS": threads} for _ in range(slots)]


def spare_after_first_epoch(env: dict[str, str]) -> bool:
    """Whether a worker's next kernel waits for its running trial's first epoch before it imports torch:
    on a worker without a GPU of its own the trial keeps every core busy, and a spare warming beside its
    start-up slowed its first step from 0.6 to 4.8 s (benchmarks/RESULTS.md, issue 18); a GPU trial leaves
    the CPU to the spare. The kernel itself boots at once either way."""
    return not env.get("CUDA_VISIBLE_DEVICES")
