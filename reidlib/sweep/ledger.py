"""The sweep's ledger: one SQLite file per sweep (``runs/<sweep-id>/sweep.db``).

It records the spec, the search's seed, every trial (parameters, state, summary, notebook, wandb id, timings, exit
reason, the driver process running it) and every epoch's metrics as they arrive. WAL mode and a busy
timeout let several driver processes share it; every write is its own short transaction, so a crash
loses nothing committed. A write the ledger cannot make (locked by another process past the timeout,
disk full) is rolled back and raised as one line naming the file.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from reidlib.errors import SweepStateError
from reidlib.sweep.layout import LEDGER_FILE
from reidlib.trial import TrialState

LEGACY_WANDB_DESTINATION = '{"project": "reid-sweep", "entity": null}'  # before ledgers recorded it
LOCK_TIMEOUT_S = 60.0  # how long a write waits for another process's transaction before giving up
# The trial states (the contract's TrialState; the ledger stores their values) by their short names
RUNNING, FINISHED, STOPPED, FAILED, CRASHED = (TrialState.RUNNING, TrialState.FINISHED, TrialState.STOPPED,
                                               TrialState.FAILED, TrialState.CRASHED)
KERNEL_DIED = "kernel died"  # how the exit reason of a trial whose kernel died by itself begins

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sweep (id TEXT PRIMARY KEY, name TEXT, spec TEXT NOT NULL, created REAL NOT NULL,
    wandb TEXT, seed INTEGER);
CREATE TABLE IF NOT EXISTS trials (
    name TEXT PRIMARY KEY, seq INTEGER UNIQUE NOT NULL, state TEXT NOT NULL, params TEXT NOT NULL,
    config TEXT, summary TEXT, notebook TEXT, wandb_id TEXT, started REAL, ended REAL, exit_reason TEXT,
    retry_of TEXT, worker TEXT);
CREATE TABLE IF NOT EXISTS history (
    trial TEXT NOT NULL REFERENCES trials(name), epoch INTEGER NOT NULL, metrics TEXT NOT NULL,
    PRIMARY KEY (trial, epoch));
"""


@dataclass
class Trial:
    name: str
    seq: int
    state: TrialState
    params: dict
    config: dict | None = None
    summary: dict | None = None
    notebook: str | None = None
    wandb_id: str | None = None
    started: float | None = None
    ended: float | None = None
    exit_reason: str | None = None
    retry_of: str | None = None  # the crashed or out-of-memory trial this one runs again
    worker: str | None = None  # the token of the driver process that claimed it (lease.DriverLease)
    history: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.state = TrialState(self.state)  # read back from SQLite as its value


class Ledger:
    def __init__(self, path: str | Path, new: bool = False):
        """Open the ledger at ``path``; ``new``: make it (the file must not exist yet). An existing one
        is checked before anything is written to it: a damaged ledger is an error naming it, never
        replaced by an empty one (only ``reid-sweep reindex`` writes a ledger anew)."""
        self.path = Path(path)
        self.worker: str | None = None  # the token this driver writes on the trials it claims (lease.DriverLease)
        self._lock = threading.RLock()  # one connection, shared by the driver's worker threads
        if not new:
            self._check_file()
        self._conn = sqlite3.connect(self.path, timeout=LOCK_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            if not new:
                tables = {row[0] for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if not {"sweep", "trials", "history"} <= tables or \
                        not self._conn.execute("SELECT COUNT(*) FROM sweep").fetchone()[0]:
                    raise sqlite3.DatabaseError(f"tables {sorted(tables)}, no sweep recorded")
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA busy_timeout={int(LOCK_TIMEOUT_S * 1000)}")
            self._conn.executescript(_SCHEMA)
            self._upgrade()
        except sqlite3.Error as err:
            self._conn.close()
            raise self._failure(err) from err

    def _check_file(self) -> None:
        # stat, never open: closing any descriptor of the file drops this process's SQLite locks on it
        if self.path.stat().st_size == 0:
            raise SweepStateError(str(self.path), f"damaged: empty (0 bytes); {self._rebuild}")

    @property
    def _rebuild(self) -> str:
        return f"rebuild it from the trial notebooks with 'reid-sweep reindex {self.path.parent}'"

    def _upgrade(self) -> None:
        # a ledger from before retries, drivers, the W&B destination and the seed were recorded
        for table, column, kind in (("trials", "retry_of", "TEXT"), ("trials", "worker", "TEXT"),
                                    ("sweep", "wandb", "TEXT"), ("sweep", "seed", "INTEGER")):
            if column not in {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")}:
                try:
                    self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                except sqlite3.OperationalError as err:
                    if "duplicate column" not in str(err):  # another driver added it first
                        raise
                if column == "wandb":  # where those sweeps sent their runs unless told otherwise
                    self._conn.execute("UPDATE sweep SET wandb = ? WHERE wandb IS NULL", (LEGACY_WANDB_DESTINATION,))

    @classmethod
    def create(cls, sweep_dir: str | Path, sweep_id: str, name: str, spec: dict, filename: str = LEDGER_FILE) -> "Ledger":
        """A new ledger with its sweep recorded. It is made under a temporary name and renamed into
        place whole, so a reader (``status``, a joining driver) never meets one without its tables."""
        path = Path(sweep_dir) / filename
        partial = path.with_name(f".{filename}.new")
        for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
            leftover.unlink(missing_ok=True)
        ledger = cls(partial, new=True)
        try:
            with ledger._write() as db:
                # the spec's seed is the sweep's (the driver puts the one it drew there)
                db.execute("INSERT INTO sweep (id, name, spec, created, seed) VALUES (?, ?, ?, ?, ?)",
                           (sweep_id, name, json.dumps(spec), time.time(), spec.get("seed")))
        finally:
            ledger.close()  # the last connection: SQLite folds its WAL into the file
        os.replace(partial, path)
        return cls(path)

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
        """One write transaction, exclusive across threads (the lock) and processes (IMMEDIATE);
        all of it or nothing (a failed COMMIT, e.g. on a full disk, leaves the transaction open:
        it is rolled back too)."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as err:
                raise self._failure(err) from err

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as err:
                raise self._failure(err) from err

    def _failure(self, err: sqlite3.Error) -> Exception:
        """What SQLite says (locked, disk full, read-only, damaged) as one line a user can act on."""
        resume = f"resume the sweep (--sweep-id {self.path.parent.name})"
        text = str(err)
        if "locked" in text:
            return SweepStateError(str(self.path), f"locked by another process for over {LOCK_TIMEOUT_S:g} s, so "
                                   f"nothing was written; once it lets go, {resume}")
        if "full" in text:
            return SweepStateError(str(self.path), f"disk full ({err}), so the last write was not recorded; "
                                   f"free some space, then {resume}")
        if "readonly" in text or "unable to open" in text or "disk I/O" in text:
            return SweepStateError(str(self.path), f"cannot be written ({err}); SQLite writes beside it even to "
                                   f"read it: check the permissions of {self.path.parent}")
        return SweepStateError(str(self.path), f"damaged ({err}); {self._rebuild}")

    # --- sweep ---

    def sweep(self) -> dict:
        """The sweep's id, name, spec, creation time, ``wandb`` destination (``{}`` until recorded) and
        search ``seed`` (None in a ledger from before seeds, until a driver records one)."""
        with self._read() as db:
            row = db.execute("SELECT id, name, spec, created, wandb, seed FROM sweep").fetchone()
        return {"id": row[0], "name": row[1], "spec": json.loads(row[2]), "created": row[3],
                "wandb": json.loads(row[4]) if row[4] else {}, "seed": row[5]}

    def record_seed(self, seed: int) -> int:
        """Record the search's seed unless the sweep has one; returns the recorded one."""
        with self._write() as db:
            db.execute("UPDATE sweep SET seed = ? WHERE seed IS NULL", (seed,))
        return self.sweep()["seed"]

    def record_wandb_destination(self, destination: dict) -> dict:
        """Record where the sweep's W&B runs go (project, entity), unless a driver already did (a W&B
        sweep lives in one project); returns the recorded one. Resumes and ``reid-sweep sync`` use it."""
        with self._write() as db:
            db.execute("UPDATE sweep SET wandb = ? WHERE wandb IS NULL", (json.dumps(destination),))
        return self.sweep()["wandb"]

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
            db.execute("INSERT INTO trials (name, seq, state, params, started, retry_of, worker) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (name, seq, RUNNING, json.dumps(params), now, retry_of, self.worker))
        return Trial(name=name, seq=seq, state=RUNNING, params=params, started=now, retry_of=retry_of, worker=self.worker)

    def insert_trial(self, name: str, seq: int, state: TrialState, params: dict, **fields: Any) -> None:
        """Record a trial as it was (``reindex``); ``fields`` as ``update_trial`` takes them."""
        with self._write() as db:
            db.execute("INSERT INTO trials (name, seq, state, params) VALUES (?, ?, ?, ?)",
                       (name, seq, state, json.dumps(params)))
        if fields:
            self.update_trial(name, **fields)

    def update_trial(self, name: str, if_state: tuple[str, ...] | None = None, **fields: Any) -> bool:
        """Set columns of a trial (dict values are stored as JSON); with ``if_state``, only while the
        trial is in one of those states (another process may have ended it meanwhile). Returns
        whether the trial was updated."""
        allowed = {"state", "config", "summary", "notebook", "wandb_id", "started", "ended", "exit_reason"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown trial fields {sorted(unknown)}")
        values = [json.dumps(v) if k in ("config", "summary") else v for k, v in fields.items()]
        condition = f" AND state IN ({', '.join('?' * len(if_state))})" if if_state else ""
        with self._write() as db:
            return db.execute(f"UPDATE trials SET {', '.join(f'{k} = ?' for k in fields)} WHERE name = ?{condition}",
                              (*values, name, *(if_state or ()))).rowcount > 0

    def end_trial(self, name: str, state: TrialState, summary: dict | None, exit_reason: str | None = None) -> None:
        self.update_trial(name, state=state, summary=summary, exit_reason=exit_reason, ended=time.time())

    def add_epoch(self, name: str, metrics: dict) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO history VALUES (?, ?, ?)", (name, int(metrics["epoch"]), json.dumps(metrics)))

    def trials(self, with_history: bool = False) -> list[Trial]:
        with self._read():
            return self._read_trials(with_history)

    def _read_trials(self, with_history: bool) -> list[Trial]:
        rows = self._conn.execute(
            "SELECT name, seq, state, params, config, summary, notebook, wandb_id, started, ended, exit_reason, "
            "retry_of, worker FROM trials ORDER BY seq").fetchall()
        trials = [Trial(name=r[0], seq=r[1], state=r[2], params=json.loads(r[3]),
                        config=json.loads(r[4]) if r[4] else None, summary=json.loads(r[5]) if r[5] else None,
                        notebook=r[6], wandb_id=r[7], started=r[8], ended=r[9], exit_reason=r[10],
                        retry_of=r[11], worker=r[12]) for r in rows]
        if with_history:
            by_name = {t.name: t for t in trials}
            for trial, metrics in self._conn.execute("SELECT trial, metrics FROM history ORDER BY trial, epoch"):
                by_name[trial].history.append(json.loads(metrics))
        return trials

