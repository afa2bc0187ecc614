"""Service units: a Slurm job's machine time in core- or GPU-hours, priced when the spec gives a unit price."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runner.backends.slurm import SlurmBackend
from runner.cost.accounting import ServiceUnits
from runner.ledger import Ledger
from runner.spec import spec_from_dict
from runner.states import AttemptState, AttemptStatus
from runner.summary import summarize


def spec(slurm: dict[str, Any], **changes: Any) -> Any:
    return spec_from_dict({"name": "su", "image": "localhost/runner-cifar:latest", "backend": "slurm",
                           "checkpoint": {"uri": "file:///tmp/none"}, "resources": {"cpus": 4, "memory": "2Gi"},
                           "slurm": {"runtime": "docker", **slurm}, **changes})


def test_rates() -> None:
    assert SlurmBackend.service_units(spec({})) == ServiceUnits(4.0, 4.0, "core-hours", None, "USD", "slurm:local:default")
    gpu = SlurmBackend.service_units(spec({"partition": "preempt"}, resources={"cpus": 4, "memory": "2Gi", "gpus": 2}))
    assert (gpu.per_hour, gpu.unit, gpu.machine) == (2.0, "GPU-hours", "slurm:local:preempt")
    custom = SlurmBackend.service_units(spec({"su_per_hour": 0.5, "on_demand_su_per_hour": 2, "su_price": 0.1,
                                              "currency": "EUR", "login": "hpc"}))
    price = custom.as_price()
    assert custom.unit == "SU" and price is not None
    assert (price.spot_per_hour, price.on_demand_per_hour, price.currency) == (0.05, 0.2, "EUR")
    assert price.machine == "slurm:hpc:default" and "per service unit" in price.source


@pytest.mark.parametrize(("slurm", "money"), [({}, False), ({"su_price": 0.03}, True)])
def test_status_accounts_in_service_units(tmp_path: Path, slurm: dict[str, Any], money: bool) -> None:
    with Ledger(tmp_path / "ledger.db") as ledger:
        job_id = ledger.create_job(spec({"on_demand_su_per_hour": 8, **slurm}))
        for number, state in ((1, AttemptState.PREEMPTED), (2, AttemptState.SUCCEEDED)):
            attempt = ledger.reserve_attempt(job_id, 0)
            ledger.record_submitted(attempt.id, str(100 + number))
            start = 1_000_000.0 + number * 7200
            ledger.update_attempt(attempt.id, AttemptStatus(state, "x", 0, start, start + 3600))
        job = ledger.get_job(job_id)
        cost = summarize(job, ledger.attempts(job_id), None)["cost"]
    units = cost["service_units"]
    assert units["unit"] == "core-hours" and units["used"] == 8.0  # two hours of a 4-core job
    assert units["on_demand_per_hour"] == 8
    if money:
        assert cost["spend"] == pytest.approx(8 * 0.03) and cost["price"]["machine"] == "slurm:local:default"
        assert not cost["notes"]
    else:
        assert cost["spend"] is None and not cost["notes"]  # no "no price" note: SUs are the bill


def test_on_demand_attempts_count_at_the_normal_partitions_rate() -> None:
    from dataclasses import replace

    from runner.cost.accounting import AttemptTimes, account

    times = [AttemptTimes(1, 0, "PREEMPTED", 0.0, 3600.0, capacity="spot"),
             AttemptTimes(2, 0, "SUCCEEDED", 3600.0, 7200.0, capacity="on-demand")]
    acct = account(times)
    acct = replace(acct, units=ServiceUnits(1.0, 4.0, "core-hours"))
    assert acct.service_units()["used"] == 5.0  # one hour at 1 SU/h, one at 4

