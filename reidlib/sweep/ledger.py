"""The sweep's ledger: one SQLite file per sweep (``runs/<sweep-id>/sweep.db``).

It records the spec, every trial (parameters, state, summary, notebook, wandb id, timings, exit
reason) and every epoch's metrics as they arrive. WAL mode and a busy timeout let several worker
processes share it; every write is its own short transaction, so a crash loses nothing committed.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from reidlib.errors import SweepStateError

LEDGER_FILE = "sweep.db"
# Trial states. 'stopped' = ended early on the driver's request (hyperband, run cap, Ctrl-C).
RUNNING, FINISHED, STOPPED, FAILED, CRASHED = "running", "finished", "stopped", "failed", "crashed"


def state_of(status: str | None, errored: bool) -> str:
    """A trial's state from its own account (the summary's ``status``) and whether a cell failed:
    diverged, out-of-memory and failed trials, and trials whose report cells failed, are 'failed'."""
    if status in ("finished", "stopped_early") and not errored:
        return FINISHED if status == "finished" else STOPPED
    return FAILED

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sweep (id TEXT PRIMARY KEY, name TEXT, spec TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    name TEXT PRIMARY KEY, seq INTEGER UNIQUE NOT NULL, state TEXT NOT NULL, params TEXT NOT NULL,
    config TEXT, summary TEXT, notebook TEXT, wandb_id TEXT, started REAL, ended REAL, exit_reason TEXT,
    retry_of TEXT);
CREATE TABLE IF NOT EXISTS history (
    trial TEXT NOT NULL REFERENCES trials(name), epoch INTEGER NOT NULL, metrics TEXT NOT NULL,
    PRIMARY KEY (trial, epoch));
"""


@dataclass
class Trial:
    name: str
    seq: int
    state: str
    params: dict
    config: dict | None = None
    summary: dict | None = None
    notebook: str | None = None
    wandb_id: str | None = None
    started: float | None = None
    ended: float | None = None
    exit_reason: str | None = None
    retry_of: str | None = None  # the crashed or out-of-memory trial this one runs again
    history: list[dict] = field(default_factory=list)


class Ledger:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=60000")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.RLock()  # one connection, shared by the driver's worker threads

    @classmethod
    def create(cls, sweep_dir: str | Path, sweep_id: str, name: str, spec: dict, filename: str = LEDGER_FILE) -> "Ledger":
        ledger = cls(Path(sweep_dir) / filename)
        with ledger._write() as db:
            db.execute("INSERT INTO sweep VALUES (?, ?, ?, ?)", (sweep_id, name, json.dumps(spec), time.time()))
        return ledger

    @classmethod
    def open(cls, sweep_dir: str | Path) -> "Ledger":
        path = Path(sweep_dir) / LEDGER_FILE
        if not path.is_file():
            raise SweepStateError(str(sweep_dir), f"no sweep here (expected {path})")
        return cls(path)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, exclusive across threads (the lock) and processes (IMMEDIATE)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # --- sweep ---

    def sweep(self) -> dict:
        with self._lock:
            row = self._conn.execute("SELECT id, name, spec, created FROM sweep").fetchone()
        return {"id": row[0], "name": row[1], "spec": json.loads(row[2]), "created": row[3]}

    # --- trials ---

    def claim_trial(self, choose: Callable[[list[Trial]], tuple[dict, str | None] | None]) -> Trial | None:
        """Register the next trial, atomically across threads and processes.

        ``choose(trials)`` sees every trial (with history) and returns ``(params, retry_of)`` or None
        when the sweep is done; nobody else can add a trial in between, so parallel workers never
        get the same grid point.
        """
        with self._write() as db:
            chosen = choose(self._read_trials(with_history=True))
            if chosen is None:
                return None
            params, retry_of = chosen
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM trials").fetchone()[0]
            name = f"trial-{seq:03d}"
            now = time.time()
            db.execute("INSERT INTO trials (name, seq, state, params, started, retry_of) VALUES (?, ?, ?, ?, ?, ?)",
                       (name, seq, RUNNING, json.dumps(params), now, retry_of))
        return Trial(name=name, seq=seq, state=RUNNING, params=params, started=now, retry_of=retry_of)

    def insert_trial(self, name: str, seq: int, state: str, params: dict, **fields: Any) -> None:
        """Record a trial as it was (``reindex``); ``fields`` as ``update_trial`` takes them."""
        with self._write() as db:
            db.execute("INSERT INTO trials (name, seq, state, params) VALUES (?, ?, ?, ?)",
                       (name, seq, state, json.dumps(params)))
        if fields:
            self.update_trial(name, **fields)

    def update_trial(self, name: str, **fields: Any) -> None:
        """Set columns of a trial; dict values are stored as JSON."""
        allowed = {"state", "config", "summary", "notebook", "wandb_id", "started", "ended", "exit_reason"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown trial fields {sorted(unknown)}")
        values = [json.dumps(v) if k in ("config", "summary") else v for k, v in fields.items()]
        with self._write() as db:
            db.execute(f"UPDATE trials SET {', '.join(f'{k} = ?' for k in fields)} WHERE name = ?", (*values, name))

    def end_trial(self, name: str, state: str, summary: dict | None, exit_reason: str | None = None) -> None:
        self.update_trial(name, state=state, summary=summary, exit_reason=exit_reason, ended=time.time())

    def add_epoch(self, name: str, metrics: dict) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO history VALUES (?, ?, ?)", (name, int(metrics["epoch"]), json.dumps(metrics)))

    def trials(self, with_history: bool = False) -> list[Trial]:
        with self._lock:
            return self._read_trials(with_history)

    def _read_trials(self, with_history: bool) -> list[Trial]:
        rows = self._conn.execute(
            "SELECT name, seq, state, params, config, summary, notebook, wandb_id, started, ended, exit_reason, "
            "retry_of FROM trials ORDER BY seq").fetchall()
        trials = [Trial(name=r[0], seq=r[1], state=r[2], params=json.loads(r[3]),
                        config=json.loads(r[4]) if r[4] else None, summary=json.loads(r[5]) if r[5] else None,
                        notebook=r[6], wandb_id=r[7], started=r[8], ended=r[9], exit_reason=r[10],
                        retry_of=r[11]) for r in rows]
        if with_history:
            by_name = {t.name: t for t in trials}
            for trial, metrics in self._conn.execute("SELECT trial, metrics FROM history ORDER BY trial, epoch"):
                by_name[trial].history.append(json.loads(metrics))
        return trials

