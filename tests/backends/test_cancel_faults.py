"""Issue 13, "what it must show" 2: a cancel while the backend fails leaves nothing running, on each backend.

A job runs a task that sleeps (a container on the local engine for every backend: moto and the
stand-ins run theirs there too). Its stop requests go through a :class:`FaultProxy`:

1. every stop request fails (503 or a reset) while ``runner cancel JOB --wait 0`` makes its
   three stop calls: it exits non-zero, the job stays CANCELLING and the task still runs;
2. the backend answers again: a watcher (``runner watch JOB``) or ``runner cancel JOB`` again
   finishes it: CANCELLED, and neither the service nor the engine has anything left running.

Then the same with ``runner cancel JOB`` (its default wait) when exactly the first three stop
calls fail: the one command ends with CANCELLED and exit 0.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.ledger import Ledger
from runner.states import AttemptState, JobState
from tests.backends.clouds import SLEEPER, Cloud, engine_running, settle
from tests.e2e.conftest import ROOT
from tests.faults.proxy import FaultProxy

pytestmark = [pytest.mark.docker]

STOP_CALLS = 3  # runner.service.STOP_TRIES: what one `runner cancel` tries before it says CANCELLING


class StopFaults:
    """A fault_match that fails stop requests while ``on``, or only the first ``first`` of them."""

    def __init__(self, cloud: Cloud, first: int | None = None) -> None:
        self.cloud, self.first, self.on = cloud, first, True
        self.seen: list[bool] = []  # each stop request: failed or not

    def __call__(self, method: str, path: str) -> bool:
        if not self.cloud.stop_match(method, path):
            return False
        fail = self.on and (self.first is None or len(self.seen) < self.first)
        self.seen.append(fail)
        return fail


def run(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout, check=False)


def start_running_job(cloud: Cloud, home: Path, endpoint: str, name: str) -> tuple[str, str]:
    """`runner submit` a sleeping task, wait until it runs, stop the foreground watcher (SIGTERM)."""
    spec = home / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(cloud.spec(name, SLEEPER, endpoint=endpoint)))
    proc = subprocess.Popen([sys.executable, "-m", "runner.cli", "submit", str(spec), "--interval", "0.5"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=cloud.env(home, endpoint), cwd=ROOT)
    deadline = time.monotonic() + 120
    try:
        with Ledger(home / "ledger.db") as ledger:
            while True:
                assert proc.poll() is None, proc.communicate()[0]
                jobs = ledger.list_jobs()
                attempts = ledger.attempts(jobs[0].id) if jobs else []
                if attempts and attempts[0].state == AttemptState.RUNNING:
                    break
                assert time.monotonic() < deadline, f"never RUNNING: {attempts}"
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)  # the watcher stops; the job goes on
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return jobs[0].id, attempts[0].key


def assert_cancelled(cloud: Cloud, home: Path, job_id: str, key: str, docker_client: Any) -> None:
    with Ledger(home / "ledger.db") as ledger:
        job, attempts = ledger.get_job(job_id), ledger.attempts(job_id)
    assert job.state == JobState.CANCELLED, job
    assert [a.state for a in attempts] == [AttemptState.CANCELLED], attempts
    assert settle(cloud, [key], timeout=30) == [], "the service still runs it"
    assert engine_running(docker_client, [job_id]) == [], "a container still runs"


@pytest.mark.parametrize("name,finisher", [("local", "watch"), ("aws", "cancel"), ("gcp", "watch"),
                                           ("azure", "cancel")])
def test_cancel_while_the_backend_fails_then_a_watcher_or_a_second_cancel_finishes_it(
        clouds: Any, docker_client: Any, name: str, finisher: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    cloud: Cloud = clouds[name]
    faults = StopFaults(cloud)
    with FaultProxy(cloud.upstream, seed=3, rate=1.0, faults=("503", "reset"), max_in_row=10_000,
                    fault_match=faults) as proxy:
        env = cloud.env(tmp_path, proxy.url)
        job_id, key = start_running_job(cloud, tmp_path, proxy.url, f"cancel-{name}")
        started = time.monotonic()
        first = run(["cancel", job_id, "--wait", "0"], env)
        first_s = time.monotonic() - started
        assert first.returncode != 0, first.stdout + first.stderr
        assert "CANCELLING" in first.stdout + first.stderr and "Traceback" not in first.stderr
        with Ledger(tmp_path / "ledger.db") as ledger:
            assert ledger.get_job(job_id).state == JobState.CANCELLING
            assert [a.state for a in ledger.attempts(job_id)] == [AttemptState.RUNNING]
        assert cloud.running([key]) and engine_running(docker_client, [job_id]), "no stop got through: it runs"
        failed_stops = len(faults.seen)
        assert failed_stops >= STOP_CALLS and all(faults.seen), faults.seen

        faults.on = False  # the backend answers again
        second = run(["watch", job_id, "--interval", "0.5"] if finisher == "watch" else ["cancel", job_id], env)
        assert second.returncode == 0, second.stdout + second.stderr
        if finisher == "cancel":
            assert f"cancelled {job_id}" in second.stdout, second.stdout
    assert_cancelled(cloud, tmp_path, job_id, key, docker_client)
    with capsys.disabled():
        print(f"\n[{name}] runner cancel --wait 0 with every stop failing: exit {first.returncode} in "
              f"{first_s:.1f} s, {failed_stops} stop requests failed ({proxy.summary()}); "
              f"then `runner {finisher}`: CANCELLED, nothing running")


@pytest.mark.parametrize("name", ["local", "aws", "gcp", "azure"])
def test_one_cancel_outlasts_three_failed_stop_calls(clouds: Any, docker_client: Any, name: str,
                                                      tmp_path: Path) -> None:
    cloud: Cloud = clouds[name]
    faults = StopFaults(cloud, first=STOP_CALLS * cloud.requests_per_call)  # each SDK call retries a 503 itself
    with FaultProxy(cloud.upstream, seed=4, rate=1.0, faults=("503",), max_in_row=10_000,
                    fault_match=faults) as proxy:
        env = cloud.env(tmp_path, proxy.url)
        job_id, key = start_running_job(cloud, tmp_path, proxy.url, f"cancel3-{name}")
        done = run(["cancel", job_id], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is CANCELLING" in done.stdout and f"cancelled {job_id}" in done.stdout, done.stdout
    assert faults.seen[:STOP_CALLS * cloud.requests_per_call] == [True] * (STOP_CALLS * cloud.requests_per_call)
    assert faults.seen[-1] is False, faults.seen  # the fourth call got through
    assert sum(proxy.injected.values()) == STOP_CALLS * cloud.requests_per_call
    assert_cancelled(cloud, tmp_path, job_id, key, docker_client)
