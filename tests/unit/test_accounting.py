"""Cost accounting: every second of machine time in one bucket, money from the price, v and goodput."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from runner.cost.accounting import AttemptTimes, account, account_attempt, account_job
from runner.cost.prices import Price
from runner.ledger import Ledger
from runner.spec import spec_from_dict
from runner.states import AttemptState, AttemptStatus

PRICE = Price("aws", "us-east-1", "g4dn.xlarge", on_demand_per_hour=0.526, spot_per_hour=0.21,
              currency="USD", source="test table", date="2026-11-01")
BUCKETS = ("useful_s", "startup_s", "stall_s", "lost_s", "other_s")


def total(a) -> float:
    return sum(getattr(a, b) for b in BUCKETS)


@pytest.mark.parametrize("state", ["SUCCEEDED", "PREEMPTED", "FAILED", "CANCELLED", "RUNNING"])
def test_buckets_add_up_to_machine_time(state):
    t = AttemptTimes(1, 0, state, started_at=1000.0, ended_at=1600.0, first_step_at=1010.0,
                     saved_at=1500.0, stall_s=4.0)
    a = account_attempt(t, PRICE)
    assert a.machine_s == 600.0 and math.isclose(total(a), 600.0)
    assert a.startup_s == 10.0 and a.stall_s == 4.0 and a.useful_s == 486.0
    if state in ("PREEMPTED", "FAILED", "CANCELLED"):
        assert (a.lost_s, a.other_s) == (100.0, 0.0)  # work after the last commit is gone
    else:
        assert (a.lost_s, a.other_s) == (0.0, 100.0)  # evaluation/exit, or not committed yet
    assert math.isclose(a.spend, 600 / 3600 * 0.21) and math.isclose(a.on_demand_cost, 486 / 3600 * 0.526)


def test_task_clock_outside_the_machine_window_is_clamped():
    # The task's clock runs 3 s ahead of the backend's: its times are held inside [start, end].
    a = account_attempt(AttemptTimes(1, 0, "PREEMPTED", 100.0, 200.0, first_step_at=90.0, saved_at=203.0))
    assert a.startup_s == 0.0 and a.useful_s == 100.0 and a.lost_s == 0.0 and math.isclose(total(a), 100.0)


def test_attempt_that_never_trained_is_all_startup_and_one_never_started_costs_nothing():
    a = account_attempt(AttemptTimes(1, 0, "PREEMPTED", 100.0, 130.0), PRICE)
    assert a.startup_s == 30.0 and a.useful_s == 0.0 and math.isclose(a.spend, 30 / 3600 * 0.21)
    b = account_attempt(AttemptTimes(2, 0, "FAILED", None, None), PRICE)
    assert b.machine_s == 0.0 and b.spend == 0.0
    c = account_attempt(AttemptTimes(3, 0, "PREEMPTED", 100.0, 300.0, first_step_at=110.0), PRICE)
    assert c.useful_s == 0.0 and c.lost_s == 190.0  # trained, never committed


def test_job_totals_value_ratio_and_goodput():
    times = [AttemptTimes(1, 0, "PREEMPTED", 0.0, 1000.0, 20.0, 900.0, 2.0),
             AttemptTimes(2, 0, "SUCCEEDED", 1030.0, 2000.0, 1050.0, 1990.0, 3.0)]
    acct = account(times, PRICE, wall_s=2010.0)
    assert math.isclose(acct.machine_s, 1970.0)
    assert math.isclose(acct.useful_s, (900 - 20 - 2) + (1990 - 1050 - 3))
    assert math.isclose(acct.useful_s + acct.wasted_s, acct.machine_s)
    assert math.isclose(acct.spend, 1970 / 3600 * 0.21)
    assert math.isclose(acct.value_ratio, acct.useful_s * 0.526 / (1970 * 0.21))
    assert math.isclose(acct.goodput, acct.useful_s / 2010.0)
    d = acct.as_dict()
    assert d["currency"] == "USD" and d["price"]["source"] == "test table" and d["price"]["date"] == "2026-11-01"
    assert math.isclose(d["savings"], d["on_demand_cost"] - d["spend"], abs_tol=1e-5)
    assert len(d["attempts"]) == 2


def test_without_a_price_money_is_none_but_time_is_counted():
    acct = account([AttemptTimes(1, 0, "SUCCEEDED", 0.0, 60.0, 5.0, 55.0)], None, wall_s=70.0)
    d = acct.as_dict()
    assert d["spend"] is None and d["value_ratio"] is None and d["price"] is None
    assert d["machine_s"] == 60.0 and d["useful_s"] == 50.0


def test_account_job_joins_the_ledger_and_the_progress_history(tmp_path: Path):
    spec = spec_from_dict({"name": "acct", "image": "localhost/runner-cifar:latest"})
    with Ledger(tmp_path / "ledger.db") as ledger:
        job_id = ledger.create_job(spec)
        a1 = ledger.reserve_attempt(job_id)
        ledger.update_attempt(a1.id, AttemptStatus(AttemptState.PREEMPTED, "preempted", 137, 1000.0, 1400.0))
        a2 = ledger.reserve_attempt(job_id)
        ledger.update_attempt(a2.id, AttemptStatus(AttemptState.SUCCEEDED, "done", 0, 1420.0, 1800.0))
        job, attempts = ledger.get_job(job_id), ledger.attempts(job_id)
    progress = {"attempts": {"1": {"first_step_at": 1005.0, "checkpoint_at": 1300.0, "stall_s": 1.5},
                             "2": {"first_step_at": 1425.0, "checkpoint_at": 1795.0, "stall_s": 1.0}}}
    acct = account_job(job, attempts, progress, PRICE)
    rows = acct.as_dict()["attempts"]
    assert [r["machine_s"] for r in rows] == [400.0, 380.0]
    assert rows[0]["lost_s"] == 100.0 and rows[0]["useful_s"] == 293.5 and rows[1]["other_s"] == 5.0
    # the job's sums agree with the ledger's attempt times to the second
    assert abs(acct.machine_s - sum(a.ended_at - a.started_at for a in attempts)) < 1


def test_array_goodput_is_over_the_wall_time_of_every_index(tmp_path: Path):
    spec = spec_from_dict({"name": "arr", "image": "localhost/runner-cifar:latest", "array": 3})
    with Ledger(tmp_path / "ledger.db") as ledger:
        job_id = ledger.create_job(spec)
        created = ledger.get_job(job_id).created_at
        for index in range(3):
            a = ledger.reserve_attempt(job_id, index)
            ledger.update_attempt(a.id, AttemptStatus(AttemptState.SUCCEEDED, "", 0, created + 10, created + 110))
        ledger.set_job_state(job_id, "SUCCEEDED")
        job, attempts = ledger.get_job(job_id), ledger.attempts(job_id)
    history = {"attempts": {"1": {"first_step_at": created + 20, "checkpoint_at": created + 100}}}
    acct = account_job(job, attempts, history, PRICE, read_progress=lambda i: history)
    assert acct.useful_s == pytest.approx(3 * 80.0)
    assert acct.goodput == pytest.approx(240.0 / 330.0)  # three indexes of 110 s each, side by side
    assert acct.goodput <= 1
