"""Jobs longer than the partition's time limit, on the real cluster (submitted early by conftest's
``background`` fixture, so their minutes overlap the other tests; these tests run last and wait).

- A job with three times the `short` partition's one-minute limit (a user's script under
  `runner exec`, 0.1 s steps) gets SIGUSR1 before each limit (``--signal=B:USR1@10``), checkpoints,
  exits 75, and continues in the next allocation until done, with no step lost or repeated.
- A job that ignores its signals runs into the limit (TIMEOUT): one FAILED attempt, no loop.
"""

from __future__ import annotations

import json
from typing import Any

from tests.slurm.conftest import CHAIN_STEPS, slurm_runs, wait_job
from tests.slurm.steps_task import advance

LIMIT_S = 60  # the short partition's MaxTime=1


def expected_acc(steps: int) -> int:
    acc = 0
    for step in range(steps):
        acc = advance(acc, step)
    return acc


def test_job_three_times_the_time_limit_finishes_through_continuations(background: dict[str, Any]) -> None:
    status = wait_job(background["jobs"]["chain"], background["home"], 600)
    attempts = status["attempt_list"]
    assert status["state"] == "SUCCEEDED", status
    result = json.loads((background["folder"] / "work" / "result.json").read_text())
    assert result == {"step": CHAIN_STEPS, "acc": expected_acc(CHAIN_STEPS)}  # nothing lost, nothing repeated
    assert len(attempts) >= 3, attempts  # the work is three limits long
    assert [a["state"] for a in attempts[:-1]] == ["PREEMPTED"] * (len(attempts) - 1), attempts
    assert attempts[-1]["state"] == "SUCCEEDED"
    for attempt in attempts:
        runs = slurm_runs(attempt["backend_id"])
        assert len(runs) == 1, runs  # never requeued by Slurm as well
        _, state, exit_code, elapsed = runs[0][:4]
        assert state != "TIMEOUT" and int(elapsed) <= LIMIT_S, runs  # stopped before the limit, every time
        if attempt is not attempts[-1]:
            assert (state, exit_code) == ("FAILED", "75:0"), runs  # exit 75 after the signal, checkpoint committed
            assert "exit 75" in attempt["reason"]
    ran = sum(int(slurm_runs(a["backend_id"])[0][3]) for a in attempts)
    print(f"wall-time chain: {len(attempts)} allocations, {ran}s of Slurm time for {CHAIN_STEPS * 0.1:.0f}s of work, "
          f"wall {status['wall_s']}s")


def test_job_that_ignores_the_signal_is_one_failure_not_a_loop(background: dict[str, Any]) -> None:
    status = wait_job(background["jobs"]["ignores"], background["home"], 400)
    attempts = status["attempt_list"]
    assert status["state"] == "FAILED", status
    assert len(attempts) == 1 and attempts[0]["state"] == "FAILED", attempts
    assert "time limit (1:00) without stopping at the signal" in attempts[0]["reason"], attempts[0]
    runs = slurm_runs(attempts[0]["backend_id"])
    assert [r[1] for r in runs] == ["TIMEOUT"], runs
