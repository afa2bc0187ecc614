"""`runner halt` then `runner resume` from the host on the local engine: PAUSED in between with nothing
running and nothing resubmitted, the final weights equal to an uninterrupted run's.

(The same on AWS Batch as moto serves it is in tests/e2e/test_aws_job.py.)
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import runner, smoke_spec, status_json

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def wait_for_step(job_id: str, home: Path, step: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while (status_json(job_id, home).get("step") or 0) < step:
        assert time.monotonic() < deadline, f"{job_id} never reached step {step}"
        time.sleep(0.5)


def running_containers(job_id: str) -> list[str]:
    return subprocess.run(["docker", "ps", "-q", "--filter", f"label=spot-runner.job={job_id}"],
                          capture_output=True, text=True, check=True).stdout.split()


def test_halt_then_resume_on_local_ends_like_an_uninterrupted_run(tmp_path: Path,
                                                                  smoke_reference: dict[str, str]) -> None:
    spec = smoke_spec(tmp_path, epochs=10)
    started = runner("submit", str(spec), "--detach", "--interval", "1", home=tmp_path, check=True)
    job_id = started.stdout.split()[1]
    wait_for_step(job_id, tmp_path, 150)
    halted = runner("halt", job_id, home=tmp_path, timeout=300)
    assert halted.returncode == 0, halted.stdout + halted.stderr
    assert f"halting {job_id}" in halted.stdout and "PAUSED" in halted.stdout
    status = status_json(job_id, tmp_path)
    assert status["state"] == "PAUSED"
    [attempt] = status["attempt_list"]
    assert (attempt["state"], attempt["exit_code"]) == ("HALTED", 76), attempt
    assert running_containers(job_id) == []
    assert (status["preemptions"], status["failures"]) == (0, 0)  # a halt is charged to no budget
    assert (tmp_path / "checkpoints" / job_id / "HALT").exists()
    # A paused job is never resubmitted: a watcher pass does nothing for it.
    assert runner("watch", "--once", home=tmp_path).returncode == 0
    time.sleep(2)
    assert status_json(job_id, tmp_path)["state"] == "PAUSED" and running_containers(job_id) == []
    again = runner("halt", job_id, home=tmp_path)
    assert again.returncode == 0 and "already PAUSED" in again.stdout
    resumed = runner("resume", job_id, "--interval", "1", home=tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    final = status_json(job_id, tmp_path)
    assert final["state"] == "SUCCEEDED"
    assert [a["state"] for a in final["attempt_list"]] == ["HALTED", "SUCCEEDED"]
    assert final["weights_sha256"] == smoke_reference["10"]
    assert not (tmp_path / "checkpoints" / job_id / "HALT").exists()


def test_halt_and_resume_say_what_they_cannot_do(tmp_path: Path) -> None:
    unknown = runner("halt", "nope-000000", home=tmp_path)
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: no job 'nope-000000'")
    spec = smoke_spec(tmp_path, epochs=1)
    done = runner("submit", str(spec), "--interval", "1", home=tmp_path, check=True)
    job_id = done.stdout.split()[1]
    finished = runner("halt", job_id, home=tmp_path)
    assert finished.returncode == 1 and "is SUCCEEDED: there is nothing to halt" in finished.stderr
    not_paused = runner("resume", job_id, home=tmp_path)
    assert not_paused.returncode == 1 and "only a PAUSED job resumes" in not_paused.stderr
