"""Trace replay: exact small cases, the deadline guarantee, spend identities, determinism, capacity pricing, CLI."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runner.capacity.policy import ON_DEMAND, POLICIES, SPOT
from runner.capacity.replay import (
    TraceJob,
    offsets_for,
    replay_one,
    replay_trace,
    trace_interval,
)
from runner.capacity.trace import from_samples, load_trace
from runner.cost.accounting import (
    AttemptTimes,
    account,
    account_attempt,
    account_job,
    times_from_ledger,
)
from runner.cost.simulate import Workload
from runner.cost.table import Price
from runner.errors import SpecError
from runner.ledger import Ledger
from runner.spec import spec_from_dict
from runner.states import AttemptState, AttemptStatus

ROOT = Path(__file__).resolve().parents[2]
H = 3600.0
PRICE = Price("aws", "us-east-1", "p3.2xlarge", on_demand_per_hour=3.06, spot_per_hour=0.92, currency="USD",
              source="test", date="2024-06-01")


def steps(spans: list[tuple[float, int]], gap: float = 60.0):
    """A trace from (seconds, machines) spans, sampled every ``gap``."""
    values: list[int] = []
    for seconds, machines in spans:
        values += [machines] * int(seconds // gap)
    return from_samples(values, gap)


# up 1 h, down 1 h, then up for a long while
SIMPLE = steps([(H, 1), (H, 0), (200 * H, 2)])
SIMPLE_JOB = TraceJob(Workload(work_s=5400.0, checkpoint_cost_s=0.0, startup_s=60.0, resubmit_s=30.0), 600.0)


def test_spot_only_waits_out_the_outage_and_loses_the_uncommitted_work():
    run = replay_one(SIMPLE, SIMPLE_JOB, "spot-only", 0.0, None, PRICE)
    first, second = run.account.attempts
    assert (first.state, first.started_at, first.ended_at, first.useful_s, first.lost_s) == \
        ("PREEMPTED", 0.0, 3600.0, 3000.0, 540.0)  # 5 commits of 600 s; 540 s lost at the drop
    assert (second.state, second.started_at, second.ended_at) == ("SUCCEEDED", 7200.0, 7200.0 + 60 + 2400)
    assert run.finished and run.completion_s == 9660.0 and run.preemptions == 1 and run.switches == 0
    assert run.account.spend == pytest.approx((3600 + 2460) / 3600 * 0.92)


def test_greedy_goes_on_demand_at_the_last_safe_moment_and_makes_the_deadline():
    run = replay_one(SIMPLE, SIMPLE_JOB, "greedy", 0.0, 9000.0, PRICE)
    capacities = [(a.capacity, a.state) for a in run.account.attempts]
    assert capacities == [(SPOT, "PREEMPTED"), (SPOT, "CANCELLED"), (ON_DEMAND, "SUCCEEDED")]
    # after the preemption (resubmitted at 3630) the spot attempt waits; spot stays safe while
    # 9000 - t - 90 - 2400 - 60 > 90 + 600, i.e. t < 5760: the poll at 5790 switches
    od = run.account.attempts[2]
    assert (od.started_at, od.ended_at) == (5790.0, 5790.0 + 60 + 2400)
    assert run.completion_s == 8250.0 and not run.missed and run.switches == 1
    assert run.account.spend == pytest.approx(3600 / 3600 * 0.92 + 2460 / 3600 * 3.06)
    assert run.account.spend_by_capacity == pytest.approx({"spot": 0.92, "on-demand": 2460 / 3600 * 3.06})


def test_auto_goes_back_to_spot_when_capacity_returns_and_greedy_does_not():
    trace = steps([(H, 1), (4 * H, 0), (200 * H, 1)])
    job = TraceJob(Workload(work_s=8 * H, checkpoint_cost_s=10.0, startup_s=60.0, resubmit_s=30.0), 900.0)
    auto = replay_one(trace, job, "auto", 0.0, 11 * H, PRICE)
    greedy = replay_one(trace, job, "greedy", 0.0, 11 * H, PRICE)
    used = [a.capacity for a in auto.account.attempts if a.machine_s > 0]
    assert used == [SPOT, ON_DEMAND, SPOT], auto.account.attempts
    assert [a.state for a in auto.account.attempts if a.capacity == ON_DEMAND] == ["HALTED"]  # checkpoint, stop
    assert [a.capacity for a in greedy.account.attempts if a.machine_s > 0] == [SPOT, ON_DEMAND]
    assert not auto.missed and not greedy.missed
    assert auto.account.spend < 0.8 * greedy.account.spend


def random_trace(rng: random.Random, hours: float = 48.0):
    spans = []
    while sum(s for s, _ in spans) < hours * H:
        spans.append((rng.choice((60.0, 300.0, 1200.0, H, 3 * H, 8 * H)), rng.choice((0, 0, 1, 3))))
    return steps(spans)


def test_no_deadline_policy_misses_a_deadline_that_on_demand_alone_meets():
    """On random flapping traces, with the deadline exactly what on-demand alone takes (and a little
    more), greedy, uniform-progress and auto never miss; spot-only does."""
    rng = random.Random(3)
    missed_spot_only = 0
    for k in range(6):
        trace = random_trace(rng)
        job = TraceJob(Workload(work_s=rng.choice((2, 3, 5)) * H, checkpoint_cost_s=rng.choice((0.0, 15.0)),
                                startup_s=rng.choice((30.0, 120.0)), resubmit_s=30.0),
                       rng.choice((300.0, 900.0)), notice_coverage=rng.choice((0.0, 0.5)), poll_s=rng.choice((30.0, 60.0)))
        for deadline in (job.on_demand_alone_s, job.on_demand_alone_s + 1800.0, job.on_demand_alone_s + 4 * H):
            outcomes = {o.policy: o for o in replay_trace(trace, job, deadline, POLICIES, offsets=12, seed=k)}
            for policy in ("greedy", "uniform-progress", "auto"):
                assert outcomes[policy].misses == 0, (k, deadline, policy)
                assert outcomes[policy].completion_max_s <= deadline + 1e-6
            missed_spot_only += outcomes["spot-only"].misses
    assert missed_spot_only > 0


def test_an_all_on_demand_trace_finishes_every_deadline_policy_and_never_spot_only():
    never = from_samples([0] * 100, 600.0)
    job = TraceJob(Workload(work_s=2 * H, checkpoint_cost_s=5.0, startup_s=60.0, resubmit_s=30.0), 600.0)
    outcomes = {o.policy: o for o in replay_trace(never, job, job.on_demand_alone_s, POLICIES, offsets=5)}
    for policy in ("greedy", "uniform-progress", "auto"):
        assert outcomes[policy].misses == 0 and outcomes[policy].on_demand_share == 1.0
        assert outcomes[policy].completion_max_s == pytest.approx(job.on_demand_alone_s)
    assert outcomes["spot-only"].unfinished == 5 and outcomes["spot-only"].completion_mean_s == math.inf


def test_spend_is_spot_time_at_spot_price_plus_on_demand_time_at_on_demand_price():
    trace = load_trace(ROOT / "benchmarks/traces/zone-c.csv")
    w = Workload(work_s=10 * H, checkpoint_cost_s=20.0, startup_s=120.0, resubmit_s=30.0)
    job = TraceJob(w, trace_interval(trace, w))
    for policy in POLICIES:
        for offset in offsets_for(trace, 6):
            run = replay_one(trace, job, policy, offset, 15 * H, PRICE, seed=1)
            machine = run.account.machine_by_capacity()
            assert run.account.spend == pytest.approx(machine["spot"] / H * 0.92 + machine["on-demand"] / H * 3.06)
            assert sum(run.account.spend_by_capacity.values()) == pytest.approx(run.account.spend)
            assert run.account.useful_s == pytest.approx(w.work_s)  # all the work, committed exactly once
            assert run.account.on_demand_cost == pytest.approx(w.work_s / H * 3.06)


def test_the_same_offsets_give_the_same_results():
    trace = load_trace(ROOT / "benchmarks/traces/zone-d.csv")
    job = TraceJob(Workload(work_s=6 * H, checkpoint_cost_s=10.0, startup_s=60.0, resubmit_s=30.0), 900.0,
                   notice_coverage=0.5)
    first = replay_trace(trace, job, 9 * H, POLICIES, offsets=8, price=PRICE, seed=4)
    again = replay_trace(trace, job, 9 * H, POLICIES, offsets=8, price=PRICE, seed=4)
    assert first == again
    assert replay_trace(trace, job, 9 * H, ["auto"], offsets=8, price=PRICE, seed=5) != [first[-1]]


def test_replay_inputs_are_checked():
    w = Workload(work_s=H, checkpoint_cost_s=0.0)
    with pytest.raises(SpecError, match="checkpoint interval must be > 0"):
        TraceJob(w, 0.0)
    with pytest.raises(SpecError, match="notice coverage"):
        TraceJob(w, 60.0, notice_coverage=2.0)
    with pytest.raises(SpecError, match="at least one start offset"):
        offsets_for(SIMPLE, 0)
    with pytest.raises(SpecError, match="policy 'cheap' is not one of"):
        replay_trace(SIMPLE, TraceJob(w, 60.0), None, ["cheap"])
    assert 10.0 <= trace_interval(SIMPLE, Workload(work_s=H, checkpoint_cost_s=20.0)) <= 3600.0


# ------------------------------------------------------------------------------ accounting by capacity


def test_an_on_demand_attempt_is_priced_at_the_on_demand_rate():
    spot = account_attempt(AttemptTimes(1, 0, "PREEMPTED", 0.0, 3600.0, 60.0, 1800.0), PRICE)
    od = account_attempt(AttemptTimes(2, 0, "SUCCEEDED", 4000.0, 7600.0, 4060.0, 7600.0, capacity="on-demand"),
                         PRICE)
    assert spot.capacity == "spot" and spot.spend == pytest.approx(0.92)
    assert od.capacity == "on-demand" and od.spend == pytest.approx(3.06)
    assert od.on_demand_cost == pytest.approx(3540 / 3600 * 3.06)  # the counterfactual is the same for both
    acct = account([AttemptTimes(1, 0, "PREEMPTED", 0.0, 3600.0, 60.0, 1800.0),
                    AttemptTimes(2, 0, "SUCCEEDED", 4000.0, 7600.0, 4060.0, 7600.0, capacity="on-demand")],
                   PRICE, wall_s=7600.0)
    d = acct.as_dict()
    assert d["spend_by_capacity"] == {"spot": 0.92, "on-demand": 3.06} and d["spend"] == pytest.approx(3.98)
    assert d["machine_by_capacity"] == {"spot": 3600.0, "on-demand": 3600.0}
    assert [r["capacity"] for r in d["attempts"]] == ["spot", "on-demand"]
    assert account([AttemptTimes(1, 0, "SUCCEEDED", 0.0, 60.0)], None).spend_by_capacity is None


def test_ledger_attempts_carry_their_capacity_into_the_accounting(tmp_path: Path):
    spec = spec_from_dict({"name": "due", "image": "localhost/runner-cifar:latest"})
    with Ledger(tmp_path / "ledger.db") as ledger:
        job_id = ledger.create_job(spec)
        t0 = ledger.get_job(job_id).created_at
        for capacity, state, start in (("spot", AttemptState.PREEMPTED, 0), ("on-demand", AttemptState.SUCCEEDED, 4000)):
            a = ledger.reserve_attempt(job_id, capacity=capacity)
            ledger.update_attempt(a.id, AttemptStatus(state, "", 0, t0 + start, t0 + start + 3600))
        ledger.set_job_state(job_id, "SUCCEEDED")
        job, attempts = ledger.get_job(job_id), ledger.attempts(job_id)
    assert [t.capacity for t in times_from_ledger(attempts, {})] == ["spot", "on-demand"]
    acct = account_job(job, attempts, None, PRICE)
    assert acct.spend_by_capacity == pytest.approx({"spot": 0.92, "on-demand": 3.06})


# ------------------------------------------------------------------------------ runner simulate --trace


def test_runner_simulate_trace_prints_the_policies_side_by_side(tmp_path: Path, monkeypatch):
    from runner.cli import app

    monkeypatch.setenv("RUNNER_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["simulate", "--trace", str(ROOT / "benchmarks/traces/zone-a.csv"),
                                      "--deadline", "15h", "--work", "10h"])
    assert result.exit_code == 0, result.output
    assert "100 start offsets" in result.output and "on-demand alone takes 10.02 h: it meets the deadline" in result.output
    assert "aws:us-east-1:p3.2xlarge spot 0.92/h" in result.output  # the trace's '# machine:' line prices it
    for policy in POLICIES:
        assert f"\n {policy} " in result.output or f"\n{policy} " in result.output
    result = CliRunner().invoke(app, ["simulate", "--trace", str(ROOT / "benchmarks/traces/zone-b.csv"),
                                      "--deadline", "12h", "--work", "2h", "--policies", "greedy,auto",
                                      "--offsets", "5", "--spot-price", "0.5", "--on-demand-price", "2",
                                      "--checkpoint-cost", "20s", "--intervals", "10m", "--coverage", "0.5"])
    assert result.exit_code == 0, result.output
    assert "spot-only" not in result.output and "spot 0.5/h, on demand 2.0/h" in result.output
    assert "checkpoint every 10.0 min (given), notice coverage 0.50" in result.output


@pytest.mark.parametrize("args,message", [
    (["--trace", "no-such.csv", "--work", "1h"], "no-such.csv: cannot read the trace"),
    (["--trace", "T", "--work", "1h", "--mean", "1h"], "give it without --mean or --schedule"),
    (["--work", "1h", "--deadline", "5h"], "give a --trace too"),
    (["--trace", "T", "--work", "1h", "--policies", "greedy,cheapest"], "--policies: 'cheapest' is not one of"),
    (["--trace", "T", "--work", "1h", "--spot-price", "1"], "give both"),
    (["--trace", "T", "--work", "1h", "--spot-price", "3", "--on-demand-price", "1"], "swap them"),
    (["--trace", "T", "--work", "1h", "--deadline", "tomorrow"], "--deadline 'tomorrow': not a duration"),
    (["--trace", "T", "--work", "1h", "--intervals", "5m,10m"], "one checkpoint interval"),
    (["--trace", "T"], "give its --work"),
])
def test_runner_simulate_trace_errors_are_one_line(tmp_path: Path, monkeypatch, args, message):
    from runner.cli import app

    monkeypatch.setenv("RUNNER_HOME", str(tmp_path))
    args = [str(ROOT / "benchmarks/traces/zone-a.csv") if a == "T" else a for a in args]
    result = CliRunner().invoke(app, ["simulate", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.count("\n") == 1, result.output
