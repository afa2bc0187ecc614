"""Trials of "each attempt runs at most once": watchers killed mid-submit, and two watchers racing.

A trial is one job on one backend, its watchers real ``runner watch`` processes whose SDK talks
to the service through a :class:`tests.faults.proxy.FaultProxy` that holds every submit request
for ``hold`` seconds (the container create on the local engine, SubmitJob on AWS Batch, the job
create on GCP Batch, the task add on Azure Batch):

- :func:`kill_trial`: watcher A starts the job's first attempt and is SIGKILLed at a random time
  in a window that spans the whole submit (from the attempt's reservation to a little after the
  id is recorded: before the submit mark, with the request not yet sent, held in flight, answered
  but not recorded, after the record); then watcher B (``runner watch JOB``) takes over and must
  run the job to the end with one submission.
- :func:`race_trial`: two watchers start on the same job at once, with a lease shorter than the
  submit (the lease lapses mid-submit and the other watcher takes the job over).

Afterwards :func:`check` counts, on the service itself (never through the proxy), the jobs,
tasks or containers created for every attempt key: exactly one each, and every job SUCCEEDED
with one attempt. The trials of one backend share a ledger and run a few at a time.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runner.ledger import DEAD_SUBMIT_GRACE_ENV, Ledger
from runner.states import JobState
from tests.backends.clouds import TINY, Cloud
from tests.e2e.conftest import ROOT

#: Seconds the proxy holds each submit request (a slow service, or a request in flight).
KILL_HOLD = float(os.environ.get("RUNNER_RACE_HOLD", "1.0"))
#: The submit grace after a dead watcher, shortened for the trials (runner.ledger.DEAD_SUBMIT_GRACE is 10 s);
#: it must outlast the hold plus the time from the mark to the request.
#: ``RUNNER_RACE_GRACE=0`` shows what the grace prevents: AWS Batch (no name check) then gets duplicates.
KILL_GRACE = float(os.environ.get("RUNNER_RACE_GRACE", "3.0"))
#: Racing watchers: a lease shorter than the held submit, so it lapses mid-submit.
RACE_HOLD, RACE_TTL, RACE_INTERVAL = 2.5, 2.0, 0.5
#: Seconds the watcher that takes over may take to run the tiny job to its end.
B_TIMEOUT = 60.0


@dataclass
class Trial:
    """What happened in one trial (for the report and the checks)."""

    kind: str
    job_id: str
    key: str = ""
    offset: float | None = None     # kill: seconds after the attempt was reserved
    phase: str = ""                 # kill: where in the submit the kill landed
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)


@dataclass
class Timeline:
    """One uninterrupted submit, timed: reserved -> marked -> request held -> recorded (seconds)."""

    marked: float
    recorded: float

    @property
    def window(self) -> float:
        """The span kills are drawn from: the whole submit and a little after the record."""
        return self.recorded + 0.3


def cli(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = open(log, "ab")  # noqa: SIM115 - the child keeps it; closed by the OS at exit
    return subprocess.Popen([sys.executable, "-m", "runner.cli", *args], stdout=handle, stderr=subprocess.STDOUT,
                            env=env, cwd=ROOT, start_new_session=True)


def new_job(cloud: Cloud, home: Path, endpoint: str, name: str) -> str:
    """Record a job (what `runner submit` does before its watcher starts)."""
    from runner import service

    spec = home / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(cloud.spec(name, TINY, endpoint=endpoint)))
    with Ledger(home / "ledger.db") as ledger:
        job_id, _ = service.submit(ledger, spec)
    return job_id


def _attempt_row(ledger: Ledger, job_id: str) -> Any:
    rows = ledger.attempts(job_id)
    return rows[0] if rows else None


def wait_for(predicate: Any, timeout: float, every: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return None


def calibrate(cloud: Cloud, home: Path, endpoint: str, env: dict[str, str]) -> Timeline:
    """Run one submit undisturbed and time it; the job must run to the end with one submission."""
    job_id = new_job(cloud, home, endpoint, "calibrate")
    proc = cli(["watch", job_id, "--interval", "0.5"], env, home / f"{job_id}.log")
    try:
        with Ledger(home / "ledger.db") as ledger:
            assert wait_for(lambda: _attempt_row(ledger, job_id), 60), "no attempt reserved"
            reserved = time.monotonic()
            marked = wait_for(lambda: (a := _attempt_row(ledger, job_id)) and a.submitting_by and time.monotonic(), 30)
            recorded = wait_for(lambda: (a := _attempt_row(ledger, job_id)) and a.backend_id and time.monotonic(), 60)
        assert marked and recorded, (home / f"{job_id}.log").read_text()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return Timeline(marked - reserved, recorded - reserved)


def kill_trial(cloud: Cloud, home: Path, endpoint: str, env: dict[str, str], timeline: Timeline, seed: int,
               index: int) -> Trial:
    """Kill watcher A at a random time in its submit; watcher B must finish the job."""
    rng = random.Random(seed * 1000 + index)
    job_id = new_job(cloud, home, endpoint, f"kill{index}")
    trial = Trial("kill", job_id)
    started = time.monotonic()
    log = home / f"{job_id}.log"
    a = cli(["watch", job_id, "--interval", "0.5"], env, log)
    try:
        with Ledger(home / "ledger.db") as ledger:
            row = wait_for(lambda: _attempt_row(ledger, job_id), 60)
            assert row is not None, log.read_text()
            reserved = time.monotonic()
            trial.key = row.key
            trial.offset = rng.uniform(0.0, timeline.window)
            time.sleep(max(0.0, reserved + trial.offset - time.monotonic()))
            a.send_signal(signal.SIGKILL)
            killed_at = time.time()
            a.wait(timeout=30)
            row = _attempt_row(ledger, job_id)
        trial.phase = phase(row, killed_at, timeline)
        b = cli(["watch", job_id, "--interval", "0.3"], env, log)
        try:
            b.wait(timeout=B_TIMEOUT)
        except subprocess.TimeoutExpired:  # the job did not end: check() reports it
            trial.outputs.append(f"watcher B did not end the job within {B_TIMEOUT:g} s")
        finally:
            if b.poll() is None:
                b.kill()
    finally:
        if a.poll() is None:
            a.kill()
    trial.seconds = time.monotonic() - started
    trial.outputs.append(log.read_text(errors="replace"))
    return trial


def phase(row: Any, killed_at: float, timeline: Timeline) -> str:
    """Where the kill landed, read from the ledger at the kill (the request's own times are approximate)."""
    if row.backend_id is not None:
        return "after the id was recorded"
    if row.submitting_by is None:
        return "reserved, before the submit mark"
    since = killed_at - (row.submitting_at or killed_at)
    if since < KILL_HOLD:
        return "submit sent or in flight (held)"
    return "answered or timing out, id not recorded"


def race_trial(cloud: Cloud, home: Path, endpoint: str, env: dict[str, str], index: int) -> Trial:
    """Two watchers on one job at once, the lease lapsing mid-submit."""
    job_id = new_job(cloud, home, endpoint, f"race{index}")
    trial = Trial("race", job_id)
    started = time.monotonic()
    args = ["watch", job_id, "--interval", str(RACE_INTERVAL), "--lease-ttl", str(RACE_TTL)]
    procs = [cli(args, env, home / f"{job_id}.{n}.log") for n in range(2)]
    try:
        for proc in procs:
            proc.wait(timeout=B_TIMEOUT)
    except subprocess.TimeoutExpired:
        trial.outputs.append(f"the watchers did not end the job within {B_TIMEOUT:g} s")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    with Ledger(home / "ledger.db") as ledger:
        row = _attempt_row(ledger, job_id)
    trial.key = row.key if row is not None else ""
    trial.seconds = time.monotonic() - started
    trial.outputs += [(home / f"{job_id}.{n}.log").read_text(errors="replace") for n in range(2)]
    return trial


def run_trials(fn: Any, count: int, workers: int) -> list[Trial]:
    """Run ``fn(index)`` for each trial, ``workers`` at a time."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, range(count)))


def check(cloud: Cloud, home: Path, trials: list[Trial]) -> dict[str, Any]:
    """Every job SUCCEEDED with one attempt, and one submission per attempt key on the service."""
    problems: list[str] = []
    counts: Counter[int] = Counter()
    with Ledger(home / "ledger.db") as ledger:
        for trial in trials:
            job = ledger.get_job(trial.job_id)
            attempts = ledger.attempts(trial.job_id)
            made = {a.key: cloud.count(a.key) for a in attempts}
            counts.update(made.values())
            if job.state != JobState.SUCCEEDED or len(attempts) != 1 or set(made.values()) != {1}:
                problems.append(f"{trial.kind} {trial.job_id} ({trial.phase or 'race'}, offset {trial.offset}): "
                                f"job {job.state.value}, attempts {[(a.number, a.state.value) for a in attempts]}, "
                                f"submissions per key {made}\n" + "\n".join(o[-3000:] for o in trial.outputs))
    return {"problems": problems, "submissions": dict(counts),
            "duplicates": sum(n - 1 for n, times in counts.items() for _ in range(times) if n > 1),
            "phases": dict(Counter(t.phase for t in trials if t.kind == "kill")),
            "seconds": [round(t.seconds, 1) for t in trials]}


def kill_env(cloud: Cloud, home: Path, endpoint: str) -> dict[str, str]:
    return cloud.env(home, endpoint, **{DEAD_SUBMIT_GRACE_ENV: str(KILL_GRACE)})


