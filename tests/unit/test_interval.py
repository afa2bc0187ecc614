"""every: auto: Young-Daly from measured checkpoint cost, a ledger-estimated MTBF and notice coverage."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from runner.cost import interval as iv
from runner.ledger import Ledger
from runner.spec import spec_from_dict
from runner.states import AttemptState, AttemptStatus


def test_young_and_daly():
    assert iv.young(2.0, 3600.0) == pytest.approx(120.0)
    # Daly's correction vanishes as C/M -> 0 and lowers the interval by about C for moderate C.
    assert iv.daly(0.01, 36000.0) == pytest.approx(iv.young(0.01, 36000.0), rel=1e-3)
    assert iv.daly(60.0, 3600.0) < iv.young(60.0, 3600.0)
    assert iv.daly(100.0, 40.0) == 40.0


def test_notices_stretch_the_interval_but_only_so_far():
    base = iv.auto_interval(5.0, 3600.0, 0.0)
    assert iv.auto_interval(5.0, 3600.0, 0.75) == pytest.approx(iv.daly(5.0, 4 * 3600.0))
    assert iv.auto_interval(5.0, 3600.0, 1.0) == iv.auto_interval(5.0, 3600.0, iv.MAX_COVERAGE) > base
    assert iv.auto_interval(1e-6, 60.0) == iv.MIN_INTERVAL_S
    assert iv.auto_interval(500.0, 1e7) == iv.MAX_INTERVAL_S


def test_estimate_starts_at_the_prior_and_moves_to_the_record():
    prior = iv.estimate(0.0, 0, 0)
    assert prior.mtbf_s == iv.PRIOR_MTBF_S and prior.coverage == 0.0
    seen = iv.estimate(machine_s=50 * 600.0, preemptions=50, noticed=50)  # one every 10 min, all noticed
    assert seen.mtbf_s == pytest.approx((iv.PRIOR_MTBF_S + 30000.0) / 51)
    assert seen.coverage == pytest.approx(50 / 52)
    assert seen.env() == {"RUNNER_MTBF_S": f"{seen.mtbf_s:.0f}", "RUNNER_NOTICE_COVERAGE": f"{seen.coverage:.3f}"}


def test_estimate_from_ledger_counts_only_the_same_machine(tmp_path: Path):
    g4 = spec_from_dict({"name": "a", "image": "i", "local": {"imitates": "aws:us-east-1:g4dn.xlarge"}})
    m5 = spec_from_dict({"name": "b", "image": "i", "local": {"imitates": "aws:us-east-1:m5.xlarge"}})
    with Ledger(tmp_path / "ledger.db") as ledger:
        for spec, exits in ((g4, [75, 137, 0]), (m5, [137])):
            job = ledger.create_job(spec)
            t = 0.0
            for code in exits:
                a = ledger.reserve_attempt(job)
                state = AttemptState.SUCCEEDED if code == 0 else AttemptState.PREEMPTED
                ledger.update_attempt(a.id, AttemptStatus(state, "", code, t, t + 600.0))
                t += 700.0
        est = iv.estimate_from_ledger(ledger, g4)
    assert est.machine == "aws:us-east-1:g4dn.xlarge"
    assert (est.machine_s, est.preemptions, est.noticed) == (1800.0, 2, 1)
    assert est.mtbf_s == pytest.approx((iv.PRIOR_MTBF_S + 1800.0) / 3)
    assert est.coverage == pytest.approx(1 / 4)


def test_checkpoint_cost_includes_the_slowdown_while_persisting():
    meter = iv.CheckpointCost()
    assert meter.cost_s is None
    for _ in range(100):
        meter.step(0.10, busy=False)
    for _ in range(20):
        meter.step(0.15, busy=True)  # 20 steps 50 ms slower while one checkpoint persists
    meter.checkpoint(0.04)
    assert meter.cost_s == pytest.approx(0.04 + 20 * 0.05)


def test_from_env_falls_back_to_the_priors():
    assert iv.from_env({}) == (iv.PRIOR_MTBF_S, 0.0)
    assert iv.from_env({"RUNNER_MTBF_S": "600", "RUNNER_NOTICE_COVERAGE": "0.5"}) == (600.0, 0.5)
    assert iv.from_env({"RUNNER_MTBF_S": "soon", "RUNNER_NOTICE_COVERAGE": "nan"}) == (iv.PRIOR_MTBF_S, 0.0)
    assert math.isfinite(iv.auto_interval(0.5, *iv.from_env({"RUNNER_MTBF_S": "0"})))
