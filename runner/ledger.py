"""Jobs and attempts in SQLite; survives a crash of the watcher at any point.

One file, ``$RUNNER_HOME/ledger.db`` (``RUNNER_HOME`` defaults to ``~/.local/share/spot-runner``),
in WAL mode. Every write is one ``BEGIN IMMEDIATE`` transaction, so a process killed mid-write
leaves the previous state, and two writers never interleave.

Never two attempts at once: :meth:`Ledger.reserve_attempt` inserts the next attempt (PENDING,
no ``backend_id``) *before* the backend is asked to run it, and refuses while another attempt of
the same job and array index is not terminal; a partial unique index enforces the same rule in
the database. A watcher that restarts finds a reserved-but-maybe-unsubmitted attempt in
:meth:`Ledger.open_attempts` with ``backend_id`` None, and can look it up on the backend by
:attr:`Attempt.key` (a deterministic name to submit under) instead of submitting twice.

Never two watchers on one job: a watcher acts on a job (submits, resubmits, finishes it) only
while it holds the job's lease, a row in ``leases`` (job id, owner ``host:pid:random``,
``expires_at``). :meth:`Ledger.acquire_leases` takes free or expired leases and renews its own in
one ``BEGIN IMMEDIATE`` transaction, so two processes never both hold one; a watcher renews every
tick, releases on a clean exit, and a killed watcher's leases expire (``LEASE_TTL``, 30 s), after
which another watcher takes the jobs over. A lease whose owner ran on this machine, in this PID
namespace (same ``local_id``: boot id and namespace), and whose process is gone, is taken at once:
a watcher restarted by systemd or cron does not wait out its predecessor's leases.
:meth:`Ledger.reserve_attempt` and
:meth:`Ledger.set_job_state` take an ``owner`` and check the lease in the same transaction, so a
watcher that lost its lease mid-tick (paused, too slow) cannot start or end anything.

Schema versions: 1 (jobs, attempts), 2 (leases), 3 (who is submitting an attempt since when; a job's
machine, for the preemption history), 4 (each attempt's capacity, spot or on-demand, and why the
runner asked it to stop: a switch of capacity or a budget). An older ledger is upgraded in place when it is opened; a newer
one is refused.

Never one attempt submitted twice: before the backend is asked, :meth:`Ledger.begin_submit` marks the
attempt as being submitted by its watcher (``submitting_by``, ``submitting_at``), in a transaction that
checks the watcher's lease has time left. Another watcher that finds the attempt reserved but
unrecorded waits until that mark is old (:data:`SUBMIT_GRACE`; less when the marking process is known
dead), then asks the backend (``find``) before submitting it itself. ``RUNNER_SUBMIT_GRACE`` and
``RUNNER_DEAD_SUBMIT_GRACE`` (seconds) override the two grace periods (tests shorten them).

The stored spec is redacted: ``env`` values whose name looks like a secret, or whose value does
(an Azure ``AccountKey=``/``SharedAccessSignature=``, an AWS key id, a PEM private key, a URL with a
password), read ``***``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.errors import LedgerError
from runner.paths import data_dir, default_ledger_path  # noqa: F401 - data_dir re-exported
from runner.states import AttemptState, AttemptStatus, JobState

if TYPE_CHECKING:
    from runner.spec.model import JobSpec

SCHEMA_VERSION = 4
#: Seconds a lease lasts unless renewed; a killed watcher's jobs are taken over after this.
LEASE_TTL = 30.0
#: Seconds another watcher leaves a reserved attempt alone while its submitter may still be sending it
#: (a submit call's timeouts and retries fit in it); when that process is known dead, DEAD_SUBMIT_GRACE,
#: the time a service may take to list a job it has just accepted.
SUBMIT_GRACE = 180.0  # above one submit try's worst case in a brown-out (AWS: 3 calls x 3 requests x 15 s)
DEAD_SUBMIT_GRACE = 10.0
#: Environment variables that override those two (seconds, read at each use; tests shorten them).
SUBMIT_GRACE_ENV, DEAD_SUBMIT_GRACE_ENV = "RUNNER_SUBMIT_GRACE", "RUNNER_DEAD_SUBMIT_GRACE"
REDACTED = "***"
#: Env names and values that look like secrets: redacted in the ledger, masked in pages.
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
SECRET_VALUE = re.compile(r"AccountKey=|SharedAccessSignature=|sig=[A-Za-z0-9%+/=]{20,}|"
                           r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|PRIVATE KEY-----|://[^/\s:@]+:[^/\s@]+@")
_OPEN = tuple(s.value for s in AttemptState if not s.is_terminal())
_OPEN_SQL = "(" + ", ".join(f"'{s}'" for s in _OPEN) + ")"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    spec_path TEXT,
    backend TEXT NOT NULL,
    array_size INTEGER NOT NULL DEFAULT 1,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    preemptions_used INTEGER NOT NULL DEFAULT 0,
    failures_used INTEGER NOT NULL DEFAULT 0,
    preemption_budget INTEGER NOT NULL,
    failure_budget INTEGER NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    result_json TEXT
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    number INTEGER NOT NULL CHECK (number >= 1),
    array_index INTEGER NOT NULL DEFAULT 0,
    backend TEXT NOT NULL,
    backend_id TEXT,
    state TEXT NOT NULL,
    reserved_at REAL NOT NULL,
    submitted_at REAL,
    started_at REAL,
    ended_at REAL,
    exit_code INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    UNIQUE (job_id, array_index, number)
);
CREATE UNIQUE INDEX IF NOT EXISTS attempts_one_open
    ON attempts (job_id, array_index) WHERE state IN {_OPEN_SQL};
CREATE INDEX IF NOT EXISTS attempts_by_state ON attempts (state);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state);
"""

#: version -> the statements that upgrade a ledger from the version before it.
_MIGRATIONS: dict[int, str] = {
    2: """
CREATE TABLE IF NOT EXISTS leases (
    job_id TEXT PRIMARY KEY REFERENCES jobs(id),
    owner TEXT NOT NULL,
    acquired_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    local_id TEXT
);
CREATE INDEX IF NOT EXISTS leases_by_owner ON leases (owner);
""",
    3: """
ALTER TABLE attempts ADD COLUMN submitting_at REAL;
ALTER TABLE attempts ADD COLUMN submitting_by TEXT;
ALTER TABLE jobs ADD COLUMN machine TEXT;
CREATE INDEX IF NOT EXISTS jobs_by_machine ON jobs (machine);
""",
    4: """
ALTER TABLE attempts ADD COLUMN capacity TEXT NOT NULL DEFAULT 'spot';
ALTER TABLE attempts ADD COLUMN stop_requested TEXT;
""",
}


default_path = default_ledger_path  # the ledger's own name for it


def redact_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of a spec mapping whose secret-looking ``env`` values read ``***``."""
    env = spec.get("env") or {}
    return {**spec, "env": {k: REDACTED if SECRET_NAME.search(k) or SECRET_VALUE.search(str(v)) else v
                            for k, v in env.items()}}


class AttemptStillOpen(LedgerError):
    """An attempt of this job and array index has not ended; a second one would run at once."""


class JobNotFound(LedgerError):
    """No job has this id."""


class JobStateChanged(LedgerError):
    """The job is not in the state the caller expected (another process moved it)."""


class SubmitInProgress(LedgerError):
    """Another watcher is submitting this attempt (marked recently); leave it to that watcher."""


class JobNotActive(LedgerError):
    """The job takes no new attempt in its state (ended, paused, being paused or cancelled)."""


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


class LeaseLost(LedgerError):
    """This watcher does not hold the job's lease (any more): another watcher acts on the job."""


@dataclass(frozen=True)
class Lease:
    """Who may act on a job, until when."""

    job_id: str
    owner: str
    acquired_at: float
    expires_at: float
    local_id: str | None = None

    def is_live(self, now: float | None = None) -> bool:
        return self.expires_at > (time.time() if now is None else now)


@dataclass(frozen=True)
class Job:
    """One job as the ledger knows it."""

    id: str
    name: str
    spec_json: str
    spec_path: str | None
    backend: str
    array_size: int
    state: JobState
    created_at: float
    updated_at: float
    preemptions_used: int
    failures_used: int
    preemption_budget: int
    failure_budget: int
    message: str
    result: dict[str, Any] | None
    machine: str | None = None

    @property
    def preemptions_left(self) -> int:
        return max(0, self.preemption_budget - self.preemptions_used)

    @property
    def failures_left(self) -> int:
        return max(0, self.failure_budget - self.failures_used)

    def spec(self) -> JobSpec:
        """Return the stored (redacted) spec; secret ``env`` values read ``***``."""
        from runner.spec.load import spec_from_dict

        return spec_from_dict(json.loads(self.spec_json), f"ledger job {self.id}")


@dataclass(frozen=True)
class Attempt:
    """One run of one job (one array child) on one backend."""

    id: int
    job_id: str
    number: int
    array_index: int
    backend: str
    backend_id: str | None
    state: AttemptState
    reserved_at: float
    submitted_at: float | None
    started_at: float | None
    ended_at: float | None
    exit_code: int | None
    reason: str
    submitting_at: float | None = None
    submitting_by: str | None = None
    capacity: str = "spot"               # "spot" or "on-demand"
    stop_requested: str | None = None    # why the runner asked it to stop: "switch", "budget"

    @property
    def key(self) -> str:
        """Return a deterministic name for this attempt, to submit under and to find it by."""
        return f"{self.job_id}-{self.array_index}-{self.number}"

    @property
    def is_open(self) -> bool:
        return not self.state.is_terminal()


class Ledger:
    """The jobs-and-attempts database; use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self._local_id = local_id()
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA busy_timeout = 30000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(
                f"cannot open the ledger {self.path}: {exc}; check the path or set RUNNER_HOME"
            ) from exc

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ plumbing

    @contextmanager
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
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            version = 1 if row[0] is None else int(row[0])
            if version > SCHEMA_VERSION:
                raise LedgerError(
                    f"the ledger {self.path} has schema version {version}, newer than this "
                    f"runner's {SCHEMA_VERSION}; upgrade spot-runner"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in filter(str.strip, _MIGRATIONS[target].split(";")):
                    db.execute(statement)
            if row[0] != SCHEMA_VERSION:
                db.execute("DELETE FROM schema_version")
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))

    # ------------------------------------------------------------------ leases

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


def job_from_row(row: Any) -> Job:
    """Build a Job from a ``jobs`` row (a sqlite3.Row or a mapping of its columns)."""
    data = dict(row)
    result = data.pop("result_json")
    data.update(state=JobState(data["state"]), result=None if result is None else json.loads(result))
    return Job(**data)


def attempt_from_row(row: Any) -> Attempt:
    """Build an Attempt from an ``attempts`` row (a sqlite3.Row or a mapping of its columns)."""
    data = dict(row)
    return Attempt(**{**data, "state": AttemptState(data["state"])})
