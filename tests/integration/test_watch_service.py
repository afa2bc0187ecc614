"""`runner watch` as a service on the real engine: two watchers on one ledger, takeover, --once.

Jobs run on the local backend as short containers of the CIFAR image (`python -c`: attempt 1
fails after a few seconds, attempt 2 sleeps and succeeds), so every job needs a watcher to act
twice: record the failure and resubmit, then record the success and end the job.

Measured takeover times are printed (`pytest -s`): a watcher SIGKILLed on this machine is
replaced at the other's next pass (its process is gone, so its leases are broken at once); one
in another PID namespace (a container) is replaced when its lease expires, within
``lease_ttl + interval``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.ledger import Ledger
from runner.spec import spec_from_dict
from tests.integration.conftest import CIFAR_IMAGE, _unavailable, remove_labelled

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
CONTROL_IMAGE = "localhost/runner-control:latest"
INTERVAL = 0.5
TTL = 4.0
EVENT = re.compile(r"(first attempt: starting attempt \d+|starting attempt \d+|attempt \d+ (failed|succeeded)"
                   r"|job \w+: .*)")


def script(fail_for: float, run_for: float) -> str:
    return ("import os, sys, time; a = int(os.environ['RUNNER_ATTEMPT']); "
            f"time.sleep({fail_for} if a == 1 else {run_for}); sys.exit(1 if a == 1 else 0)")


def make_jobs(home: Path, n: int, fail_for: float = 2.0, run_for: float = 10.0) -> list[str]:
    spec = spec_from_dict({"name": "svc", "image": CIFAR_IMAGE, "command": ["python", "-c", script(fail_for, run_for)],
                           "resources": {"cpus": 0.25, "memory": "256Mi"},
                           "retries": {"preemptions": 0, "failures": 1}})
    with Ledger(home / "ledger.db") as ledger:
        return [ledger.create_job(spec) for _ in range(n)]


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    return {**env, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}


class WatchProcess:
    """A `runner watch` service started as a user would, its output in a file."""

    def __init__(self, home: Path, name: str, *args: str) -> None:
        self.log = home / f"{name}.log"
        self.status = home / f"{name}.json"
        with open(self.log, "w") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runner.cli", "watch", "--interval", str(INTERVAL), "--lease-ttl", str(TTL),
                 "--status-file", str(self.status), *args],
                env=env_for(home), cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)

    @property
    def output(self) -> str:
        return self.log.read_text()

    def health(self) -> dict[str, Any]:
        return json.loads(self.status.read_text())

    def wait_ready(self, timeout: float = 60) -> str:
        wait_until(lambda: self.status.exists() or self.proc.poll() is not None, timeout, "a first pass")
        assert self.proc.poll() is None, self.output
        return str(self.health()["owner"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def snapshot(home: Path, jobs: list[str]) -> dict[str, Any]:
    with Ledger(home / "ledger.db") as ledger:
        return {"jobs": {j: ledger.get_job(j) for j in jobs}, "attempts": {j: ledger.attempts(j) for j in jobs},
                "leases": {lease.job_id: lease for lease in ledger.leases()}}


def events(text: str, job_id: str) -> list[str]:
    found = []
    for line in text.splitlines():
        if f" {job_id}: " in line:
            match = EVENT.search(line.split(f" {job_id}: ", 1)[1])
            if match:
                found.append(match.group(0))
    return found


@pytest.fixture
def home(tmp_path: Path, docker_client: Any) -> Iterator[Path]:
    yield tmp_path
    with Ledger(tmp_path / "ledger.db") as ledger:
        ids = [job.id for job in ledger.list_jobs()]
    for job_id in ids:
        remove_labelled(docker_client, {"spot-runner.job": job_id})


def test_two_watchers_each_job_acted_on_by_one_and_takeover(home: Path) -> None:
    a = WatchProcess(home, "a", "--health-port", "0")
    b = WatchProcess(home, "b")
    try:
        owners = {a.wait_ready(): a, b.wait_ready(): b}
        jobs = make_jobs(home, 4)  # after both are running: they race for every job

        def all_on_attempt_2() -> bool:
            s = snapshot(home, jobs)
            return all(len(s["attempts"][j]) == 2 and s["attempts"][j][1].state.value == "RUNNING" for j in jobs)

        wait_until(all_on_attempt_2, 120, "every job's second attempt to run")
        state = snapshot(home, jobs)
        holder = {j: state["leases"][j].owner for j in jobs}
        assert set(holder.values()) <= set(owners)
        for job_id in jobs:  # each job's actions appear in its lease holder's output, and only there
            mine, other = owners[holder[job_id]], (b if owners[holder[job_id]] is a else a)
            assert events(mine.output, job_id) == [
                "first attempt: starting attempt 1", "attempt 1 failed", "starting attempt 2"], mine.output
            assert events(other.output, job_id) == [], other.output
        counts = {o: list(holder.values()).count(o) for o in owners}
        print(f"\nleases after the race: {counts}")

        victim_owner = max(counts, key=lambda o: counts[o])
        victim = owners[victim_owner]
        survivor_owner = next(o for o in owners if o != victim_owner)
        survivor = owners[survivor_owner]
        t0 = time.monotonic()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        wait_until(lambda: all(lease.owner == survivor_owner for lease in snapshot(home, jobs)["leases"].values()),
                   TTL + 10, "the survivor to take every lease")
        takeover = time.monotonic() - t0
        print(f"takeover after SIGKILL on the same machine: {takeover:.2f}s (interval {INTERVAL}s)")
        assert takeover < INTERVAL + 3.0  # the next pass, not the lease time: the dead pid is seen

        wait_until(lambda: all(j.state.value == "SUCCEEDED" for j in snapshot(home, jobs)["jobs"].values()),
                   120, "every job to succeed")
        final = snapshot(home, jobs)
        for job_id in jobs:
            attempts = final["attempts"][job_id]
            assert [(x.number, x.state.value, x.exit_code) for x in attempts] == [(1, "FAILED", 1),
                                                                                  (2, "SUCCEEDED", 0)]
            assert len({x.backend_id for x in attempts}) == 2
            done = "job succeeded: all attempts done"
            if holder[job_id] == victim_owner:
                assert done in events(survivor.output, job_id) and done not in events(victim.output, job_id)
        assert final["leases"] == {}  # ended jobs are released

        if survivor is a:  # the health endpoint of the one with a port
            url = re.search(r"health (http://127\.0\.0\.1:\d+/healthz)", a.output)
            assert url, a.output
            with urllib.request.urlopen(url.group(1), timeout=5) as resp:
                body = json.loads(resp.read())
            assert resp.status == 200 and body["ok"] and body["owner"] == survivor_owner
        health = survivor.health()
        assert health["ok"] and health["owner"] == survivor_owner and health["ticks"] > 5
        survivor.proc.send_signal(signal.SIGTERM)
        assert survivor.proc.wait(timeout=15) == 0, survivor.output
        assert "stopped; its leases are released" in survivor.output
        assert survivor.health()["ok"] is False and survivor.health()["stopped"] is True
    finally:
        a.stop()
        b.stop()


def test_container_watcher_killed_lease_expires_then_host_watcher_takes_over(home: Path, docker_client: Any) -> None:
    import docker

    try:
        docker_client.images.get(CONTROL_IMAGE)
    except docker.errors.ImageNotFound:
        _unavailable(f"{CONTROL_IMAGE} is missing: build it with scripts/build-images.sh control")
    # The watcher in the control image, this checkout's code mounted over the installed one; the
    # data folder at the same path on both sides (task containers are the engine's siblings).
    container = docker_client.containers.run(
        CONTROL_IMAGE, ["watch", "--interval", str(INTERVAL), "--lease-ttl", str(TTL)], detach=True,
        environment={"RUNNER_HOME": str(home), "PYTHONPATH": "/src"},
        volumes={str(ROOT): {"bind": "/src", "mode": "ro"}, str(home): {"bind": str(home), "mode": "rw"},
                 "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
        labels={"spot-runner.test": "watch-service"})
    host = None
    try:
        jobs = make_jobs(home, 2, fail_for=1.0, run_for=12.0)

        def second_attempts_run() -> bool:
            s = snapshot(home, jobs)
            return all(len(s["attempts"][j]) == 2 and s["attempts"][j][1].state.value == "RUNNING" for j in jobs)

        wait_until(second_attempts_run, 120, "the container watcher to run every second attempt")
        in_container = {lease.owner for lease in snapshot(home, jobs)["leases"].values()}
        assert len(in_container) == 1 and next(iter(in_container)).startswith(container.id[:12])
        host = WatchProcess(home, "host")
        host.wait_ready()
        time.sleep(2 * INTERVAL)
        assert all(lease.owner in in_container for lease in snapshot(home, jobs)["leases"].values())
        assert "watched by another watcher" in host.output
        once = subprocess.run([sys.executable, "-m", "runner.cli", "watch", "--once"], env=env_for(home), cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert once.returncode == 0 and "watched by another watcher" in once.stdout, once.stdout + once.stderr

        t0 = time.monotonic()
        container.kill()
        wait_until(lambda: all(lease.owner not in in_container for lease in snapshot(home, jobs)["leases"].values()),
                   TTL + 10, "the host watcher to take over")
        takeover = time.monotonic() - t0
        print(f"\ntakeover after killing the watcher container: {takeover:.2f}s (lease {TTL}s, interval {INTERVAL}s)")
        assert TTL - 1.0 <= takeover <= TTL + INTERVAL + 3.0
        wait_until(lambda: all(j.state.value == "SUCCEEDED" for j in snapshot(home, jobs)["jobs"].values()),
                   120, "both jobs to succeed under the host watcher")
        for job_id in jobs:
            assert [x.number for x in snapshot(home, jobs)["attempts"][job_id]] == [1, 2]
            assert "job succeeded: all attempts done" in events(host.output, job_id)
        logs = container.logs().decode()
        assert all("job succeeded" not in line for line in logs.splitlines()), logs
    finally:
        if host is not None:
            host.stop()
        container.remove(force=True)


def test_once_does_what_one_pass_of_the_service_does(home: Path) -> None:
    once_job, service_job = make_jobs(home, 2, fail_for=1.0, run_for=1.0)
    lines: list[str] = []
    backend_id = None
    for _ in range(30):
        proc = subprocess.run([sys.executable, "-m", "runner.cli", "watch", once_job, "--once"], env=env_for(home),
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines.extend(proc.stdout.splitlines())
        state = snapshot(home, [once_job])
        assert state["leases"] == {}  # --once releases what it took
        if state["jobs"][once_job].state.is_terminal():
            break
        backend_id = state["attempts"][once_job][-1].backend_id
        assert backend_id  # each pass leaves its attempt submitted
        time.sleep(1.5)  # cron's interval, shortened
    else:
        pytest.fail("--once passes did not finish the job")
    service = WatchProcess(home, "svc", service_job)  # with a job id: exits when the job ends
    assert service.proc.wait(timeout=120) == 0, service.output
    got, want = snapshot(home, [once_job]), snapshot(home, [service_job])
    assert ([(x.number, x.state, x.exit_code) for x in got["attempts"][once_job]]
            == [(x.number, x.state, x.exit_code) for x in want["attempts"][service_job]]
            == [(1, "FAILED", 1), (2, "SUCCEEDED", 0)])
    assert (got["jobs"][once_job].state, got["jobs"][once_job].message) == (
        want["jobs"][service_job].state, want["jobs"][service_job].message)
    assert events("\n".join(lines), once_job) == events(service.output, service_job) == [
        "first attempt: starting attempt 1", "attempt 1 failed", "starting attempt 2", "attempt 2 succeeded",
        "job succeeded: all attempts done"]
