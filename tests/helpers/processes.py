"""Finding processes a test started (drivers and their kernels), tagged through their environment."""
from __future__ import annotations

import os
import secrets
import time

import psutil

TAG_ENV = "REID_SWEEP_FAULT_TEST"


_MADE: dict[str, float] = {}  # when each tag was made: a process older than its tag cannot carry it


def new_tag() -> str:
    tag = secrets.token_hex(8)
    _MADE[tag] = time.time()
    return tag


def tagged_environment(tag: str) -> dict[str, str]:
    """This process's environment with ``tag``: every process started with it (a driver, its kernels,
    wandb's) inherits the tag."""
    return {**os.environ, TAG_ENV: tag}


def _tagged(tag: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(TAG_ENV) == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.NoSuchProcess:  # ended while we looked (a zombie's environment is gone too)
            continue
        except psutil.AccessDenied:  # (init, another user's): only one made after the tag could carry it
            if proc.create_time() >= _MADE.get(tag, float("inf")):
                raise
    return found


def assert_no_tagged_process(tag: str, timeout: float = 10) -> None:
    """No process started under ``tag`` is alive, after ``timeout`` seconds at most to end (a zombie
    whose parent is gone counts as ended: it runs nothing)."""
    deadline = time.monotonic() + timeout
    alive = _tagged(tag)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if _running(p)]
    assert not alive, [p.cmdline()[:3] for p in alive]


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
