"""Issue 3 end to end on the local engine: preemptions, a killed watcher, real failures, cancel."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from tests.e2e.conftest import ROOT, runner, runner_env, smoke_spec, status_json

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def running_containers(client: Any, job_id: str) -> list[str]:
    return [c.name for c in client.containers.list(filters={"label": f"spot-runner.job={job_id}"})]


def test_survives_preemptions_of_both_kinds(tmp_path, docker_client, smoke_reference):
    # Preemptions 4 s after each start: some training each time on a fast machine, none on a slow
    # one (then the notice lands during start-up); count bounds it either way.
    # 1,250 steps: more than four attempts of 4 s can do even on a fast machine.
    spec = smoke_spec(tmp_path, epochs=10)
    proc = runner("submit", str(spec), "--interval", "1",
                  "--simulate-preemption", "every=4s,notice=3s,mode=mixed,count=4", home=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = proc.stdout.split()[1]
    status = status_json(job_id, tmp_path)
    reasons = [a["reason"] for a in status["attempt_list"] if a["state"] == "PREEMPTED"]
    assert len(reasons) >= 3, status["attempt_list"]
    assert any("notice" in r for r in reasons) and any("preemptor" in r for r in reasons), reasons
    assert status["weights_sha256"] == smoke_reference["10"]
    assert "simulator:" in proc.stdout and "goodput" in proc.stdout
    assert "final weights sha256 " + smoke_reference["10"] in proc.stdout
    assert "value ratio v" in proc.stdout
    check_accounting(status)


BUCKETS = ("useful_s", "startup_s", "stall_s", "lost_s", "other_s")


def check_accounting(status: dict[str, Any]) -> None:
    """Issue 6: spend, on-demand cost, v, goodput and lost work agree with the ledger's attempts."""
    cost = status["cost"]
    rows = {(c["number"], c["index"]): c for c in cost["attempts"]}
    for a in status["attempt_list"]:
        c = rows[(a["number"], a["index"])]
        ran = (a["ended_at"] - a["started_at"]) if a["started_at"] and a["ended_at"] else 0.0
        assert abs(c["machine_s"] - ran) < 1, (a, c)  # the ledger's times, to the second
        assert abs(sum(c[k] for k in BUCKETS) - c["machine_s"]) < 0.01, c
    ledger_machine = sum((a["ended_at"] - a["started_at"]) for a in status["attempt_list"] if a["started_at"])
    assert abs(cost["machine_s"] - ledger_machine) < 1
    for key in BUCKETS:
        assert abs(cost[key] - sum(c[key] for c in cost["attempts"])) < 1, key
    assert abs(cost["useful_s"] + cost["wasted_s"] - cost["machine_s"]) < 1
    assert cost["useful_s"] > 0 and cost["lost_s"] >= 0 and 0 < cost["goodput"] <= 1
    assert abs(cost["goodput"] - cost["useful_s"] / cost["wall_s"]) < 0.01
    price = cost["price"]  # jobs/cifar-smoke.yaml imitates a g4dn.xlarge at a stated spot price
    assert price["machine"] == "aws:us-east-1:g4dn.xlarge" and cost["currency"] == "USD"
    assert price["source"] and price["date"]
    assert abs(cost["spend"] - cost["machine_s"] / 3600 * price["spot_per_hour"]) < 1e-4
    assert abs(cost["on_demand_cost"] - cost["useful_s"] / 3600 * price["on_demand_per_hour"]) < 1e-4
    assert abs(cost["value_ratio"] - cost["on_demand_cost"] / cost["spend"]) < 0.01
    assert abs(sum(c["spend"] for c in cost["attempts"]) - cost["spend"]) < 1e-4


def test_watcher_killed_again_and_again(tmp_path, docker_client, smoke_reference):
    """SIGKILL the watcher at random moments; the job completes, every attempt once, never two."""
    from runner.ledger import Ledger
    from runner.spec import load_spec, parse_simulate_preemption

    spec = load_spec(smoke_spec(tmp_path, epochs=10)).model_copy(
        update={"simulate_preemption": parse_simulate_preemption("every=5s,notice=3s,mode=mixed,count=3")})
    with Ledger(tmp_path / "ledger.db") as ledger:
        job_id = ledger.create_job(spec)
    concurrent: list[list[str]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            names = running_containers(docker_client, job_id)
            if len(names) > 1:
                concurrent.append(names)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rng = random.Random()
    kills = 0
    try:
        for _ in range(60):
            watcher = subprocess.Popen([sys.executable, "-m", "runner.cli", "watch", job_id, "--interval", "0.5"],
                                       env=runner_env(tmp_path), cwd=ROOT, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True)
            try:
                watcher.wait(timeout=rng.uniform(0.5, 3.0))
                assert watcher.returncode == 0, watcher.stderr.read() if watcher.stderr else ""
                break  # the job ended while this watcher ran
            except subprocess.TimeoutExpired:
                watcher.send_signal(signal.SIGKILL)
                watcher.wait()
                kills += 1
        else:
            pytest.fail("the job did not finish under a repeatedly killed watcher")
    finally:
        stop.set()
        sampler.join()
    assert kills >= 5
    assert not concurrent, f"two attempts ran at once: {concurrent}"
    status = status_json(job_id, tmp_path)
    assert status["state"] == "SUCCEEDED"
    numbers = [a["number"] for a in status["attempt_list"]]
    assert numbers == list(range(1, len(numbers) + 1))
    ids = [a["backend_id"] for a in status["attempt_list"]]
    assert len(set(ids)) == len(ids) and None not in ids
    assert status["weights_sha256"] == smoke_reference["10"]


def test_real_failure_stops_after_its_budget(tmp_path, docker_client):
    spec = smoke_spec(tmp_path, command=["python", "-c", "import sys; print('bug!'); sys.exit(1)"],
                      retries={"preemptions": 5, "failures": 1})
    proc = runner("submit", str(spec), "--interval", "0.5", home=tmp_path, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "failure budget" in proc.stdout and "runner logs" in proc.stdout
    job_id = proc.stdout.split()[1]
    status = status_json(job_id, tmp_path)
    assert status["state"] == "FAILED" and len(status["attempt_list"]) == 2
    assert all(a["exit_code"] == 1 for a in status["attempt_list"])
    logs = runner("logs", job_id, home=tmp_path, check=True)
    assert "bug!" in logs.stdout
    again = runner("watch", job_id, "--once", home=tmp_path)
    assert again.returncode == 0 and len(status_json(job_id, tmp_path)["attempt_list"]) == 2


def test_cancelled_job_stays_cancelled(tmp_path, docker_client):
    spec = smoke_spec(tmp_path, epochs=20)
    proc = runner("submit", str(spec), "--detach", "--interval", "0.5", home=tmp_path, check=True)
    job_id = proc.stdout.split()[1]
    deadline = time.monotonic() + 120
    while status_json(job_id, tmp_path)["state"] != "RUNNING":
        assert time.monotonic() < deadline, "the detached job never started"
        time.sleep(1)
    runner("cancel", job_id, home=tmp_path, check=True)
    time.sleep(4)  # the background watcher keeps polling meanwhile
    runner("watch", job_id, "--once", home=tmp_path, check=True)
    status = status_json(job_id, tmp_path)
    assert status["state"] == "CANCELLED"
    assert [a["state"] for a in status["attempt_list"]] == ["CANCELLED"]
    assert running_containers(docker_client, job_id) == []
    assert runner("cancel", job_id, home=tmp_path, check=True).stdout.startswith(f"{job_id} is already")
