"""The resubmission policy from a table: a job and its attempts in, the actions out. No engine, no ledger."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from runner.policy import HALT_TIMEOUT, Move, Start, Stop, as_halted, budgets, decide
from runner.states import AttemptState as A
from runner.states import JobState as J

NOW = 1_000_000.0


@dataclass(frozen=True)
class FakeJob:
    state: J = J.RUNNING
    array_size: int = 1
    preemption_budget: int = 2
    failure_budget: int = 1
    updated_at: float = NOW - 10
    id: str = "job-abc123"
    message: str = ""


@dataclass(frozen=True)
class FakeAttempt:
    number: int
    state: A
    array_index: int = 0
    reason: str = ""
    backend_id: str | None = "b-1"
    started_at: float | None = NOW - 100
    id: int = 0
    ended_at: float | None = None
    stop_requested: str | None = None


def attempts(*states: A, index: int = 0, started: bool = True) -> list[FakeAttempt]:
    return [FakeAttempt(n, s, index, backend_id=f"b-{index}-{n}", started_at=NOW - 100 if started else None,
                        id=index * 100 + n, ended_at=NOW - 50 if s.is_terminal() else None)
            for n, s in enumerate(states, 1)]


def kinds(actions: list) -> list[str]:
    """A compact picture of the actions: start:0, start:0,1, stop:3, move:PAUSED."""
    out = []
    for a in actions:
        if isinstance(a, Start):
            out.append("start:" + ",".join(map(str, a.indexes)))
        elif isinstance(a, Stop):
            out.append(f"stop:{a.number}")
        elif isinstance(a, Move):
            out.append(f"move:{a.state.value}")
    return out


P, F, S, R, Q, U, C, H = A.PREEMPTED, A.FAILED, A.SUCCEEDED, A.RUNNING, A.PENDING, A.UNKNOWN, A.CANCELLED, A.HALTED

CASES = [
    # (id, job, attempts, expected actions)
    ("new job starts attempt 1", FakeJob(J.QUEUED), [], ["start:0"]),
    ("new array starts every child together", FakeJob(J.QUEUED, array_size=3), [], ["start:0,1,2"]),
    ("pending waits", FakeJob(J.QUEUED), attempts(Q), []),
    ("unknown never resubmits", FakeJob(), attempts(U), []),
    ("running moves a queued job to RUNNING", FakeJob(J.QUEUED), attempts(R), ["move:RUNNING"]),
    ("running waits", FakeJob(), attempts(R), []),
    ("succeeded ends the job", FakeJob(), attempts(S), ["move:SUCCEEDED"]),
    ("preempted once: next attempt", FakeJob(), attempts(P), ["start:0"]),
    ("preempted up to the budget: next attempt", FakeJob(), attempts(P, P), ["start:0"]),
    ("preempted past the budget: FAILED", FakeJob(), attempts(P, P, P), ["move:FAILED"]),
    ("zero preemption budget still allows none", FakeJob(preemption_budget=0), attempts(P), ["move:FAILED"]),
    ("failed once within budget 1: next attempt", FakeJob(), attempts(F), ["start:0"]),
    ("failed twice with budget 1: FAILED", FakeJob(), attempts(F, F), ["move:FAILED"]),
    ("failures and preemptions are counted apart", FakeJob(), attempts(P, F, P), ["start:0"]),
    ("preempted then succeeded: SUCCEEDED", FakeJob(), attempts(P, S), ["move:SUCCEEDED"]),
    ("a cancelled attempt cancels the job", FakeJob(), attempts(C), ["move:CANCELLED"]),
    ("halted attempts are not charged: resumed", FakeJob(J.QUEUED), attempts(H, H, H, H), ["start:0"]),
    ("halted then preempted counts one preemption", FakeJob(), attempts(H, P, H, P), ["start:0"]),
    ("halted (exit 76) in a running job since it last moved: PAUSED", FakeJob(updated_at=NOW - 60),
     attempts(P, H), ["move:PAUSED"]),
    ("array: one child preempted, one running", FakeJob(array_size=2),
     attempts(P) + attempts(R, index=1), ["start:0"]),
    ("array: all succeeded", FakeJob(array_size=2), attempts(S) + attempts(P, S, index=1), ["move:SUCCEEDED"]),
    ("array: one done, one missing starts it", FakeJob(array_size=2), attempts(S), ["start:1"]),
    ("array: budgets are the job's, over all children", FakeJob(array_size=2),
     attempts(P, P) + attempts(P, R, index=1), ["move:FAILED"]),
    ("array: a failed child past the budget fails the job", FakeJob(array_size=2),
     attempts(F, F) + attempts(R, index=1), ["move:FAILED"]),
    ("cancelling: running attempt is stopped", FakeJob(J.CANCELLING), attempts(P, R), ["stop:2"]),
    ("cancelling: pending attempt is stopped", FakeJob(J.CANCELLING), attempts(Q), ["stop:1"]),
    ("cancelling: unknown attempt is stopped", FakeJob(J.CANCELLING), attempts(U), ["stop:1"]),
    ("cancelling: nothing open: CANCELLED", FakeJob(J.CANCELLING), attempts(P, C), ["move:CANCELLED"]),
    ("cancelling: array stops every open child", FakeJob(J.CANCELLING, array_size=2),
     attempts(R) + attempts(Q, index=1), ["stop:1", "stop:1"]),
    ("cancelling but all succeeded: SUCCEEDED", FakeJob(J.CANCELLING), attempts(S), ["move:SUCCEEDED"]),
    ("pausing: running attempt gets time to commit", FakeJob(J.PAUSING), attempts(R), []),
    ("pausing: running past the halt timeout is stopped",
     FakeJob(J.PAUSING, updated_at=NOW - HALT_TIMEOUT - 1), attempts(R), ["stop:1"]),
    ("pausing: a pending attempt that never started is stopped", FakeJob(J.PAUSING),
     attempts(Q, started=False), ["stop:1"]),
    ("pausing: nothing open: PAUSED", FakeJob(J.PAUSING), attempts(P, H), ["move:PAUSED"]),
    ("pausing with no attempt yet: PAUSED", FakeJob(J.PAUSING), [], ["move:PAUSED"]),
    ("switching capacity: a halted attempt is followed at once", FakeJob(updated_at=NOW - 60),
     [FakeAttempt(1, H, ended_at=NOW - 1, stop_requested="switch", id=1)], ["start:0"]),
    ("switching capacity: a cancelled pending attempt is followed", FakeJob(),
     [FakeAttempt(1, C, stop_requested="switch", started_at=None, id=1)], ["start:0"]),
    ("pausing but the attempt succeeded: SUCCEEDED", FakeJob(J.PAUSING), attempts(S), ["move:SUCCEEDED"]),
    ("paused: a watcher does nothing", FakeJob(J.PAUSED), attempts(H), []),
    ("succeeded job: nothing", FakeJob(J.SUCCEEDED), attempts(S), []),
    ("failed job: nothing", FakeJob(J.FAILED), attempts(F, F), []),
    ("cancelled job: nothing", FakeJob(J.CANCELLED), attempts(C), []),
]


@pytest.mark.parametrize("job,history,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_policy_table(job: FakeJob, history: list[FakeAttempt], expected: list[str]) -> None:
    assert kinds(decide(job, history, NOW)) == expected


def test_the_table_is_large() -> None:
    assert len(CASES) >= 30


def test_preemptions_that_made_progress_are_not_charged() -> None:
    """Retry counts scale with the work: a preemption after a committed checkpoint is free."""
    history = attempts(P, P, P, P, P)
    assert kinds(decide(FakeJob(), history, NOW)) == ["move:FAILED"]
    assert kinds(decide(FakeJob(), history, NOW, progressed=frozenset({(0, 1), (0, 2), (0, 4)}))) == ["start:0"]
    assert budgets(FakeJob(), history, frozenset({(0, 1), (0, 2), (0, 4)})).preemptions == 2


def test_budgets_count_only_preemptions_and_failures() -> None:
    used = budgets(FakeJob(), attempts(P, F, H, C, P, S))
    assert (used.preemptions, used.failures) == (2, 1)


def test_the_failure_message_names_the_budget_and_the_fix() -> None:
    [move] = decide(FakeJob(), attempts(F, F), NOW)
    assert isinstance(move, Move) and "retries.failures = 1" in move.message and "runner logs job-abc123" in move.message
    [move] = decide(FakeJob(), attempts(P, P, P), NOW)
    assert isinstance(move, Move) and "retries.preemptions = 2" in move.message and "spot: false" in move.message
    assert "without progress" in move.message


@pytest.mark.parametrize("job_state,state,code,halted", [
    (J.PAUSING, P, 75, True), (J.PAUSING, C, None, True), (J.PAUSING, F, 1, False), (J.PAUSING, S, 0, False),
    (J.RUNNING, P, 75, False), (J.CANCELLING, C, None, False), (J.RUNNING, F, 76, True), (J.PAUSING, F, 76, True),
    (J.RUNNING, P, 76, True),
])
def test_an_attempt_ended_by_a_halt_counts_as_halted(job_state: J, state: A, code: int | None, halted: bool) -> None:
    assert as_halted(job_state, state, code) is halted
