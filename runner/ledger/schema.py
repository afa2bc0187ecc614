"""The ledger's tables, and the statements that upgrade an older ledger in place.

Versions: 1 (jobs, attempts), 2 (leases), 3 (who is submitting an attempt since when; a job's machine,
for the preemption history), 4 (each attempt's capacity, spot or on-demand, and why the runner asked it
to stop: a switch of capacity or a budget). A newer ledger than this runner's is refused.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from runner.errors import LedgerError
from runner.states import AttemptState

SCHEMA_VERSION = 4
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



def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Inside a write: create the tables, or upgrade an older ledger to :data:`SCHEMA_VERSION`."""
    for statement in filter(str.strip, _SCHEMA.split(";")):
        db.execute(statement)
    row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    version = 1 if row[0] is None else int(row[0])
    if version > SCHEMA_VERSION:
        raise LedgerError(
            f"the ledger {path} has schema version {version}, newer than this "
            f"runner's {SCHEMA_VERSION}; upgrade spot-runner"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        for statement in filter(str.strip, _MIGRATIONS[target].split(";")):
            db.execute(statement)
    if row[0] != SCHEMA_VERSION:
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
