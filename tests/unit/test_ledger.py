"""The ledger: attempt numbering, never two open attempts, crash safety, no secrets stored."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from runner.errors import LedgerError
from runner.ledger import AttemptStillOpen, JobNotFound, Ledger, data_dir, default_path
from runner.spec import JobSpec, spec_from_dict
from runner.states import AttemptState, AttemptStatus, JobState

REPO = Path(__file__).resolve().parents[2]


def _spec(**extra: Any) -> JobSpec:
    return spec_from_dict({"name": "demo", "image": "localhost/runner-cifar:latest", **extra})


@pytest.fixture
def ledger(tmp_path: Path) -> Any:
    with Ledger(tmp_path / "ledger.db") as led:
        yield led


def test_data_dir_follows_runner_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home"
    assert default_path() == tmp_path / "home" / "ledger.db"
    with Ledger() as led:
        assert led.path == tmp_path / "home" / "ledger.db" and led.path.exists()
    monkeypatch.delenv("RUNNER_HOME")
    assert data_dir() == Path.home() / ".local" / "share" / "spot-runner"


def test_wal_and_schema_version(ledger: Ledger) -> None:
    db = sqlite3.connect(ledger.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(4,)]  # 3: leases, submit marks


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Ledger(tmp_path / "l.db").close()
    with sqlite3.connect(tmp_path / "l.db") as db:
        db.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(LedgerError, match="newer"):
        Ledger(tmp_path / "l.db")


def test_not_a_database_is_a_ledger_error(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LedgerError, match=r"junk\.db"):
        Ledger(tmp_path / "junk.db")


def test_create_and_get_job(ledger: Ledger) -> None:
    job_id = ledger.create_job(_spec(retries={"preemptions": 5, "failures": 1}), "jobs/demo.yaml")
    assert job_id.startswith("demo-") and len(job_id) == len("demo-") + 6
    job = ledger.get_job(job_id)
    assert (job.name, job.state, job.backend, job.spec_path) == (
        "demo",
        JobState.QUEUED,
        "local",
        "jobs/demo.yaml",
    )
    assert (job.preemption_budget, job.failure_budget, job.preemptions_used, job.failures_used) == (
        5,
        1,
        0,
        0,
    )
    assert job.spec() == _spec(retries={"preemptions": 5, "failures": 1})
    assert job.result is None and job.created_at <= job.updated_at
    with pytest.raises(JobNotFound, match="nope"):
        ledger.get_job("nope")


def test_list_jobs_and_states(ledger: Ledger) -> None:
    a, b = ledger.create_job(_spec()), ledger.create_job(_spec())
    assert a != b
    ledger.set_job_state(b, JobState.RUNNING, "attempt 1 running")
    assert [j.id for j in ledger.list_jobs()] == [a, b]
    assert [j.id for j in ledger.list_jobs([JobState.RUNNING])] == [b]
    assert [j.id for j in ledger.list_jobs(["QUEUED"])] == [a]
    assert ledger.get_job(b).message == "attempt 1 running"


def test_attempts_are_numbered_per_array_index(ledger: Ledger) -> None:
    job_id = ledger.create_job(_spec(array=2))
    first = ledger.reserve_attempt(job_id)
    assert (first.number, first.array_index, first.state, first.backend_id) == (
        1,
        0,
        AttemptState.PENDING,
        None,
    )
    assert first.key == f"{job_id}-0-1"
    other = ledger.reserve_attempt(job_id, array_index=1)
    assert (other.number, other.array_index) == (1, 1)
    ledger.update_attempt(
        first.id, AttemptStatus(AttemptState.PREEMPTED, "Host EC2 terminated", exit_code=75)
    )
    second = ledger.reserve_attempt(job_id, backend="aws")
    assert (second.number, second.backend) == (2, "aws")
    assert [(a.array_index, a.number) for a in ledger.attempts(job_id)] == [(0, 1), (0, 2), (1, 1)]
    with pytest.raises(LedgerError, match=r"array indexes 0\.\.1"):
        ledger.reserve_attempt(job_id, array_index=2)


def test_reserve_refuses_a_second_open_attempt(ledger: Ledger) -> None:
    job_id = ledger.create_job(_spec())
    attempt = ledger.reserve_attempt(job_id)
    with pytest.raises(AttemptStillOpen, match="still has attempt 1"):
        ledger.reserve_attempt(job_id)
    ledger.record_submitted(attempt.id, "local-abc")
    ledger.update_attempt(attempt.id, AttemptStatus(AttemptState.RUNNING, started_at=100.0))
    with pytest.raises(AttemptStillOpen):
        ledger.reserve_attempt(job_id)
    ledger.update_attempt(attempt.id, AttemptStatus(AttemptState.UNKNOWN, "poll failed"))
    with pytest.raises(AttemptStillOpen):
        ledger.reserve_attempt(job_id)
    ledger.update_attempt(
        attempt.id, AttemptStatus(AttemptState.FAILED, "exit 1", exit_code=1, ended_at=200.0)
    )
    assert ledger.reserve_attempt(job_id).number == 2


def test_the_database_itself_refuses_two_open_attempts(ledger: Ledger) -> None:
    job_id = ledger.create_job(_spec())
    ledger.reserve_attempt(job_id)
    with sqlite3.connect(ledger.path) as db, pytest.raises(sqlite3.IntegrityError):
        db.execute(
            "INSERT INTO attempts (job_id, number, array_index, backend, state, reserved_at)"
            " VALUES (?, 2, 0, 'local', 'RUNNING', 0)",
            (job_id,),
        )


def test_a_closed_ledger_raises_ledger_errors(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.db")
    led.close()
    with pytest.raises(LedgerError):
        led.list_jobs()
    with pytest.raises(LedgerError):
        led.create_job(_spec())


def test_reserve_refuses_a_finished_job(ledger: Ledger) -> None:
    job_id = ledger.create_job(_spec())
    ledger.set_job_state(job_id, JobState.CANCELLED, "by user")
    with pytest.raises(LedgerError, match="CANCELLED"):
        ledger.reserve_attempt(job_id)


def test_record_submitted_and_update(ledger: Ledger) -> None:
    job_id = ledger.create_job(_spec())
    attempt = ledger.reserve_attempt(job_id)
    submitted = ledger.record_submitted(attempt.id, "batch-123")
    assert submitted.backend_id == "batch-123" and submitted.submitted_at is not None
    assert ledger.record_submitted(attempt.id, "batch-123").submitted_at == submitted.submitted_at
    with pytest.raises(LedgerError, match="already submitted"):
        ledger.record_submitted(attempt.id, "batch-999")
    ledger.update_attempt(attempt.id, AttemptStatus(AttemptState.RUNNING, started_at=10.0))
    done = ledger.update_attempt(attempt.id, AttemptStatus(AttemptState.SUCCEEDED, "done", exit_code=0))
    assert (done.state, done.exit_code, done.started_at, done.reason) == (
        AttemptState.SUCCEEDED,
        0,
        10.0,
        "done",
    )
    assert done.ended_at is not None and not done.is_open
    # A terminal attempt never changes again.
    again = ledger.update_attempt(attempt.id, AttemptStatus(AttemptState.FAILED, "late poll", exit_code=1))
    assert again == done == ledger.get_attempt(attempt.id)


def test_open_attempts(ledger: Ledger) -> None:
    a, b = ledger.create_job(_spec()), ledger.create_job(_spec())
    first, second = ledger.reserve_attempt(a), ledger.reserve_attempt(b)
    assert [x.id for x in ledger.open_attempts()] == [first.id, second.id]
    ledger.update_attempt(first.id, AttemptStatus(AttemptState.CANCELLED))
    assert [x.id for x in ledger.open_attempts()] == [second.id]


def test_budgets_are_charged_when_an_attempt_ends_and_result(ledger: Ledger) -> None:
    job_id = ledger.create_job(_spec(retries={"preemptions": 2, "failures": 1}))
    for state in (AttemptState.PREEMPTED, AttemptState.FAILED, AttemptState.HALTED, AttemptState.CANCELLED):
        attempt = ledger.reserve_attempt(job_id)
        ledger.update_attempt(attempt.id, AttemptStatus(state))
        ledger.update_attempt(attempt.id, AttemptStatus(AttemptState.FAILED))  # ended: never charged twice
    job = ledger.get_job(job_id)
    assert (job.preemptions_used, job.failures_used, job.preemptions_left, job.failures_left) == (1, 1, 1, 0)
    assert ledger.set_result(job_id, {"test_accuracy": 0.91, "epochs": 2}).result == {
        "test_accuracy": 0.91,
        "epochs": 2,
    }
    with pytest.raises(JobNotFound):
        ledger.set_result("missing", {})


def test_secret_env_values_are_not_stored(ledger: Ledger) -> None:
    env = {
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-value",
        "HF_TOKEN": "hf_tok_value",
        "DB_password": "pw-value",
        "GOOGLE_APPLICATION_CREDENTIALS_JSON": "cred-value",
        "API_KEY": "key-value",
        "OMP_NUM_THREADS": "2",
    }
    job_id = ledger.create_job(_spec(env=env))
    stored = json.loads(ledger.get_job(job_id).spec_json)["env"]
    assert stored == {k: ("2" if k == "OMP_NUM_THREADS" else "***") for k in env}
    raw = ledger.path.read_bytes() + (
        Path(f"{ledger.path}-wal").read_bytes() if Path(f"{ledger.path}-wal").exists() else b""
    )
    for secret in ("s3cr3t-value", "hf_tok_value", "pw-value", "cred-value", "key-value"):
        assert secret.encode() not in raw


def test_ledger_is_usable_from_two_connections(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.db") as one, Ledger(tmp_path / "l.db") as two:
        job_id = one.create_job(_spec())
        two.reserve_attempt(job_id)
        with pytest.raises(AttemptStillOpen):
            one.reserve_attempt(job_id)


# ---------------------------------------------------------------------------- processes


def _race(path: str, job_ids: list[str], barrier: Any, results: Any) -> None:
    """Reserve every job's attempt, racing the other processes; report the ones won."""
    won = []
    with Ledger(path) as led:
        barrier.wait()
        for job_id in job_ids:
            with contextlib.suppress(AttemptStillOpen):
                won.append(led.reserve_attempt(job_id).job_id)
    results.put(won)


def test_concurrent_reservers_never_both_get_an_attempt(tmp_path: Path) -> None:
    path = str(tmp_path / "race.db")
    with Ledger(path) as led:
        job_ids = [led.create_job(_spec()) for _ in range(40)]
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(path, job_ids, barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    won = [job for _ in procs for job in results.get(timeout=60)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(won) == sorted(job_ids)  # every job reserved exactly once across processes
    with Ledger(path) as led:
        assert all(len(led.attempts(j)) == 1 for j in job_ids)


_CHURN = """
import sys, time
from runner.ledger import AttemptStillOpen, Ledger
from runner.spec import spec_from_dict
from runner.states import AttemptState, AttemptStatus
spec = spec_from_dict({"name": "churn", "image": "img", "array": 2})
with Ledger(sys.argv[1]) as led:
    print("ready", flush=True)
    while True:
        job = led.create_job(spec)
        for index in (0, 1):
            for _ in range(3):
                a = led.reserve_attempt(job, index)
                led.record_submitted(a.id, f"b-{a.id}")
                led.update_attempt(a.id, AttemptStatus(AttemptState.RUNNING, started_at=time.time()))
                led.update_attempt(a.id, AttemptStatus(AttemptState.PREEMPTED, "notice", exit_code=75))
            led.reserve_attempt(job, index)
"""


def _check_consistent(path: Path, charges_match: bool = True) -> None:
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    assert (
        db.execute(
            "SELECT job_id, array_index FROM attempts WHERE state IN ('PENDING', 'RUNNING', 'UNKNOWN')"
            " GROUP BY job_id, array_index HAVING COUNT(*) > 1"
        ).fetchall()
        == []
    )
    gaps = db.execute(
        "SELECT job_id, array_index FROM attempts GROUP BY job_id, array_index HAVING MAX(number) != COUNT(*)"
    ).fetchall()
    assert gaps == []
    # A PREEMPTED update charges the budget in the same transaction: a kill never parts the two.
    for job_id, used in (
        db.execute("SELECT id, preemptions_used FROM jobs").fetchall() if charges_match else []
    ):
        preempted = db.execute(
            "SELECT COUNT(*) FROM attempts WHERE job_id = ? AND state = 'PREEMPTED'", (job_id,)
        ).fetchone()[0]
        assert preempted == used
    db.close()


@pytest.mark.parametrize("delay", [0.1, 0.3, 0.6, 1.0, 1.5])
def test_a_process_killed_mid_write_leaves_the_ledger_consistent(tmp_path: Path, delay: float) -> None:
    path = tmp_path / "crash.db"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", _CHURN, str(path)], stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    _check_consistent(path)
    with Ledger(path) as led:  # a restarted watcher carries on
        assert led.list_jobs(), "the churn process wrote nothing before it was killed"
        for attempt in led.open_attempts():
            with pytest.raises(AttemptStillOpen):
                led.reserve_attempt(attempt.job_id, attempt.array_index)
            led.update_attempt(attempt.id, AttemptStatus(AttemptState.PREEMPTED, "watcher restarted"))
            assert led.reserve_attempt(attempt.job_id, attempt.array_index).number == attempt.number + 1
    _check_consistent(path, charges_match=False)


def _open_at(path: str, start: float) -> None:
    while time.time() < start:
        pass
    try:
        with Ledger(path):
            pass
    except LedgerError as exc:
        print(exc, flush=True)
        os._exit(1)


def test_processes_opening_a_new_ledger_at_once_all_open_it(tmp_path: Path) -> None:
    """The first open switches the file to WAL; others opening then got "database is locked" at once
    (two `runner submit` in one new home): now they wait it out."""
    ctx = multiprocessing.get_context("fork")
    failed = 0
    for trial in range(12):
        path, start = str(tmp_path / f"ledger{trial}.db"), time.time() + 0.15
        procs = [ctx.Process(target=_open_at, args=(path, start)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        failed += sum(p.exitcode != 0 for p in procs)
    assert failed == 0
