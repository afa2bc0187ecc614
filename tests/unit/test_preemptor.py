"""Preemptor decisions with a fake clock, a fake backend and the real simulator (no engine)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.ledger import Attempt, Job, Ledger
from runner.sim.metadata import MetadataSimulator
from runner.sim.preemptor import Preemptor
from runner.spec import SimulatePreemption, spec_from_dict
from runner.states import AttemptState, AttemptStatus

T0 = 1_000_000.0


class FakeBackend:
    """Records kills and SIGTERMs; ``ended`` holds ids whose containers have already stopped."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.ended: set[str] = set()

    def preempt(self, backend_id: str, mode: str) -> bool:
        self.calls.append(("kill", f"{backend_id}:{mode}"))
        return backend_id not in self.ended

    def notify(self, backend_id: str) -> bool:
        self.calls.append(("sigterm", backend_id))
        return backend_id not in self.ended


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.db") as db:
        yield db


def plan(**fields: Any) -> SimulatePreemption:
    return SimulatePreemption.model_validate(fields)


def new_job(ledger: Ledger, array: int = 1) -> str:
    return ledger.create_job(spec_from_dict({"name": "sim", "image": "x", "array": array}))


def running_attempt(ledger: Ledger, job_id: str, index: int = 0) -> Attempt:
    attempt = ledger.reserve_attempt(job_id, index)
    ledger.record_submitted(attempt.id, f"c-{attempt.key}")
    return ledger.update_attempt(attempt.id, AttemptStatus(AttemptState.RUNNING, "running", started_at=T0))


def end(ledger: Ledger, attempt: Attempt) -> None:
    ledger.update_attempt(attempt.id, AttemptStatus(AttemptState.PREEMPTED, "killed by the preemptor"))


def test_parachute_notices_then_kills_after_the_window(ledger: Ledger) -> None:
    backend, clock = FakeBackend(), Clock()
    with MetadataSimulator() as sim:
        pre = Preemptor(backend, sim, clock)  # type: ignore[arg-type]
        job_id = new_job(ledger)
        attempt = running_attempt(ledger, job_id)
        pre.prepare(attempt.key, "azure")
        p = plan(every="10s", notice="5s")
        job = ledger.get_job(job_id)
        clock.now = T0 + 9.9
        assert pre.step(job, attempt, p, "azure") is None
        clock.now = T0 + 10
        assert pre.step(job, attempt, p, "azure") == f"{attempt.key}: azure preemption notice, 5s before the kill"
        assert sim.state(attempt.key)["pending"] and sim.state(attempt.key)["cloud"] == "azure"
        clock.now = T0 + 14.9
        assert pre.step(job, attempt, p, "azure") is None and backend.calls == []
        clock.now = T0 + 15
        assert pre.step(job, attempt, p, "azure") == f"{attempt.key}: killed after its 5s notice (parachute)"
        assert backend.calls == [("kill", f"c-{attempt.key}:parachute")]
        clock.now = T0 + 100
        assert pre.step(job, attempt, p, "azure") is None


def test_mixed_alternates_and_count_limits(ledger: Ledger) -> None:
    backend, clock = FakeBackend(), Clock()
    pre = Preemptor(backend, None, clock)  # type: ignore[arg-type]
    p = plan(every="1s", notice="2s", mode="mixed", count=2)
    job_id = new_job(ledger)
    clock.now = T0 + 1

    first = running_attempt(ledger, job_id)  # odd: parachute, by SIGTERM without a simulator
    assert pre.step(ledger.get_job(job_id), first, p, "aws") == \
        f"{first.key}: preemption notice by SIGTERM, 2s before the kill"
    end(ledger, first)

    second = running_attempt(ledger, job_id)  # even: bus
    assert pre.step(ledger.get_job(job_id), second, p, "aws") == f"{second.key}: killed without notice (bus)"
    end(ledger, second)

    third = running_attempt(ledger, job_id)  # count reached: left alone
    clock.now = T0 + 1000
    assert pre.step(ledger.get_job(job_id), third, p, "aws") is None
    assert backend.calls == [("sigterm", f"c-{first.key}"), ("kill", f"c-{second.key}:bus")]


def test_count_holds_across_array_children_in_one_round(ledger: Ledger) -> None:
    backend, clock = FakeBackend(), Clock()
    pre = Preemptor(backend, None, clock)  # type: ignore[arg-type]
    p = plan(every="1s", mode="bus", count=1)
    job_id = new_job(ledger, array=2)
    children = [running_attempt(ledger, job_id, i) for i in range(2)]
    clock.now = T0 + 5
    job = ledger.get_job(job_id)  # the same stale job for both, as in one watcher round
    actions = [pre.step(job, a, p, "gcp") for a in children]
    assert actions == [f"{children[0].key}: killed without notice (bus)", None]


def test_a_bus_for_an_ended_container_is_not_counted(ledger: Ledger) -> None:
    backend, clock = FakeBackend(), Clock()
    pre = Preemptor(backend, None, clock)  # type: ignore[arg-type]
    p = plan(every="1s", mode="bus", count=1)
    job_id = new_job(ledger, array=2)
    a, b = (running_attempt(ledger, job_id, i) for i in range(2))
    backend.ended.add(f"c-{a.key}")
    clock.now = T0 + 5
    job = ledger.get_job(job_id)
    assert pre.step(job, a, p, "gcp") == f"{a.key}: had already stopped when its preemption came"
    assert pre.step(job, b, p, "gcp") == f"{b.key}: killed without notice (bus)"


def test_mean_is_drawn_once_per_attempt_and_reproducible(ledger: Ledger) -> None:
    p = plan(mean="60s", seed=7)
    job_id = new_job(ledger)
    attempt = running_attempt(ledger, job_id)
    job = ledger.get_job(job_id)
    pre = Preemptor(FakeBackend(), None)  # type: ignore[arg-type]
    due = pre.due_at(job, attempt, p)
    assert due is not None and due > T0
    assert Preemptor(FakeBackend(), None).due_at(job, attempt, p) == due  # type: ignore[arg-type]
    other = dataclasses.replace(attempt, number=2)
    assert pre.due_at(job, other, p) != due
    assert pre.due_at(job, attempt, plan(mean="60s", seed=8)) != due
    draws = [pre.due_at(job, dataclasses.replace(attempt, number=n), p) - T0 for n in range(1, 2001)]  # type: ignore[operator]
    assert 50 < sum(draws) / len(draws) < 70


def test_a_restarted_preemptor_does_not_notice_twice(ledger: Ledger) -> None:
    backend, clock = FakeBackend(), Clock()
    with MetadataSimulator() as sim:
        job_id = new_job(ledger)
        attempt = running_attempt(ledger, job_id)
        p = plan(every="10s", notice="30s")
        clock.now = T0 + 10
        Preemptor(backend, sim, clock).step(ledger.get_job(job_id), attempt, p, "gcp")  # type: ignore[arg-type]
        requests_before = sim.state(attempt.key)
        restarted = Preemptor(backend, sim, clock)  # type: ignore[arg-type]
        # the real simulator keeps wall-clock time: the restart happens "now" on both clocks
        assert restarted.step(ledger.get_job(job_id), attempt, p, "gcp") is None
        assert sim.state(attempt.key)["deadline"] == requests_before["deadline"]
        clock.now = T0 + 40.5
        assert restarted.step(ledger.get_job(job_id), attempt, p, "gcp") == \
            f"{attempt.key}: killed after its 30s notice (parachute)"


def test_only_running_submitted_attempts_are_touched(ledger: Ledger) -> None:
    backend, clock = FakeBackend(), Clock()
    pre = Preemptor(backend, None, clock)  # type: ignore[arg-type]
    job_id = new_job(ledger)
    attempt = ledger.reserve_attempt(job_id)
    clock.now = T0 + 1e6
    job: Job = ledger.get_job(job_id)
    assert pre.step(job, attempt, plan(every="1s", mode="bus"), "aws") is None
    assert backend.calls == []
