"""Job leases in the ledger: one watcher per job, takeover after expiry, schema upgrade, health."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from runner.backends.base import Backend, Submission
from runner.ledger import _SCHEMA, SCHEMA_VERSION, Ledger, LeaseLost, local_id
from runner.spec import JobSpec, spec_from_dict
from runner.states import AttemptState, AttemptStatus, JobState
from runner.health import HealthServer, write_status
from runner.watcher import Event, Watcher, new_owner_id


def _spec(**extra: Any) -> JobSpec:
    return spec_from_dict({"name": "demo", "image": "localhost/runner-cifar:latest", **extra})


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def ledger(home: Path) -> Any:
    with Ledger(home / "ledger.db") as led:
        yield led


# ---------------------------------------------------------------------------- the table


def test_fresh_ledger_is_version_4_with_leases_submit_marks_and_capacity(ledger: Ledger) -> None:
    db = sqlite3.connect(ledger.path)
    assert SCHEMA_VERSION == 4
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(4,)]
    cols = [r[1] for r in db.execute("PRAGMA table_info(leases)")]
    assert cols == ["job_id", "owner", "acquired_at", "expires_at", "local_id"]
    assert {"submitting_at", "submitting_by"} <= {r[1] for r in db.execute("PRAGMA table_info(attempts)")}
    assert "machine" in {r[1] for r in db.execute("PRAGMA table_info(jobs)")}


def test_version_1_ledger_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(_SCHEMA)  # the version-1 schema: jobs and attempts only
    db.execute("INSERT INTO schema_version (version) VALUES (1)")
    db.execute("INSERT INTO jobs (id, name, spec_json, backend, state, created_at, updated_at,"
               " preemption_budget, failure_budget) VALUES ('old-1', 'demo', ?, 'local', 'RUNNING', 1, 1, 3, 1)",
               (json.dumps(_spec().model_dump(mode="json")),))
    db.execute("INSERT INTO attempts (job_id, number, backend, backend_id, state, reserved_at)"
               " VALUES ('old-1', 1, 'local', 'c1', 'RUNNING', 1)")
    db.commit()
    assert "leases" not in {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    db.close()
    with Ledger(path) as led:
        assert led.get_job("old-1").state == JobState.RUNNING
        assert [a.backend_id for a in led.attempts("old-1")] == ["c1"]
        assert led.acquire_lease("old-1", "w1")
    db = sqlite3.connect(path)
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(4,)]
    Ledger(path).close()  # opening again changes nothing
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(4,)]
    assert db.execute("SELECT owner FROM leases").fetchall() == [("w1",)]


def test_acquire_renew_release(ledger: Ledger) -> None:
    a, b = ledger.create_job(_spec()), ledger.create_job(_spec())
    assert ledger.acquire_leases([a, b], "w1", ttl=30) == {a, b}
    assert ledger.acquire_leases([a, b], "w2", ttl=30) == set()
    first = {lease.job_id: lease for lease in ledger.leases()}
    time.sleep(0.05)
    assert ledger.acquire_leases([a], "w1", ttl=30) == {a}  # renewal: same owner, later expiry
    renewed = {lease.job_id: lease for lease in ledger.leases()}
    assert renewed[a].acquired_at == first[a].acquired_at and renewed[a].expires_at > first[a].expires_at
    assert renewed[b].expires_at == first[b].expires_at
    assert ledger.release_leases("w2") == 0
    assert ledger.release_leases("w1", [a]) == 1
    assert ledger.acquire_leases([a, b], "w2", ttl=30) == {a}
    assert {lease.job_id: lease.owner for lease in ledger.leases()} == {a: "w2", b: "w1"}
    assert ledger.release_leases("w1") == 1 and ledger.release_leases("w2") == 1
    assert ledger.leases() == []


def test_expired_lease_is_taken_over(ledger: Ledger) -> None:
    job = ledger.create_job(_spec())
    assert ledger.acquire_lease(job, "dead", ttl=0.3)
    assert not ledger.acquire_lease(job, "alive", ttl=30)
    time.sleep(0.35)
    assert ledger.acquire_lease(job, "alive", ttl=30)
    (lease,) = ledger.leases()
    assert lease.owner == "alive" and lease.is_live()
    assert not ledger.acquire_lease(job, "dead", ttl=0.3)  # the old owner cannot renew what it lost


def _hold_and_exit(path: str, job: str) -> None:
    with Ledger(path) as led:
        assert led.acquire_lease(job, new_owner_id(), ttl=3600)


def test_lease_of_a_dead_local_process_is_taken_at_once(ledger: Ledger) -> None:
    job, other = ledger.create_job(_spec()), ledger.create_job(_spec())
    proc = multiprocessing.get_context("spawn").Process(target=_hold_and_exit, args=(str(ledger.path), job))
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == 0
    (dead,) = ledger.leases()
    assert dead.is_live() and dead.local_id == local_id() and dead.owner.split(":")[1] == str(proc.pid)
    assert ledger.acquire_lease(job, "successor", ttl=30)  # no waiting out the hour
    # A live process's lease stands, and so does one from another machine or PID namespace.
    assert ledger.acquire_lease(other, new_owner_id(), ttl=3600)
    assert not ledger.acquire_lease(other, "successor", ttl=30)
    with sqlite3.connect(ledger.path) as db:
        db.execute("UPDATE leases SET owner = ?, local_id = 'elsewhere/1' WHERE job_id = ?",
                   (f"remote:{proc.pid}:abc", other))
    assert not ledger.acquire_lease(other, "successor", ttl=30)


def test_actions_are_fenced_by_the_lease(ledger: Ledger) -> None:
    job = ledger.create_job(_spec())
    with pytest.raises(LeaseLost, match="held by nobody"):
        ledger.reserve_attempt(job, owner="w1")
    assert ledger.acquire_lease(job, "w1", ttl=0.5)
    with pytest.raises(LeaseLost, match="held by w1"):
        ledger.reserve_attempt(job, owner="w2")
    with pytest.raises(LeaseLost):
        ledger.set_job_state(job, JobState.CANCELLED, "no", owner="w2")
    assert ledger.attempts(job) == [] and ledger.get_job(job).state == JobState.QUEUED
    assert ledger.reserve_attempt(job, owner="w1").number == 1
    time.sleep(0.55)  # expired, though nobody took it: still no acting without renewing
    with pytest.raises(LeaseLost):
        ledger.set_job_state(job, JobState.RUNNING, owner="w1")
    assert ledger.set_job_state(job, JobState.RUNNING).state == JobState.RUNNING  # no owner: unfenced


def _race(path: str, owner: str, jobs: list[str], ttl: float, barrier: Any, out: Any) -> None:
    with Ledger(path) as led:
        barrier.wait()
        out.put((owner, sorted(led.acquire_leases(jobs, owner, ttl))))


@pytest.mark.parametrize("expired_first", [False, True])
def test_racing_processes_never_share_a_job(ledger: Ledger, expired_first: bool) -> None:
    jobs = [ledger.create_job(_spec()) for _ in range(20)]
    if expired_first:  # every lease held by a dead watcher whose leases just ran out
        ledger.acquire_leases(jobs, "dead", ttl=0.01)
        time.sleep(0.05)
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(ledger.path), f"w{i}", jobs, 30.0, barrier, out))
             for i in range(6)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    won = [job for held in results.values() for job in held]
    assert sorted(won) == sorted(jobs)  # every job taken, none by two
    owners = {lease.job_id: lease.owner for lease in ledger.leases()}
    assert all(owners[job] == owner for owner, held in results.items() for job in held)


# ---------------------------------------------------------------------------- watchers


class FakeBackend(Backend):
    """Counts submissions; attempts run until ``finish`` is called."""

    name = "local"

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.states: dict[str, AttemptStatus] = {}

    def submit(self, sub: Submission) -> str:
        self.submitted.append(sub.key)
        self.states[sub.key] = AttemptStatus(AttemptState.RUNNING, "running", started_at=time.time())
        return sub.key

    def poll(self, ids: Sequence[str]) -> dict[str, AttemptStatus]:
        return {i: self.states[i] for i in ids if i in self.states}

    def cancel(self, backend_id: str) -> None:
        self.states[backend_id] = AttemptStatus(AttemptState.CANCELLED, "cancelled")

    def logs(self, backend_id: str, follow: bool = False) -> Any:
        return iter(())

    def find(self, sub: Any) -> str | None:
        return sub.key if sub.key in self.states else None

    def finish(self, key: str, state: AttemptState, code: int) -> None:
        self.states[key] = AttemptStatus(state, f"exit {code}", code, ended_at=time.time())


def _watcher(path: Path, backend: FakeBackend, name: str, events: list[tuple[str, str, str]],
             ttl: float = 30.0) -> Watcher:
    return Watcher(Ledger(path), on_event=lambda e: events.append((name, e.job_id, e.text)),
                   backend_factory=lambda _name: backend, owner=name, lease_ttl=ttl)


def test_two_watchers_one_job_each_then_takeover(ledger: Ledger) -> None:
    backend = FakeBackend()
    events: list[tuple[str, str, str]] = []
    jobs = [ledger.create_job(_spec(retries={"preemptions": 3, "failures": 0})) for _ in range(4)]
    a = _watcher(ledger.path, backend, "A", events, ttl=0.6)
    b = _watcher(ledger.path, backend, "B", events, ttl=0.6)
    for _ in range(3):
        a.tick()
        b.tick()
    assert a.held == set(jobs) and b.held == set()
    assert sorted(backend.submitted) == sorted(f"{j}-0-1" for j in jobs)  # once each
    assert any(w == "B" and "watched by another watcher (A" in t for w, _, t in events)
    backend.finish(f"{jobs[0]}-0-1", AttemptState.PREEMPTED, 75)
    b.tick()  # B sees nothing: A holds the lease
    assert len(backend.submitted) == 4
    a.tick()  # A resubmits the preempted job
    assert backend.submitted[-1] == f"{jobs[0]}-0-2"
    # A dies without releasing: B takes over once the leases expire.
    backend.finish(f"{jobs[1]}-0-1", AttemptState.SUCCEEDED, 0)
    b.tick()
    assert b.held == set() and ledger.get_job(jobs[1]).state != JobState.SUCCEEDED
    time.sleep(0.65)
    b.tick()
    assert b.held == set(jobs) - {jobs[1]}  # jobs[1] ended in this pass, its lease released
    assert ledger.get_job(jobs[1]).state == JobState.SUCCEEDED
    assert len(backend.submitted) == 5  # no running attempt was submitted again
    with pytest.raises(LeaseLost):  # the dead watcher, were it to wake, could not act
        a.ledger.reserve_attempt(jobs[2], owner="A")
    a.tick()  # nor does its next pass do anything
    assert len(backend.submitted) == 5 and a.held == set()
    b.close()
    assert ledger.leases() == []
    a.close()


def test_health_server_and_status_file(ledger: Ledger, tmp_path: Path) -> None:
    job = ledger.create_job(_spec())
    events: list[tuple[str, str, str]] = []
    watcher = _watcher(ledger.path, FakeBackend(), "host:1:abc", events)
    server = HealthServer(watcher, 0, interval=1.0).start()
    try:
        watcher.tick()
        with urllib.request.urlopen(server.url, timeout=5) as resp:
            body = json.loads(resp.read())
            assert resp.status == 200
        assert body["ok"] is True and body["owner"] == "host:1:abc" and body["jobs_held"] == [job]
        assert body["ticks"] == 1 and body["last_tick_age_s"] < 5 and body["stale_after_s"] == 10.0
        watcher.last_tick_at = time.time() - 11  # no pass for longer than the stale limit
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(server.url, timeout=5)
        assert caught.value.code == 503 and json.loads(caught.value.read())["ok"] is False
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.url.replace("/healthz", "/nope"), timeout=5)
        assert missing.value.code == 404
        with pytest.raises(Exception, match="pick another --health-port"):
            HealthServer(watcher, int(server.url.rsplit(":", 1)[1].split("/")[0]))
    finally:
        server.stop()
        watcher.close()
    status = tmp_path / "state" / "watch.json"
    write_status(status, watcher.health(1.0))
    assert json.loads(status.read_text())["owner"] == "host:1:abc"
    assert [p.name for p in status.parent.iterdir()] == ["watch.json"]  # no temporary left behind


def test_watcher_events_name_their_watcher(ledger: Ledger) -> None:
    job = ledger.create_job(_spec())
    seen: list[Event] = []
    watcher = Watcher(ledger, on_event=seen.append, backend_factory=lambda _n: FakeBackend())
    watcher.tick()
    assert watcher.owner.count(":") == 2 and watcher.held == {job}
    assert any(f"lease held by {watcher.owner}" in e.text for e in seen)
    watcher.close()
