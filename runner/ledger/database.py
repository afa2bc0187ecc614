"""The Ledger: one SQLite file of jobs and attempts (see the package's docstring for its guarantees)."""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.errors import LedgerError
from runner.ledger.leases import Leases, local_id
from runner.ledger.records import (
    Attempt,
    AttemptStillOpen,
    Job,
    JobNotActive,
    JobNotFound,
    JobStateChanged,
    attempt_from_row,
    job_from_row,
    redact_spec,
)
from runner.ledger.schema import _OPEN_SQL, migrate
from runner.paths import default_ledger_path
from runner.states import AttemptState, AttemptStatus, JobState

if TYPE_CHECKING:
    from runner.spec.model import JobSpec

default_path = default_ledger_path  # the ledger's own name for it


#: Seconds a ledger that answers "database is locked" while it opens is tried again.
OPEN_PATIENCE = 30.0


def _busy(exc: BaseException | None) -> bool:
    if isinstance(exc, LedgerError):  # the migration's BEGIN IMMEDIATE, wrapped
        exc = exc.__cause__
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


class Ledger(Leases):
    """The jobs-and-attempts database; use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self._local_id = local_id()
        self._lock = threading.RLock()
        deadline = time.monotonic() + OPEN_PATIENCE
        while True:
            try:
                self._open()
                return
            except (OSError, sqlite3.Error, LedgerError) as exc:
                # Another process switching the file to WAL, or checkpointing it as it closes, answers
                # "database is locked" at once, without SQLite's busy wait: a moment later it opens.
                if _busy(exc) and time.monotonic() < deadline:
                    with contextlib.suppress(Exception):
                        self._db.close()
                    time.sleep(0.05 + random.random() * 0.2)
                    continue
                if isinstance(exc, LedgerError):
                    raise
                raise LedgerError(
                    f"cannot open the ledger {self.path}: {exc}; check the path or set RUNNER_HOME"
                ) from exc

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA busy_timeout = 30000")
        if self._db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            self._db.execute("PRAGMA journal_mode = WAL")  # persistent: set once, when the file is new
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute("PRAGMA foreign_keys = ON")
        self._migrate()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """Run the block as one immediate transaction; roll back on any error."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise LedgerError(f"cannot write the ledger {self.path}: {exc}; try again") from exc
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.IntegrityError) and str(exc).endswith(
                    "attempts.job_id, attempts.array_index"
                ):
                    raise AttemptStillOpen(f"another attempt of this job is still open ({exc})") from exc
                if isinstance(exc, sqlite3.Error):
                    raise LedgerError(f"cannot write the ledger {self.path}: {exc}; try again") from exc
                raise

    def _read(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(args)).fetchall()
            except sqlite3.Error as exc:
                raise LedgerError(f"cannot read the ledger {self.path}: {exc}") from exc

    def _migrate(self) -> None:
        """Create the tables, or upgrade an older ledger in place (one transaction)."""
        with self._write() as db:
            migrate(db, self.path)

    # ------------------------------------------------------------------ jobs

    def create_job(self, spec: JobSpec, spec_path: str | Path | None = None, machine: str | None = None) -> str:
        """Record a new QUEUED job for ``spec`` and return its id, ``<name>-<6 hex>``."""
        spec_json = json.dumps(redact_spec(spec.model_dump(mode="json")), sort_keys=True)
        now = time.time()
        with self._write() as db:
            while True:
                job_id = f"{spec.name}-{secrets.token_hex(3)}"
                if db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                    break
            db.execute(
                "INSERT INTO jobs (id, name, spec_json, spec_path, backend, array_size, state,"
                " created_at, updated_at, preemption_budget, failure_budget, machine)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id, spec.name, spec_json, None if spec_path is None else str(spec_path),
                    spec.backend, spec.array, JobState.QUEUED.value, now, now,
                    spec.retries.preemptions, spec.retries.failures, machine,
                ),
            )  # fmt: skip
        return job_id

    def get_job(self, job_id: str) -> Job:
        """Return one job; raise JobNotFound when there is none with this id."""
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise JobNotFound(f"no job {job_id!r} in {self.path}; list jobs with `runner status`")
        return job_from_row(rows[0])

    def list_jobs(self, states: Iterable[JobState | str] | None = None) -> list[Job]:
        """Return jobs, oldest first, optionally only those in ``states``."""
        if states is None:
            rows = self._read("SELECT * FROM jobs ORDER BY created_at, id")
        else:
            wanted = [JobState(s).value for s in states]
            marks = ", ".join("?" * len(wanted))
            rows = self._read(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY created_at, id", wanted)
        return [job_from_row(r) for r in rows]

    def set_job_state(self, job_id: str, state: JobState | str, message: str = "",
                      owner: str | None = None, expect: Iterable[JobState] | None = None) -> Job:
        """Set a job's state and message; return the updated job.

        With ``owner``, only under its lease; with ``expect``, only from one of those states (else
        JobStateChanged: someone else, a ``runner cancel`` say, moved the job meanwhile).
        """
        with self._write() as db:
            row = self._require_job(db, job_id)
            self._check_lease(db, job_id, owner)
            if expect is not None and row["state"] not in {JobState(e).value for e in expect}:
                raise JobStateChanged(f"job {job_id} is {row['state']} now, not "
                                      f"{' or '.join(JobState(e).value for e in expect)}")
            db.execute(
                "UPDATE jobs SET state = ?, message = ?, updated_at = ? WHERE id = ?",
                (JobState(state).value, message, time.time(), job_id),
            )
        return self.get_job(job_id)

    def recount(self, job_id: str) -> Job:
        """Set the budget counters from the attempts themselves (idempotent, crash-safe)."""
        with self._write() as db:
            self._require_job(db, job_id)
            db.execute(
                "UPDATE jobs SET preemptions_used = (SELECT COUNT(*) FROM attempts WHERE job_id = ?"
                " AND state = ?), failures_used = (SELECT COUNT(*) FROM attempts WHERE job_id = ?"
                " AND state = ?) WHERE id = ?",
                (job_id, AttemptState.PREEMPTED.value, job_id, AttemptState.FAILED.value, job_id),
            )
        return self.get_job(job_id)

    def set_result(self, job_id: str, result: dict[str, Any]) -> Job:
        """Store the job's final result (a JSON-able mapping); return the job."""
        text = json.dumps(result, sort_keys=True)
        with self._write() as db:
            self._require_job(db, job_id)
            db.execute(
                "UPDATE jobs SET result_json = ?, updated_at = ? WHERE id = ?", (text, time.time(), job_id)
            )
        return self.get_job(job_id)

    # ------------------------------------------------------------------ attempts

    def reserve_attempt(self, job_id: str, array_index: int = 0, backend: str | None = None,
                        owner: str | None = None, capacity: str = "spot") -> Attempt:
        """Insert the next PENDING attempt before it is submitted; refuse while one is still open.

        ``backend`` defaults to the job's; name another to move the job (its checkpoint URI
        goes with it). With ``owner``, only while that watcher holds the job's lease (LeaseLost).
        Raises AttemptStillOpen, or LedgerError for a finished job or a bad index.
        """
        with self._write() as db:
            job = job_from_row(self._require_job(db, job_id))
            self._check_lease(db, job_id, owner)
            if job.state.is_terminal():
                raise JobNotActive(f"job {job_id} is {job.state.value}; submit it again as a new job")
            if job.state in (JobState.PAUSED, JobState.PAUSING, JobState.CANCELLING):
                raise JobNotActive(f"job {job_id} is {job.state.value}: no new attempt starts"
                                  + (f"; resume it with `runner resume {job_id}`" if job.state != JobState.CANCELLING
                                     else ""))
            if not 0 <= array_index < job.array_size:
                raise LedgerError(
                    f"job {job_id} has array indexes 0..{job.array_size - 1}, not {array_index}"
                )
            open_row = db.execute(
                f"SELECT number, state FROM attempts WHERE job_id = ? AND array_index = ?"
                f" AND state IN {_OPEN_SQL}",
                (job_id, array_index),
            ).fetchone()
            if open_row is not None:
                raise AttemptStillOpen(
                    f"job {job_id} index {array_index} still has attempt {open_row['number']} "
                    f"({open_row['state']}); wait for it to end or cancel it"
                )
            (last,) = db.execute(
                "SELECT COALESCE(MAX(number), 0) FROM attempts WHERE job_id = ? AND array_index = ?",
                (job_id, array_index),
            ).fetchone()
            cursor = db.execute(
                "INSERT INTO attempts (job_id, number, array_index, backend, state, reserved_at, capacity)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    last + 1,
                    array_index,
                    backend or job.backend,
                    AttemptState.PENDING.value,
                    time.time(),
                    capacity,
                ),
            )
            row = db.execute("SELECT * FROM attempts WHERE id = ?", (cursor.lastrowid,)).fetchone()
        return attempt_from_row(row)


    def record_submitted(self, attempt_id: int, backend_id: str) -> Attempt:
        """Record the backend's id for a reserved attempt; the same id again is a no-op."""
        with self._write() as db:
            row = self._require_attempt(db, attempt_id)
            if row["backend_id"] not in (None, backend_id):
                raise LedgerError(
                    f"attempt {attempt_id} was already submitted as {row['backend_id']!r}, not {backend_id!r}"
                )
            db.execute(
                "UPDATE attempts SET backend_id = ?, submitted_at = COALESCE(submitted_at, ?) WHERE id = ?",
                (backend_id, time.time(), attempt_id),
            )
            row = self._require_attempt(db, attempt_id)
        return attempt_from_row(row)

    def update_attempt(self, attempt_id: int, status: AttemptStatus) -> Attempt:
        """Store what the backend reports; a terminal attempt never changes again (returned as is)."""
        with self._write() as db:
            row = self._require_attempt(db, attempt_id)
            if AttemptState(row["state"]).is_terminal():
                return attempt_from_row(row)
            ended_at = status.ended_at
            if ended_at is None and status.state.is_terminal():
                ended_at = time.time()
            db.execute(
                "UPDATE attempts SET state = ?, reason = ?, exit_code = COALESCE(?, exit_code),"
                " started_at = COALESCE(?, started_at), ended_at = COALESCE(?, ended_at) WHERE id = ?",
                (
                    status.state.value,
                    status.reason,
                    status.exit_code,
                    status.started_at,
                    ended_at,
                    attempt_id,
                ),
            )
            charged = {AttemptState.PREEMPTED: "preemptions_used", AttemptState.FAILED: "failures_used"}
            if status.state in charged:  # an attempt ends once: its budget is charged once, here
                column = charged[status.state]
                db.execute(f"UPDATE jobs SET {column} = {column} + 1 WHERE id = ?", (row["job_id"],))
            row = self._require_attempt(db, attempt_id)
        return attempt_from_row(row)

    def fill_machines(self, machine_of: Any) -> int:
        """Set ``jobs.machine`` where it is missing (jobs from before schema 3), with ``machine_of(spec)``."""
        rows = self._read("SELECT id FROM jobs WHERE machine IS NULL")
        for row in rows:
            try:
                machine = str(machine_of(self.get_job(row["id"]).spec()))
            except Exception:  # noqa: BLE001 - a stored spec this version cannot read: no machine
                machine = "?"
            with self._write() as db:
                db.execute("UPDATE jobs SET machine = ? WHERE id = ? AND machine IS NULL", (machine, row["id"]))
        return len(rows)

    def machine_history(self, machine: str, noticed_exit: int) -> tuple[float, int, int]:
        """Return (machine seconds, preemptions, preemptions that ended with ``noticed_exit``) of every
        ended attempt of the jobs on ``machine``: one query."""
        rows = self._read(
            "SELECT COALESCE(SUM(MAX(0, a.ended_at - a.started_at)), 0), "
            "COALESCE(SUM(a.state = ?), 0), COALESCE(SUM(a.state = ? AND a.exit_code = ?), 0) "
            "FROM attempts a JOIN jobs j ON a.job_id = j.id "
            "WHERE j.machine = ? AND a.started_at IS NOT NULL AND a.ended_at IS NOT NULL",
            (AttemptState.PREEMPTED.value, AttemptState.PREEMPTED.value, noticed_exit, machine))
        return float(rows[0][0]), int(rows[0][1]), int(rows[0][2])

    def request_stop(self, attempt_id: int, why: str) -> Attempt:
        """Record that the runner asked an attempt to stop, and why (``switch``, ``budget``)."""
        with self._write() as db:
            self._require_attempt(db, attempt_id)
            db.execute("UPDATE attempts SET stop_requested = ? WHERE id = ?", (why, attempt_id))
            return attempt_from_row(self._require_attempt(db, attempt_id))

    def update_spec(self, job_id: str, spec: JobSpec) -> Job:
        """Replace a job's stored spec (``runner resume --budget``), redacted as at creation."""
        spec_json = json.dumps(redact_spec(spec.model_dump(mode="json")), sort_keys=True)
        with self._write() as db:
            self._require_job(db, job_id)
            db.execute("UPDATE jobs SET spec_json = ?, updated_at = ? WHERE id = ?", (spec_json, time.time(), job_id))
        return self.get_job(job_id)

    def get_attempt(self, attempt_id: int) -> Attempt:
        """Return one attempt; raise LedgerError when there is none with this id."""
        rows = self._read("SELECT * FROM attempts WHERE id = ?", (attempt_id,))
        if not rows:
            raise LedgerError(f"no attempt {attempt_id} in {self.path}")
        return attempt_from_row(rows[0])

    def attempts(self, job_id: str) -> list[Attempt]:
        """Return a job's attempts by array index, then number."""
        rows = self._read("SELECT * FROM attempts WHERE job_id = ? ORDER BY array_index, number", (job_id,))
        return [attempt_from_row(r) for r in rows]

    def open_attempts(self) -> list[Attempt]:
        """Return every attempt not yet terminal (PENDING, RUNNING, UNKNOWN), for the watcher."""
        rows = self._read(f"SELECT * FROM attempts WHERE state IN {_OPEN_SQL} ORDER BY id")
        return [attempt_from_row(r) for r in rows]

    # ------------------------------------------------------------------ helpers

    def _require_job(self, db: sqlite3.Connection, job_id: str) -> sqlite3.Row:
        row: sqlite3.Row | None = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id!r} in {self.path}; list jobs with `runner status`")
        return row

    def _require_attempt(self, db: sqlite3.Connection, attempt_id: int) -> sqlite3.Row:
        row: sqlite3.Row | None = db.execute("SELECT * FROM attempts WHERE id = ?", (attempt_id,)).fetchone()
        if row is None:
            raise LedgerError(f"no attempt {attempt_id} in {self.path}")
        return row

