"""Attempt and job states, and the status a backend reports for one attempt.

Provider strings never leave a backend: each maps them onto :class:`AttemptState` and keeps
the original wording in :attr:`AttemptStatus.reason`. The watcher alone owns :class:`JobState`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class AttemptState(StrEnum):
    """Where one attempt (one container run on one backend) stands."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    PREEMPTED = "PREEMPTED"
    CANCELLED = "CANCELLED"
    #: Stopped on the user's request (``runner halt``), its checkpoint committed; charged to no budget.
    HALTED = "HALTED"
    UNKNOWN = "UNKNOWN"

    def is_terminal(self) -> bool:
        """Return True when the attempt will never change state again.

        UNKNOWN (a poll failed) is not terminal: the attempt may still be running.
        """
        return self in _TERMINAL_ATTEMPT


class JobState(StrEnum):
    """Where a job (all its attempts together) stands.

    QUEUED -> RUNNING -> SUCCEEDED | FAILED; ``runner cancel``: CANCELLING -> CANCELLED once the
    backend confirms every attempt stopped; ``runner halt``: PAUSING -> PAUSED once the running
    attempt has committed and stopped; ``runner resume``: PAUSED -> QUEUED.
    """

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    PAUSING = "PAUSING"
    PAUSED = "PAUSED"
    CANCELLING = "CANCELLING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    def is_terminal(self) -> bool:
        """Return True when the job is done, for good or bad."""
        return self in _TERMINAL_JOB

    def is_active(self) -> bool:
        """Return True when a watcher has something to do for the job (PAUSED and the ended: nothing)."""
        return self in ACTIVE_JOB


_TERMINAL_ATTEMPT = frozenset(
    {
        AttemptState.SUCCEEDED,
        AttemptState.FAILED,
        AttemptState.PREEMPTED,
        AttemptState.CANCELLED,
        AttemptState.HALTED,
    }
)
_TERMINAL_JOB = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
#: The job states a watcher polls and acts on.
ACTIVE_JOB = (JobState.QUEUED, JobState.RUNNING, JobState.PAUSING, JobState.CANCELLING)


@dataclass(frozen=True)
class AttemptStatus:
    """What a backend says about one attempt: a state, the provider's reason, and times."""

    state: AttemptState
    reason: str = ""
    exit_code: int | None = None
    started_at: float | None = None
    ended_at: float | None = None

    def is_terminal(self) -> bool:
        """Return True when the attempt's state is terminal."""
        return self.state.is_terminal()
