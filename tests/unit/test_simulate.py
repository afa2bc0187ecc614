"""runner simulate: the replay, its accounting, and the auto interval against brute force."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from runner.cost.accounting import account
from runner.task.interval import auto_interval
from runner.cost.simulate import (Preemptions, Workload, auto_for, brute_force_best, compare, load_schedule,
                                  replay, workload_from_job)
from runner.errors import SpecError
from runner.ledger import Ledger
from runner.spec import spec_from_dict
from runner.states import AttemptState, AttemptStatus

W = Workload(work_s=3600.0, checkpoint_cost_s=10.0, startup_s=60.0, resubmit_s=30.0)


def test_no_preemption_is_one_attempt_with_every_checkpoint_paid():
    [a] = replay(W, 600.0, [], random.Random(0))
    assert a.state == "SUCCEEDED" and a.ended_at == 60.0 + 3600.0 + 5 * 10.0  # 6 segments, 5 checkpoints
    acct = account([a], None, wall_s=a.ended_at)
    assert acct.useful_s == pytest.approx(3600.0) and acct.as_dict()["stall_s"] == 50.0


def test_a_preemption_without_notice_loses_the_work_since_the_last_commit():
    attempts = replay(W, 600.0, [60.0 + 610.0 + 300.0], random.Random(0))  # 300 s into segment 2
    first, second = attempts
    assert first.state == "PREEMPTED" and first.saved_at == 60.0 + 610.0
    acct = account(attempts, None, wall_s=second.ended_at)
    assert acct.as_dict()["lost_s"] == pytest.approx(300.0)
    assert acct.useful_s == pytest.approx(3600.0)  # every second of work is committed once in the end
    assert second.started_at == first.ended_at + 30.0


def test_a_noticed_preemption_loses_nothing():
    attempts = replay(W, 600.0, [60.0 + 610.0 + 300.0], random.Random(0), notice_coverage=1.0)
    acct = account(attempts, None, wall_s=attempts[-1].ended_at)
    assert acct.as_dict()["lost_s"] == 0.0 and acct.useful_s == pytest.approx(3600.0)


def test_preempted_while_starting_and_schedule_file(tmp_path: Path):
    attempts = replay(W, 600.0, [20.0], random.Random(0))
    assert attempts[0].first_step_at is None and attempts[1].state == "SUCCEEDED"
    f = tmp_path / "times.txt"
    f.write_text("# seconds since start\n900\n300\n\n")
    assert load_schedule(f) == (300.0, 900.0)
    f.write_text("300\nsoon\n")
    with pytest.raises(SpecError, match=r"times.txt:2: 'soon'"):
        load_schedule(f)


@pytest.mark.parametrize("mean_s", [600.0, 3600.0, 21600.0])
def test_auto_interval_is_within_20_percent_of_brute_force(mean_s):
    w = Workload(work_s=8 * 3600.0, checkpoint_cost_s=30.0, startup_s=60.0, resubmit_s=30.0)
    process = Preemptions(mean_s=mean_s)
    best, rows = brute_force_best(w, process, trials=60, points=25)
    auto = auto_for(w, process)
    assert auto == pytest.approx(auto_interval(30.0, mean_s))
    assert abs(auto / best - 1) <= 0.2, (auto, best, [(round(r.interval_s), round(r.completion_s)) for r in rows])


def test_compare_marks_auto_and_prices_with_the_accounting():
    from runner.cost.prices import Price

    price = Price("aws", "us-east-1", "g4dn.xlarge", 0.526, 0.21, "USD", "test", "2026-11-01")
    rows = compare(W, Preemptions(mean_s=1800.0), [300.0, 1200.0], trials=20, price=price)
    assert [r.auto for r in rows].count(True) == 1 and len(rows) == 3
    for r in rows:
        assert r.spend == pytest.approx(r.machine_s / 3600 * 0.21, rel=1e-9)
        assert r.on_demand_cost == pytest.approx(3600.0 / 3600 * 0.526)  # the useful work is the whole job
        assert math.isclose(r.value_ratio, r.on_demand_cost / r.spend)


def test_workload_is_measured_from_a_job(tmp_path: Path):
    spec = spec_from_dict({"name": "sim", "image": "localhost/runner-cifar:latest"})
    with Ledger(tmp_path / "ledger.db") as ledger:
        job_id = ledger.create_job(spec)
        a1 = ledger.reserve_attempt(job_id)
        ledger.update_attempt(a1.id, AttemptStatus(AttemptState.PREEMPTED, "", 137, 1000.0, 1200.0))
        a2 = ledger.reserve_attempt(job_id)
        ledger.update_attempt(a2.id, AttemptStatus(AttemptState.SUCCEEDED, "", 0, 1210.0, 1400.0))
        job, attempts = ledger.get_job(job_id), ledger.attempts(job_id)
    progress = {"total_steps": 1000, "attempts": {
        "1": {"first_step_at": 1004.0, "checkpoint_at": 1104.0, "checkpoint_step": 500, "resumed_from": 0,
              "stall_s": 0.0, "checkpoints": 5, "checkpoint_cost_s": 0.2},
        "2": {"first_step_at": 1216.0, "checkpoint_at": 1316.0, "checkpoint_step": 1000, "resumed_from": 500,
              "stall_s": 0.0, "checkpoints": 5, "checkpoint_cost_s": 0.4}}}
    w = workload_from_job(job, attempts, progress)
    assert w.work_s == pytest.approx(200.0) and w.checkpoint_cost_s == pytest.approx(0.3)
    assert w.startup_s == pytest.approx(5.0) and w.resubmit_s == pytest.approx(10.0)
    with pytest.raises(SpecError, match="no measured steps"):
        workload_from_job(job, attempts, {"attempts": {}})
