"""What to do next for a job: a pure function of the job and its attempts.

:func:`decide` takes a job and every attempt it has had (as the ledger holds them) and returns
the actions a watcher carries out: start attempts, stop attempts, move the job to another state.
It reads no clock but the ``now`` it is given, talks to no backend and writes nothing, so the
whole resubmission policy is tested from tables (``tests/unit/test_policy.py``) in milliseconds.

The rules, per array index, on the newest attempt:

| newest attempt          | job QUEUED/RUNNING                               | job PAUSING            | job CANCELLING |
|-------------------------|--------------------------------------------------|------------------------|----------------|
| none                    | start the first                                  | (nothing to stop)      | -              |
| PENDING/UNKNOWN         | wait                                             | stop it                | stop it        |
| RUNNING                 | wait (QUEUED -> RUNNING)                         | wait for the halt; stop it after ``halt_timeout`` | stop it |
| SUCCEEDED               | done                                             | done                   | done           |
| PREEMPTED               | start the next while the preemption budget lasts, else FAILED | -         | -              |
| FAILED                  | start the next while the failure budget lasts, else FAILED | -            | -              |
| HALTED                  | start the next (the job was resumed); PAUSED if it ended after the job last moved | - | -   |
| HALTED or CANCELLED to switch capacity (``stop_requested: switch``) | start the next (on the other capacity) | - | - |
| CANCELLED               | the job is CANCELLED                             | -                      | -              |

When every index has SUCCEEDED the job is SUCCEEDED (whatever else was asked). A PAUSING job
with nothing left running is PAUSED; a CANCELLING one, CANCELLED. Budgets count attempts: every
FAILED attempt is one retry of the failure budget, and every PREEMPTED one that committed no
progress (``progressed`` names those that did) one retry of the preemption budget, so the count
scales with the work: a long job on a bad zone, preempted often but moving on each time, is never
failed by count, while one preempted again and again before it can checkpoint is. HALTED and
CANCELLED attempts are charged to neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from runner.contract import EXIT_HALTED
from runner.states import AttemptState, JobState

#: Seconds a running attempt has to stop after ``runner halt`` before it is stopped by force.
HALT_TIMEOUT = 180.0


class JobLike(Protocol):
    id: str
    state: JobState
    message: str
    array_size: int
    preemption_budget: int
    failure_budget: int
    updated_at: float


class AttemptLike(Protocol):
    id: int
    number: int
    array_index: int
    state: AttemptState
    reason: str
    backend_id: str | None
    started_at: float | None
    ended_at: float | None
    stop_requested: str | None


@dataclass(frozen=True)
class Start:
    """Reserve and submit the next attempt of these array indexes (together, when several)."""

    indexes: tuple[int, ...]
    why: str


@dataclass(frozen=True)
class Stop:
    """Cancel an open attempt on its backend (idempotent; repeated until the backend confirms)."""

    attempt_id: int
    number: int
    why: str


@dataclass(frozen=True)
class Move:
    """Move the job to another state; ``final`` when it is one of the ended states."""

    state: JobState
    message: str = ""

    @property
    def final(self) -> bool:
        return self.state.is_terminal()


Action = Start | Stop | Move


@dataclass(frozen=True)
class Budgets:
    """Retries used and allowed, counted from the attempts."""

    preemptions: int
    failures: int
    preemption_budget: int
    failure_budget: int


def budgets(job: JobLike, attempts: Sequence[AttemptLike],
            progressed: frozenset[tuple[int, int]] = frozenset()) -> Budgets:
    """Count the job's charged attempts: PREEMPTED ones that made no progress against one budget (the
    ``(index, number)`` in ``progressed`` committed some), FAILED ones against the other."""
    return Budgets(sum(a.state == AttemptState.PREEMPTED and (a.array_index, a.number) not in progressed
                       for a in attempts),
                   sum(a.state == AttemptState.FAILED for a in attempts),
                   job.preemption_budget, job.failure_budget)


def newest(attempts: Sequence[AttemptLike]) -> dict[int, AttemptLike]:
    """Return each array index's newest attempt."""
    latest: dict[int, AttemptLike] = {}
    for a in sorted(attempts, key=lambda a: (a.array_index, a.number)):
        latest[a.array_index] = a
    return latest


def decide(job: JobLike, attempts: Sequence[AttemptLike], now: float,
           halt_timeout: float = HALT_TIMEOUT, progressed: frozenset[tuple[int, int]] = frozenset()) -> list[Action]:
    """Return what to do for ``job`` now; an empty list means wait."""
    if not job.state.is_active():
        return []
    latest = newest(attempts)
    if latest and len(latest) == job.array_size and all(a.state == AttemptState.SUCCEEDED for a in latest.values()):
        return [Move(JobState.SUCCEEDED, "all attempts done")]
    open_ = [a for a in latest.values() if not a.state.is_terminal()]
    if job.state == JobState.CANCELLING:
        if not open_:
            return [Move(JobState.CANCELLED, "cancelled by the user")]
        return [Stop(a.id, a.number, "the job is cancelled") for a in open_]
    if job.state == JobState.PAUSING:
        return _pausing(job, open_, now, halt_timeout)
    return _running(job, attempts, latest, progressed)


def _pausing(job: JobLike, open_: list[AttemptLike], now: float, halt_timeout: float) -> list[Action]:
    if not open_:
        if job.message.startswith("budget reached"):  # the watcher paused it: say why, not "the user"
            return [Move(JobState.PAUSED, job.message)]
        return [Move(JobState.PAUSED, f"halted by the user; resume with `runner resume {job.id}`")]
    actions: list[Action] = []
    for a in open_:
        if a.state != AttemptState.RUNNING and a.started_at is None:
            actions.append(Stop(a.id, a.number, "halted before it started"))
        elif now - job.updated_at > halt_timeout:
            actions.append(Stop(a.id, a.number, f"did not stop within {halt_timeout:g}s of the halt request"))
    return actions


def _running(job: JobLike, attempts: Sequence[AttemptLike], latest: dict[int, AttemptLike],
             progressed: frozenset[tuple[int, int]]) -> list[Action]:
    used = budgets(job, attempts, progressed)
    first = tuple(i for i in range(job.array_size) if i not in latest)
    actions: list[Action] = []
    if first:
        what = "attempt 1" if job.array_size == 1 else f"{len(first)} array children"
        actions.append(Start(first, f"first attempt: starting {what}"))
    for index in sorted(latest):
        a = latest[index]
        if a.state == AttemptState.PREEMPTED:
            if used.preemptions <= used.preemption_budget:  # the budget counts retries
                actions.append(Start((index,), f"preempted ({used.preemptions} of {used.preemption_budget} retries)"))
            else:
                return [Move(JobState.FAILED, f"preempted {used.preemptions} times without progress, more than "
                                              f"the preemption budget (retries.preemptions = "
                                              f"{used.preemption_budget}); raise it, checkpoint more often, or "
                                              "run on demand (spot: false)")]
        elif a.state == AttemptState.FAILED:
            if used.failures <= used.failure_budget:
                actions.append(Start((index,), f"failed ({used.failures} of {used.failure_budget} retries)"))
            else:
                return [Move(JobState.FAILED, f"attempt {a.number} failed ({a.reason or 'no reason given'}) and "
                                              f"the failure budget (retries.failures = {used.failure_budget}) "
                                              f"is spent; see `runner logs {job.id}`")]
        elif a.state in (AttemptState.HALTED, AttemptState.CANCELLED) and a.stop_requested == "switch":
            actions.append(Start((index,), f"attempt {a.number} made way for the other capacity"))
        elif a.state == AttemptState.HALTED:
            if a.ended_at is not None and a.ended_at > job.updated_at:  # halted since the job last moved
                return [Move(JobState.PAUSED, f"attempt {a.number} stopped for a HALT request under the checkpoint "
                                              f"URI; resume with `runner resume {job.id}`")]
            actions.append(Start((index,), "resumed after a halt"))
        elif a.state == AttemptState.CANCELLED:
            return [Move(JobState.CANCELLED, f"attempt {a.number} was cancelled ({a.reason or 'outside the runner'})")]
        elif a.state == AttemptState.RUNNING and job.state == JobState.QUEUED:
            actions.append(Move(JobState.RUNNING))
    return actions


def as_halted(job_state: JobState, state: AttemptState, exit_code: int | None = None) -> bool:
    """Whether an attempt that ended in ``state`` (with ``exit_code``) counts as HALTED.

    Exit 76 is the task's own "stopped after ``runner halt``", whatever a backend called it. And while
    the job is PAUSING, exit 75 (PREEMPTED) or the stop the watcher sent (CANCELLED) is the halt the
    user asked for, not a preemption or a cancel.
    """
    if exit_code == EXIT_HALTED and state in (AttemptState.FAILED, AttemptState.PREEMPTED):
        return True
    return job_state == JobState.PAUSING and state in (AttemptState.PREEMPTED, AttemptState.CANCELLED)
