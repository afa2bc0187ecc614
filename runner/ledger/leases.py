"""Leases: which watcher may act on a job, and the mark of an attempt being submitted.

A watcher acts on a job only while it holds the job's lease (``leases`` row: owner ``host:pid:random``,
``expires_at``). A lease of a process on this machine, in this PID namespace (same :func:`local_id`),
whose process is gone, is taken at once. Before a backend is asked to run an attempt, the watcher marks
it (``submitting_by``, ``submitting_at``); another watcher leaves a marked attempt alone for
:data:`SUBMIT_GRACE` (:data:`DEAD_SUBMIT_GRACE` when the marker is known dead), then looks it up on
the backend before submitting it itself.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.ledger.records import Lease, LeaseLost, SubmitInProgress

#: Seconds a lease lasts unless renewed; a killed watcher's jobs are taken over after this.
LEASE_TTL = 30.0
#: Seconds another watcher leaves a reserved attempt alone while its submitter may still be sending it
#: (a submit call's timeouts and retries fit in it); when that process is known dead, DEAD_SUBMIT_GRACE,
#: the time a service may take to list a job it has just accepted.
SUBMIT_GRACE = 180.0  # above one submit try's worst case in a brown-out (AWS: 3 calls x 3 requests x 15 s)
DEAD_SUBMIT_GRACE = 10.0
#: Environment variables that override those two (seconds, read at each use; tests shorten them).
SUBMIT_GRACE_ENV, DEAD_SUBMIT_GRACE_ENV = "RUNNER_SUBMIT_GRACE", "RUNNER_DEAD_SUBMIT_GRACE"


def local_id() -> str | None:
    """Return ``<boot id>/<pid namespace>``: processes with the same one can see each other's pids."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


_HOST = socket.gethostname()


def _seconds(variable: str, default: float) -> float:
    """Return the environment's non-negative number of seconds in ``variable``, else ``default``."""
    try:
        value = float(os.environ.get(variable, ""))
    except ValueError:
        return default
    return value if value >= 0 else default


def _owner_is_gone(owner: str) -> bool:
    """Whether the ``host:pid:random`` owner's process has ended (only meaningful for the same local_id)."""
    parts = owner.split(":")
    if len(parts) != 3 or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, not ours to signal
        return False
    return False


class Leases:
    """The lease and submit-mark methods of :class:`runner.ledger.Ledger` (which supplies the database)."""

    _local_id: str | None

    if TYPE_CHECKING:  # supplied by the class this is mixed into
        def _write(self) -> AbstractContextManager[sqlite3.Connection]:
            ...

        def _read(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
            ...

        def _require_attempt(self, db: sqlite3.Connection, attempt_id: int) -> sqlite3.Row:
            ...

    def acquire_leases(self, job_ids: Iterable[str], owner: str, ttl: float = LEASE_TTL) -> set[str]:
        """Take each job's lease if it is free or expired, renew it if it is ``owner``'s already.

        One immediate transaction for all of them: of two watchers asking at once, exactly one
        gets each job. A live lease of a process on this machine (same :func:`local_id`) that
        has ended counts as expired. Returns the ids ``owner`` holds afterwards (until ``now + ttl``).
        """
        wanted = list(dict.fromkeys(job_ids))
        if not wanted:
            return set()
        now = time.time()
        marks = ", ".join("?" * len(wanted))
        with self._write() as db:
            if self._local_id is not None:
                for row in db.execute(
                    f"SELECT job_id, owner FROM leases WHERE job_id IN ({marks}) AND owner != ?"
                    " AND expires_at > ? AND local_id = ?", (*wanted, owner, now, self._local_id)
                ).fetchall():
                    if _owner_is_gone(row["owner"]):
                        db.execute("UPDATE leases SET expires_at = ? WHERE job_id = ?", (now, row["job_id"]))
            for job_id in wanted:
                db.execute(
                    "INSERT INTO leases (job_id, owner, acquired_at, expires_at, local_id) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (job_id) DO UPDATE SET owner = excluded.owner,"
                    " acquired_at = CASE WHEN leases.owner = excluded.owner THEN leases.acquired_at"
                    " ELSE excluded.acquired_at END, expires_at = excluded.expires_at, local_id = excluded.local_id"
                    " WHERE leases.owner = excluded.owner OR leases.expires_at <= excluded.acquired_at",
                    (job_id, owner, now, now + ttl, self._local_id),
                )
            rows = db.execute(
                f"SELECT job_id FROM leases WHERE owner = ? AND job_id IN ({marks})", (owner, *wanted)
            ).fetchall()
        return {r["job_id"] for r in rows}

    def acquire_lease(self, job_id: str, owner: str, ttl: float = LEASE_TTL) -> bool:
        """Take or renew one job's lease; return whether ``owner`` holds it now."""
        return job_id in self.acquire_leases([job_id], owner, ttl)

    def release_leases(self, owner: str, job_ids: Iterable[str] | None = None) -> int:
        """Give up ``owner``'s leases (all, or only on ``job_ids``); return how many were released."""
        with self._write() as db:
            if job_ids is None:
                cursor = db.execute("DELETE FROM leases WHERE owner = ?", (owner,))
            else:
                ids = list(job_ids)
                if not ids:
                    return 0
                marks = ", ".join("?" * len(ids))
                cursor = db.execute(f"DELETE FROM leases WHERE owner = ? AND job_id IN ({marks})", (owner, *ids))
            return cursor.rowcount

    def leases(self, job_ids: Iterable[str] | None = None) -> list[Lease]:
        """Return the leases recorded (live and expired), oldest job first."""
        if job_ids is None:
            rows = self._read("SELECT * FROM leases ORDER BY job_id")
        else:
            ids = list(job_ids)
            if not ids:
                return []
            marks = ", ".join("?" * len(ids))
            rows = self._read(f"SELECT * FROM leases WHERE job_id IN ({marks}) ORDER BY job_id", ids)
        return [Lease(**dict(r)) for r in rows]

    def _check_lease(self, db: sqlite3.Connection, job_id: str, owner: str | None) -> None:
        """Inside a write: raise LeaseLost unless ``owner`` (when given) holds a live lease on the job."""
        if owner is None:
            return
        row = db.execute("SELECT owner, expires_at FROM leases WHERE job_id = ?", (job_id,)).fetchone()
        if row is not None and row["owner"] == owner and row["expires_at"] > time.time():
            return
        holder = "nobody"
        if row is not None:
            holder = f"{row['owner']} until {time.strftime('%H:%M:%S', time.localtime(row['expires_at']))}"
        raise LeaseLost(f"watcher {owner} does not hold the lease on job {job_id} (held by {holder}); "
                        "the lease holder acts on it")

    def begin_submit(self, attempt_ids: Iterable[int], owner: str, lease_left: float = 5.0) -> None:
        """Mark reserved attempts as being submitted by ``owner`` now, under its lease.

        Refused (LeaseLost) unless ``owner`` holds the job's lease for at least ``lease_left`` more
        seconds, and (SubmitInProgress) when another watcher marked one within the grace period.
        """
        ids = list(attempt_ids)
        now = time.time()
        with self._write() as db:
            for attempt_id in ids:
                row = self._require_attempt(db, attempt_id)
                lease = db.execute("SELECT owner, expires_at FROM leases WHERE job_id = ?", (row["job_id"],)).fetchone()
                if lease is None or lease["owner"] != owner or lease["expires_at"] - now < lease_left:
                    raise LeaseLost(f"watcher {owner} does not hold the lease on job {row['job_id']} for another "
                                    f"{lease_left:g}s; not submitting")
                if row["backend_id"] is not None:
                    raise SubmitInProgress(f"attempt {row['number']} of {row['job_id']} is submitted already")
                if row["submitting_by"] not in (None, owner) and now - (row["submitting_at"] or 0) < \
                        self.submit_grace(row["submitting_by"]):
                    raise SubmitInProgress(f"attempt {row['number']} of {row['job_id']} is being submitted by "
                                           f"{row['submitting_by']}")
                db.execute("UPDATE attempts SET submitting_at = ?, submitting_by = ? WHERE id = ?",
                           (now, owner, attempt_id))

    def submit_grace(self, owner: str | None) -> float:
        """Seconds to leave an attempt marked by ``owner`` alone: shorter when its process is known dead."""
        if owner is None:
            return 0.0
        lease = self._read("SELECT local_id FROM leases WHERE owner = ? LIMIT 1", (owner,))
        same_machine = (lease and lease[0]["local_id"] == self._local_id) or owner.split(":")[0] == _HOST
        if self._local_id is not None and same_machine and _owner_is_gone(owner):
            return _seconds(DEAD_SUBMIT_GRACE_ENV, DEAD_SUBMIT_GRACE)
        return _seconds(SUBMIT_GRACE_ENV, SUBMIT_GRACE)
