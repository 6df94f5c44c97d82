"""The durable job journal: one SQLite database in the state folder.

Job states::

    received --digitize--> digitized --all destinations--> delivered
        |                       |
        +--> failed (reason)    +--> dead-letter (a destination refused for good
                                     or ran out of attempts)

Every job has one delivery row per destination (``pending`` -> ``delivered`` or
``dead``), so a failing destination never blocks another. Jobs are keyed by the
input's identity (``sop:<SOPInstanceUID>`` for DICOM objects, ``sha256:<hex>``
otherwise): the same input received twice is one job and one delivery.

The database runs in WAL mode with ``synchronous=FULL``: a state change that
returned is on disk and survives SIGKILL or a power cut. The one exception is
the row recording a newly received input (``add_job(..., sync=False)``): the
input file itself was made durable just before, so that row is written without
its own fsync (it survives SIGKILL, and after a power cut it is rebuilt from the
file by :func:`ecgbridge.jobs.store.recover_orphans`). Any later durable commit
also makes every earlier row durable, since the WAL is written in order.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

#: File name of the journal inside the state folder.
JOURNAL_FILE = "journal.sqlite3"



class JobState(StrEnum):
    """Where a job is: received -> digitized -> delivered, or failed / dead-letter.

    String-valued, so the journal's ``state`` column and JSON output hold the plain words.
    """

    RECEIVED = "received"
    DIGITIZED = "digitized"
    DELIVERED = "delivered"
    FAILED = "failed"
    DEAD_LETTER = "dead-letter"


class DeliveryState(StrEnum):
    """Where one job's delivery to one destination is (``delivered`` as for the job)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


#: The states by name (``DELIVERED`` is the job's; a delivery's compares equal), and all.
RECEIVED, DIGITIZED, DELIVERED, FAILED, DEAD_LETTER = JobState
PENDING, DEAD = DeliveryState.PENDING, DeliveryState.DEAD
JOB_STATES: tuple[JobState, ...] = tuple(JobState)
DELIVERY_STATES: tuple[DeliveryState, ...] = tuple(DeliveryState)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    input_key TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    input_name TEXT NOT NULL,
    input_path TEXT NOT NULL,
    sha256 TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    sop_instance_uid TEXT NOT NULL DEFAULT '',
    files TEXT NOT NULL DEFAULT '{}',
    received_at REAL NOT NULL,
    digitized_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, received_at);
CREATE TABLE IF NOT EXISTS deliveries (
    job_id TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
    destination TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    delivered_at REAL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (job_id, destination)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(destination, state, next_attempt_at);
"""


def job_id_for_key(input_key: str) -> str:
    """Derive the stable job id of an input key (16 hex digits of its SHA-256)."""
    return hashlib.sha256(input_key.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Delivery:
    """One job's delivery to one destination."""

    job_id: str
    destination: str
    state: DeliveryState
    attempts: int
    next_attempt_at: float
    last_error: str = ""
    detail: str = ""
    delivered_at: float | None = None


@dataclass(frozen=True)
class Job:
    """One input and what happened to it."""

    job_id: str
    input_key: str
    source: str
    input_name: str
    input_path: str
    sha256: str
    state: JobState
    reason: str
    attempts: int
    sop_instance_uid: str
    files: dict[str, str]
    received_at: float
    digitized_at: float | None
    finished_at: float | None
    updated_at: float
    deliveries: tuple[Delivery, ...] = field(default=())


class Journal:
    """Thread-safe access to the job journal.

    Parameters
    ----------
    path : Path
        The SQLite file (created with its schema if missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(_SCHEMA)
        # second connection for rows whose durability the state folder already provides
        self._fast = sqlite3.connect(
            str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._fast.row_factory = sqlite3.Row
        self._fast.execute("PRAGMA synchronous=NORMAL")
        self._fast.execute("PRAGMA busy_timeout=30000")

    @classmethod
    def in_state_folder(cls, state_dir: Path) -> Journal:
        """Open the journal of a state folder."""
        return cls(Path(state_dir) / JOURNAL_FILE)

    def close(self) -> None:
        """Close the database connections."""
        with self._lock:
            self._fast.close()
            self._db.close()

    @contextmanager
    def _transaction(self, sync: bool = True) -> Iterator[sqlite3.Connection]:
        db = self._db if sync else self._fast
        with self._lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # ------------------------------------------------------------------ jobs
    def add_job(
        self,
        *,
        input_key: str,
        source: str,
        input_name: str,
        input_path: str,
        sha256: str = "",
        received_at: float | None = None,
        sync: bool = True,
    ) -> tuple[str, bool]:
        """Record a received input.

        With ``sync=False`` the commit is not fsynced: only for inputs already made
        durable in the state folder, whose row :func:`recover_orphans` can rebuild.

        Returns
        -------
        (job_id, created) : tuple
            `created` is False when a job with the same `input_key` already exists
            (the input is a duplicate and must not be processed again).
        """
        job_id = job_id_for_key(input_key)
        now = time.time() if received_at is None else received_at
        with self._transaction(sync) as db:
            row = db.execute(
                "SELECT job_id FROM jobs WHERE input_key = ?", (input_key,)
            ).fetchone()
            if row is not None:
                return str(row["job_id"]), False
            db.execute(
                "INSERT INTO jobs (job_id, input_key, source, input_name, input_path, sha256,"
                " state, received_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, input_key, source, input_name, input_path, sha256, RECEIVED, now, now),
            )
        return job_id, True

    def has_key(self, input_key: str) -> bool:
        """True if a job for this input already exists."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM jobs WHERE input_key = ?", (input_key,)
            ).fetchone()
        return row is not None

    def get(self, job_id: str) -> Job | None:
        """Return one job with its deliveries, or None."""
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            drows = self._db.execute(
                "SELECT * FROM deliveries WHERE job_id = ? ORDER BY destination", (job_id,)
            ).fetchall()
        return _job_from_row(row, drows)

    def find(self, prefix: str) -> list[Job]:
        """Jobs whose id starts with `prefix` (for the admin commands)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT job_id FROM jobs WHERE job_id LIKE ? ORDER BY received_at",
                (prefix.replace("%", "").replace("_", "") + "%",),
            ).fetchall()
        return [j for j in (self.get(r["job_id"]) for r in rows) if j is not None]

    def list_jobs(self, states: Sequence[str] | None = None, limit: int = 1000) -> list[Job]:
        """Jobs (without deliveries), oldest first, optionally filtered by state."""
        with self._lock:
            if states:
                marks = ",".join("?" * len(states))
                rows = self._db.execute(
                    f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY received_at LIMIT ?",
                    (*states, limit),
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT * FROM jobs ORDER BY received_at LIMIT ?", (limit,)
                ).fetchall()
        return [_job_from_row(r, []) for r in rows]

    def count_by_state(self) -> dict[str, int]:
        """Number of jobs per state (every state present, zeros included)."""
        counts = {str(state): 0 for state in JOB_STATES}
        with self._lock:
            for row in self._db.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
                counts[row["state"]] = int(row["n"])
        return counts

    def pending_deliveries_by_destination(self) -> dict[str, int]:
        """Deliveries still to do, per destination."""
        with self._lock:
            rows = self._db.execute(
                "SELECT destination, COUNT(*) AS n FROM deliveries WHERE state = ?"
                " GROUP BY destination",
                (PENDING,),
            ).fetchall()
        return {r["destination"]: int(r["n"]) for r in rows}

    def jobs_to_digitize(self, exclude: Sequence[str] = (), limit: int = 10) -> list[Job]:
        """Received jobs, oldest first, not in `exclude` (the ones already running)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE state = ? ORDER BY received_at LIMIT ?",
                (RECEIVED, limit + len(exclude)),
            ).fetchall()
        skip = set(exclude)
        return [_job_from_row(r, []) for r in rows if r["job_id"] not in skip][:limit]

    def mark_digitized(
        self,
        job_id: str,
        files: dict[str, str],
        sop_instance_uid: str,
        destinations: Sequence[str],
    ) -> None:
        """Record the encoded artifacts and open one delivery row per destination."""
        now = time.time()
        with self._transaction() as db:
            cur = db.execute(
                "UPDATE jobs SET state = ?, files = ?, sop_instance_uid = ?, digitized_at = ?,"
                " attempts = attempts + 1, reason = '', updated_at = ?"
                " WHERE job_id = ? AND state = ?",
                (DIGITIZED, json.dumps(files), sop_instance_uid, now, now, job_id, RECEIVED),
            )
            if cur.rowcount != 1:
                return
            for name in destinations:
                db.execute(
                    "INSERT OR IGNORE INTO deliveries (job_id, destination, state,"
                    " next_attempt_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                    (job_id, name, PENDING, now, now),
                )
            if not destinations:
                db.execute(
                    "UPDATE jobs SET state = ?, finished_at = ? WHERE job_id = ?",
                    (DELIVERED, now, job_id),
                )

    def mark_failed(self, job_id: str, reason: str, input_path: str | None = None) -> None:
        """Digitization failed for good: record the reason (and where the input now lies)."""
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = ?, reason = ?, attempts = attempts + 1,"
                " input_path = COALESCE(?, input_path), finished_at = ?, updated_at = ?"
                " WHERE job_id = ?",
                (FAILED, reason, input_path, now, now, job_id),
            )

    # ------------------------------------------------------------ deliveries
    def next_due_delivery(self, destination: str, now: float | None = None) -> Job | None:
        """The pending delivery of `destination` due soonest (None if none is due)."""
        t = time.time() if now is None else now
        with self._lock:
            row = self._db.execute(
                "SELECT job_id FROM deliveries WHERE destination = ? AND state = ?"
                " AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT 1",
                (destination, PENDING, t),
            ).fetchone()
        return None if row is None else self.get(row["job_id"])

    def next_attempt_time(self, destination: str) -> float | None:
        """When the next pending delivery of `destination` is due, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(next_attempt_at) AS t FROM deliveries WHERE destination = ?"
                " AND state = ?",
                (destination, PENDING),
            ).fetchone()
        return None if row is None or row["t"] is None else float(row["t"])

    def mark_delivered(self, job_id: str, destination: str, detail: str) -> bool:
        """Record a successful delivery; return True if that completed the job."""
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "UPDATE deliveries SET state = ?, attempts = attempts + 1, detail = ?,"
                " last_error = '', delivered_at = ?, updated_at = ?"
                " WHERE job_id = ? AND destination = ? AND state = ?",
                (DELIVERED, detail, now, now, job_id, destination, PENDING),
            )
            return self._settle(db, job_id, now)

    def mark_delivery_failed(
        self, job_id: str, destination: str, error: str, *, retry_at: float | None
    ) -> None:
        """Record a failed attempt; `retry_at` None sends the delivery to dead-letter."""
        now = time.time()
        with self._transaction() as db:
            if retry_at is None:
                db.execute(
                    "UPDATE deliveries SET state = ?, attempts = attempts + 1, last_error = ?,"
                    " updated_at = ? WHERE job_id = ? AND destination = ?",
                    (DEAD, error, now, job_id, destination),
                )
            else:
                db.execute(
                    "UPDATE deliveries SET attempts = attempts + 1, last_error = ?,"
                    " next_attempt_at = ?, updated_at = ? WHERE job_id = ? AND destination = ?",
                    (error, retry_at, now, job_id, destination),
                )
            self._settle(db, job_id, now)

    def _settle(self, db: sqlite3.Connection, job_id: str, now: float) -> bool:
        states = [
            r["state"]
            for r in db.execute("SELECT state FROM deliveries WHERE job_id = ?", (job_id,))
        ]
        if not states or PENDING in states:
            return False
        if all(s == DELIVERED for s in states):
            db.execute(
                "UPDATE jobs SET state = ?, finished_at = ?, reason = '', updated_at = ?"
                " WHERE job_id = ?",
                (DELIVERED, now, now, job_id),
            )
            return True
        dead = [
            f"{r['destination']}: {r['last_error']}"
            for r in db.execute(
                "SELECT destination, last_error FROM deliveries WHERE job_id = ? AND state = ?",
                (job_id, DEAD),
            )
        ]
        db.execute(
            "UPDATE jobs SET state = ?, reason = ?, finished_at = ?, updated_at = ?"
            " WHERE job_id = ?",
            (DEAD_LETTER, "; ".join(dead), now, now, job_id),
        )
        return False

    # --------------------------------------------------------------- admin
    def retry(self, job_id: str, input_path: str | None = None) -> bool:
        """Re-queue a failed or dead-letter job; return False if it is in another state.

        A failed job goes back to ``received`` (digitized again); a dead-letter job
        gets its dead deliveries reset to pending with zero attempts.
        """
        now = time.time()
        with self._transaction() as db:
            row = db.execute("SELECT state FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                return False
            if row["state"] == FAILED:
                db.execute(
                    "UPDATE jobs SET state = ?, reason = '', finished_at = NULL,"
                    " input_path = COALESCE(?, input_path), updated_at = ? WHERE job_id = ?",
                    (RECEIVED, input_path, now, job_id),
                )
                return True
            if row["state"] == DEAD_LETTER:
                db.execute(
                    "UPDATE deliveries SET state = ?, attempts = 0, next_attempt_at = ?,"
                    " updated_at = ? WHERE job_id = ? AND state = ?",
                    (PENDING, now, now, job_id, DEAD),
                )
                db.execute(
                    "UPDATE jobs SET state = ?, reason = '', finished_at = NULL, updated_at = ?"
                    " WHERE job_id = ?",
                    (DIGITIZED, now, job_id),
                )
                return True
        return False

    def delivered_before(self, cutoff: float) -> list[str]:
        """Ids of delivered jobs finished before `cutoff` (epoch seconds)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT job_id FROM jobs WHERE state = ? AND finished_at < ?",
                (DELIVERED, cutoff),
            ).fetchall()
        return [r["job_id"] for r in rows]

    def delete(self, job_ids: Sequence[str]) -> int:
        """Remove jobs and their delivery rows; return how many were removed."""
        removed = 0
        with self._transaction() as db:
            for job_id in job_ids:
                db.execute("DELETE FROM deliveries WHERE job_id = ?", (job_id,))
                removed += db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,)).rowcount
        return removed


def _job_from_row(row: sqlite3.Row, drows: Sequence[sqlite3.Row]) -> Job:
    files: dict[str, Any] = json.loads(row["files"] or "{}")
    return Job(
        job_id=row["job_id"],
        input_key=row["input_key"],
        source=row["source"],
        input_name=row["input_name"],
        input_path=row["input_path"],
        sha256=row["sha256"],
        state=JobState(row["state"]),
        reason=row["reason"],
        attempts=int(row["attempts"]),
        sop_instance_uid=row["sop_instance_uid"],
        files={str(k): str(v) for k, v in files.items()},
        received_at=float(row["received_at"]),
        digitized_at=row["digitized_at"],
        finished_at=row["finished_at"],
        updated_at=float(row["updated_at"]),
        deliveries=tuple(
            Delivery(
                job_id=d["job_id"],
                destination=d["destination"],
                state=DeliveryState(d["state"]),
                attempts=int(d["attempts"]),
                next_attempt_at=float(d["next_attempt_at"]),
                last_error=d["last_error"],
                detail=d["detail"],
                delivered_at=d["delivered_at"],
            )
            for d in drows
        ),
    )
