"""The dashboard's read-only view of the ledger: every read is ONE SQL statement.

The file is opened with SQLite's URI ``mode=ro``, so nothing the dashboard reads can change it
(actions open a normal :class:`runner.ledger.Ledger` for their own write). A snapshot of all jobs,
or of one job, with their attempts and leases is one ``UNION ALL`` statement: one query per page
update, one consistent read (a statement runs in one read transaction), exact values (no JSON
rounding of the REAL timestamps). Rows become the ledger's own :class:`Job` and :class:`Attempt`
through its own row converters. :attr:`LedgerView.queries` counts the statements run after the
connection was set up (``sqlite3`` trace callback), for the tests and the benchmark.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import quote

from runner.errors import LedgerError
from runner.ledger import SCHEMA_VERSION, Attempt, Job, Lease, attempt_from_row, job_from_row

#: The tables a snapshot reads, and the dataclass whose fields each row fills.
_TABLES = {"jobs": Job, "attempts": Attempt, "leases": Lease}
#: Stored under another name than the dataclass field.
_RENAMED = {"result_json": "result"}


@dataclass
class Snapshot:
    """Jobs (oldest first), their attempts (by index, then number) and leases, as read at ``at``."""

    at: float
    jobs: list[Job] = field(default_factory=list)
    attempts: dict[str, list[Attempt]] = field(default_factory=dict)
    leases: dict[str, Lease] = field(default_factory=dict)
    exists: bool = True   # False: no ledger file yet


class LedgerView:
    """A read-only connection to one ledger file; thread-safe; reconnects when the file appears."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.queries = 0
        self._db: sqlite3.Connection | None = None
        self._columns: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._sql_all = self._sql_job = ""

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # ------------------------------------------------------------------ reads

    def snapshot(self, job_id: str | None = None) -> Snapshot:
        """Every job (or one job) with its attempts and lease, in one statement."""
        with self._lock:
            db = self._connect()
            if db is None:
                return Snapshot(time.time(), exists=False)
            try:
                if job_id is None:
                    rows = db.execute(self._sql_all).fetchall()
                else:
                    rows = db.execute(self._sql_job, {"id": job_id}).fetchall()
            except sqlite3.Error as exc:
                raise LedgerError(f"cannot read the ledger {self.path}: {exc}") from exc
        return self._parse(rows)

    # ------------------------------------------------------------------ plumbing

    def _connect(self) -> sqlite3.Connection | None:
        if self._db is not None:
            return self._db
        if not self.path.exists():
            return None
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        try:
            db = sqlite3.connect(uri, uri=True, timeout=10.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA busy_timeout = 10000")
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            version = 0
            if "schema_version" in tables:
                version = db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 1
            if version > SCHEMA_VERSION:
                db.close()
                raise LedgerError(f"the ledger {self.path} has schema version {version}, newer than this "
                                  f"runner's {SCHEMA_VERSION}; upgrade spot-runner")
            for table, cls in _TABLES.items():
                names = {f.name for f in fields(cls)}
                stored = [r[1] for r in db.execute(f"PRAGMA table_info({table})")] if table in tables else []
                self._columns[table] = [c for c in stored if _RENAMED.get(c, c) in names]
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the ledger {self.path} read-only: {exc}; check the path "
                              "or set RUNNER_HOME") from exc
        self._sql_all, self._sql_job = self._union(None), self._union("id")
        db.set_trace_callback(self._count)
        self._db = db
        return db

    def _union(self, by: str | None) -> str:
        width = max(len(c) for c in self._columns.values())
        parts = []
        for kind, (table, columns) in enumerate(self._columns.items()):
            if not columns:  # an old ledger without this table: nothing to read from it
                continue
            values = ", ".join([f'"{c}"' for c in columns] + ["NULL"] * (width - len(columns)))
            where = "" if by is None else f" WHERE {'id' if table == 'jobs' else 'job_id'} = :id"
            parts.append(f"SELECT {kind} AS kind, {values} FROM {table}{where}")
        return " UNION ALL ".join(parts)

    def _count(self, _statement: str) -> None:
        self.queries += 1

    def _parse(self, rows: list[tuple]) -> Snapshot:
        snap = Snapshot(time.time())
        names = list(self._columns.values())
        jobs_cols, attempt_cols, lease_cols = names
        attempts: list[Attempt] = []
        for row in rows:
            kind = row[0]
            if kind == 0:
                snap.jobs.append(job_from_row(dict(zip(jobs_cols, row[1:1 + len(jobs_cols)], strict=True))))
            elif kind == 1:
                attempts.append(attempt_from_row(dict(zip(attempt_cols, row[1:1 + len(attempt_cols)], strict=True))))
            else:
                lease = Lease(**dict(zip(lease_cols, row[1:1 + len(lease_cols)], strict=True)))
                snap.leases[lease.job_id] = lease
        snap.jobs.sort(key=lambda j: (j.created_at, j.id))
        for a in sorted(attempts, key=lambda a: (a.array_index, a.number)):
            snap.attempts.setdefault(a.job_id, []).append(a)
        return snap
