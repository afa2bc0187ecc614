"""Fault case: the Docker engine restarted under a running local job; the job completes.

The engine (``dockerd``, found with ``pgrep -x dockerd``) is stopped with SIGTERM while the job's
container trains (the engine stops it: SIGTERM, which the task takes as a notice, so it commits
and exits 75, or SIGKILL after the grace period), then started again with the same command line,
environment, working directory and log file, and the test waits for ``docker info``. The watcher
keeps running through the outage (polls answer UNKNOWN, which never resubmits). The engine is
restored even when the test fails. Other work on this engine loses its running containers too:
run this case rarely (it is marked ``engine_restart`` and ``slow``). Registered in
benchmarks/faults.py as ``engine-restart``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ROOT, runner_env, smoke_spec
from tests.integration.conftest import docker_client  # noqa: F401 - shared fixture

STOP_TIMEOUT = 60
START_TIMEOUT = 90


class Engine:
    """How this machine's dockerd runs, read from /proc, so it can be started again the same way."""

    def __init__(self) -> None:
        pids = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True).stdout.split()
        if len(pids) != 1:
            raise RuntimeError(f"expected one dockerd, found {len(pids)}")
        self.pid = int(pids[0])
        proc = Path(f"/proc/{self.pid}")
        self.argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        self.env = dict(line.decode().split("=", 1) for line in (proc / "environ").read_bytes().split(b"\0")
                        if b"=" in line)
        cwd = os.readlink(proc / "cwd")  # "/tmp/x (deleted)" once the folder it started in was removed
        self.cwd = cwd if os.path.isdir(cwd) else "/"
        log = os.readlink(proc / "fd" / "1")
        self.log = log if log.startswith("/") and os.path.isfile(log) else "/tmp/dockerd.log"

    def running(self) -> bool:
        return subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode == 0

    def answers(self) -> bool:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0

    def stop(self) -> float:
        """SIGTERM dockerd and wait for it to exit; return the seconds it took."""
        t0 = time.monotonic()
        os.kill(self.pid, signal.SIGTERM)
        while Path(f"/proc/{self.pid}").exists() and _state(self.pid) != "Z":
            if time.monotonic() - t0 > STOP_TIMEOUT:
                os.kill(self.pid, signal.SIGKILL)
            time.sleep(0.2)
        return time.monotonic() - t0

    def start(self) -> float:
        """Start dockerd as it was started before; wait until ``docker info`` answers."""
        t0 = time.monotonic()
        with open(self.log, "ab") as log:
            subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log,
                             stderr=log, start_new_session=True)
        while not self.answers():
            if time.monotonic() - t0 > START_TIMEOUT:
                raise RuntimeError(f"dockerd did not answer within {START_TIMEOUT}s; see {self.log}")
            time.sleep(0.5)
        self.pid = int(subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True).stdout.split()[0])
        return time.monotonic() - t0

    @contextlib.contextmanager
    def restarted(self) -> Iterator[dict[str, float]]:
        """Stop the engine, yield, and start it again, whatever happens."""
        times: dict[str, float] = {}
        try:
            times["stop_s"] = self.stop()
            yield times
        finally:
            if not self.running() or not self.answers():
                times["start_s"] = self.start()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    except (OSError, IndexError):
        return "X"


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.5)


def one_restart(home: Path) -> tuple[int, str]:
    """Run a job, restart the engine under it, let it finish; return (losses, notes)."""
    from runner.ledger import Ledger
    from runner.spec import load_spec
    from runner.states import AttemptState, JobState

    home.mkdir(parents=True, exist_ok=True)
    spec = load_spec(smoke_spec(home, epochs=10))
    with Ledger(home / "ledger.db") as ledger:
        job_id = ledger.create_job(spec)
    ck = home / "checkpoints" / job_id
    watcher = subprocess.Popen([sys.executable, "-m", "runner.cli", "watch", job_id, "--interval", "0.5"],
                               env=runner_env(home), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    engine = Engine()
    try:
        _wait(lambda: any(ck.glob("step-*/MANIFEST.json")), 300, "the first checkpoint")
        with engine.restarted() as times:
            time.sleep(1.0)  # the watcher polls the dead engine a couple of times
        try:
            _, err = watcher.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            watcher.kill()
            _, err = watcher.communicate()
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    with Ledger(home / "ledger.db") as ledger:
        job = ledger.get_job(job_id)
        attempts = ledger.attempts(job_id)
    numbers = [a.number for a in attempts]
    problems = []
    if job.state != JobState.SUCCEEDED:
        problems.append(f"job {job.state}: {job.message}; watcher: {' '.join((err or '').split())[-200:]}")
    failed = [f"{a.number}: {a.reason}" for a in attempts if a.state is AttemptState.FAILED]
    if failed:  # the outage is not the job's failure: it must not spend the failure budget
        problems.append(f"attempts charged as failures: {'; '.join(failed)}")
    if numbers != list(range(1, len(numbers) + 1)):
        problems.append(f"attempt numbers {numbers}")
    ended = [f"{a.number}:{a.state}({a.reason})" for a in attempts if a.state is not AttemptState.SUCCEEDED]
    note = (f"engine down {times.get('stop_s', 0) + 1:.1f}s, back in {times.get('start_s', 0):.1f}s; "
            f"{len(attempts)} attempts; interrupted: {', '.join(ended) or 'none'}")
    return len(problems), "; ".join(problems) or note


def engine_restart(ctx: Any) -> list[tuple[str, int, int, str]]:
    """The fault case: trials = engine restarts, 1 (quick) or 2."""
    if os.geteuid() != 0 or subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode != 0:
        from benchmarks.faults import CaseUnavailable

        raise CaseUnavailable("needs root and a dockerd process on this machine")
    trials = 1 if ctx.quick else 2
    losses, notes = 0, []
    for trial in range(trials):
        lost, note = one_restart(Path(ctx.workdir) / f"engine-restart-{trial}")
        losses += lost
        notes.append(note)
    return [("Docker engine restarted under a local job", trials, losses, " | ".join(notes)[:300])]


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.engine_restart
def test_engine_restart_under_a_running_job(tmp_path: Path, docker_client: Any) -> None:  # noqa: F811
    if os.geteuid() != 0:
        pytest.skip("restarting dockerd needs root")
    losses, note = one_restart(tmp_path)
    print(f"\nengine restart: {note}")
    assert losses == 0, note
