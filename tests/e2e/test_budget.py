"""A budget reached mid-job: the attempt commits and stops, no attempt starts past it, the job is PAUSED
with its checkpoint and says so; `runner resume --budget` raises it and the job ends with the weights of
an uninterrupted run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.conftest import runner, smoke_spec, status_json

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_a_budget_reached_pauses_the_job_and_a_raised_one_finishes_it(tmp_path: Path,
                                                                       smoke_reference: dict[str, str]) -> None:
    spec = smoke_spec(tmp_path, epochs=10)
    # A dear machine (100/h spot) and a small budget: with the 30 s margin (0.83 at 100/h) it is reached
    # about 10 s into the run, after the task's start (2-5 s) and well before its end (16 s on a quiet machine).
    prices = ["--set", "local.price_per_hour=100", "--set", "cost.on_demand_per_hour=300", "--set", "budget=1.1"]
    proc = runner("submit", str(spec), *prices, "--interval", "1", home=tmp_path, timeout=600)
    assert proc.returncode == 3, proc.stdout + proc.stderr  # the foreground submit says: paused
    job_id = proc.stdout.split()[1]
    status = status_json(job_id, tmp_path)
    assert status["state"] == "PAUSED" and status["message"].startswith("budget reached"), status
    assert f"runner resume {job_id} --budget" in status["message"]
    assert [a["state"] for a in status["attempt_list"]] == ["HALTED"], status["attempt_list"]
    assert 0 < status["step"] < status["total_steps"]
    assert status["cost"]["spend"] <= 1.1, status["cost"]
    time.sleep(3)  # no watcher starts anything for it
    assert runner("watch", "--once", home=tmp_path).returncode == 0
    assert [a["state"] for a in status_json(job_id, tmp_path)["attempt_list"]] == ["HALTED"]
    refused = runner("resume", job_id, home=tmp_path)
    assert refused.returncode == 2 and "--budget" in refused.stderr
    resumed = runner("resume", job_id, "--budget", "50", "--interval", "1", home=tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    final = status_json(job_id, tmp_path)
    assert final["state"] == "SUCCEEDED" and final["weights_sha256"] == smoke_reference["10"]
