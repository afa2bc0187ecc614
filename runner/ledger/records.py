"""What the ledger holds, as Python values: jobs, attempts, leases; the errors it raises; spec redaction."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.errors import LedgerError
from runner.states import AttemptState, JobState

if TYPE_CHECKING:
    from runner.spec.model import JobSpec

REDACTED = "***"
#: Env names and values that look like secrets: redacted in the ledger, masked in pages.
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
SECRET_VALUE = re.compile(r"AccountKey=|SharedAccessSignature=|sig=[A-Za-z0-9%+/=]{20,}|"
                           r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|PRIVATE KEY-----|://[^/\s:@]+:[^/\s@]+@")


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
