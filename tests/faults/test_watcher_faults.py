"""Fault case: ``runner watch`` SIGKILLed at random points while a local job runs.

A watcher is started on a job, killed after a random 0.3-2.5 s (while it starts, polls, classifies
a preemption, reserves or submits an attempt), and started again, until enough kills were made
and the job ended under a watcher left alone. The job has simulated preemptions (both kinds), so
kills also land between an attempt's end and its successor's submission. A loss is any of:
the job not SUCCEEDED; an array index whose attempt numbers have a gap; an attempt with no
container or two; a container the ledger does not know; two containers of the job running at
once (sampled every 0.2 s by a thread). Registered in benchmarks/faults.py as ``watcher-kills``.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ROOT, runner_env, smoke_spec
from tests.integration.conftest import docker_client  # noqa: F401 - shared fixture

LABEL_JOB = "spot-runner.job"
SAMPLE_EVERY = 0.2


class _Sampler(threading.Thread):
    """Record every moment two containers of one job ran at once."""

    def __init__(self, client: Any) -> None:
        super().__init__(daemon=True)
        self.client, self.job_id = client, ""
        self.overlaps: list[list[str]] = []
        self.samples = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            job_id = self.job_id
            if job_id:
                try:
                    rows = self.client.api.containers(filters={"label": f"{LABEL_JOB}={job_id}"})
                except Exception:  # noqa: BLE001 - the engine busy for a moment: skip a sample
                    rows = None
                if rows is not None:
                    self.samples += 1
                    if len(rows) > 1:
                        self.overlaps.append(sorted(r["Names"][0] for r in rows))
            time.sleep(SAMPLE_EVERY)


def _new_job(home: Path, epochs: int) -> str:
    from runner.ledger import Ledger
    from runner.spec import load_spec, parse_simulate_preemption

    spec = load_spec(smoke_spec(home, epochs=epochs)).model_copy(
        update={"simulate_preemption": parse_simulate_preemption("every=4s,notice=2s,mode=mixed,count=3")})
    with Ledger(home / "ledger.db") as ledger:
        return ledger.create_job(spec)


def _losses(client: Any, home: Path, job_id: str) -> tuple[int, list[str]]:
    """Count what was lost or run twice for one finished job; say what, in short notes."""
    from runner.ledger import Ledger
    from runner.states import JobState

    with Ledger(home / "ledger.db") as ledger:
        job = ledger.get_job(job_id)
        attempts = ledger.attempts(job_id)
    notes: list[str] = []
    if job.state != JobState.SUCCEEDED:
        notes.append(f"{job_id} ended {job.state}: {job.message}")
    by_index: dict[int, list[int]] = collections.defaultdict(list)
    for a in attempts:
        by_index[a.array_index].append(a.number)
    for index, numbers in by_index.items():
        if sorted(numbers) != list(range(1, len(numbers) + 1)):
            notes.append(f"index {index}: attempt numbers {sorted(numbers)}")
    containers = client.api.containers(all=True, filters={"label": f"{LABEL_JOB}={job_id}"})
    per_attempt = collections.Counter((c["Labels"].get("spot-runner.index"), c["Labels"].get("spot-runner.attempt"))
                                      for c in containers)
    known = {(str(a.array_index), str(a.number)) for a in attempts}
    for key, count in per_attempt.items():
        if count > 1:
            notes.append(f"attempt {key} ran in {count} containers")
        if key not in known:
            notes.append(f"container for attempt {key} unknown to the ledger")
    for key in known - set(per_attempt):
        notes.append(f"attempt {key} has no container")
    return len(notes), notes


def watcher_kills(ctx: Any, kills_wanted: int | None = None) -> list[tuple[str, int, int, str]]:
    """The fault case: SIGKILL ``runner watch`` at random points; trials = kills."""
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
        client.images.get("localhost/runner-cifar:latest")
    except Exception as exc:  # noqa: BLE001 - no engine or no image: the case cannot run here
        from benchmarks.faults import CaseUnavailable

        raise CaseUnavailable(f"needs the Docker engine and localhost/runner-cifar:latest ({type(exc).__name__})") from exc
    wanted = kills_wanted or (6 if ctx.quick else 12)
    rng = ctx.rng("watcher-kills")
    home = Path(ctx.workdir) / "watcher-kills"
    home.mkdir(parents=True, exist_ok=True)
    sampler = _Sampler(client)
    sampler.start()
    kills, losses, jobs, notes = 0, 0, [], []
    try:
        while kills < wanted:
            job_id = _new_job(home, epochs=10)
            jobs.append(job_id)
            sampler.job_id = job_id
            while True:
                watcher = subprocess.Popen([sys.executable, "-m", "runner.cli", "watch", job_id, "--interval", "0.5"],
                                           env=runner_env(home), cwd=ROOT, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.PIPE, text=True)
                limit = rng.uniform(0.3, 2.5) if kills < wanted else 900
                try:
                    _, err = watcher.communicate(timeout=limit)
                except subprocess.TimeoutExpired:
                    watcher.send_signal(signal.SIGKILL)
                    watcher.communicate()
                    kills += 1
                    continue
                if watcher.returncode != 0:
                    notes.append(f"watcher exited {watcher.returncode}: {' '.join(err.split())[-200:]}")
                    losses += 1
                break  # the job ended under this watcher
            time.sleep(SAMPLE_EVERY * 2)
            lost, why = _losses(client, home, job_id)
            losses += lost
            notes += why
    finally:
        sampler.stop.set()
        sampler.join()
        for job_id in jobs:
            for c in client.containers.list(all=True, filters={"label": f"{LABEL_JOB}={job_id}"}):
                c.remove(force=True)
        client.close()
    losses += len(sampler.overlaps)
    notes += [f"ran at once: {', '.join(o)}" for o in sampler.overlaps[:3]]
    summary = f"{len(jobs)} job(s) SUCCEEDED, {sampler.samples} container samples, no overlap" if not losses \
        else "; ".join(notes)[:300]
    return [("watcher SIGKILLed at random points", kills, losses, summary)]


@pytest.mark.docker
@pytest.mark.slow
def test_watcher_killed_at_random_points(tmp_path: Path, docker_client: Any) -> None:  # noqa: F811
    from benchmarks.faults import FaultContext

    ctx = FaultContext(quick=False, seed=int(time.time()), workdir=tmp_path)
    [(case, trials, losses, notes)] = watcher_kills(ctx, kills_wanted=20)
    print(f"\n{case}: {trials} trials, {losses} losses; {notes} (seed {ctx.seed})")
    assert trials >= 20
    assert losses == 0, notes
