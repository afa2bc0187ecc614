"""``every: auto``'s inputs from this ledger: the preemption process on each machine, with a prior.

``M`` (the mean time between preemptions) comes from the ledger's history for the same machine
(cloud, region, instance type): machine time of ended attempts over the preemptions among them,
shrunk towards a stated prior (:data:`PRIOR_MTBF_S`, weighted as :data:`PRIOR_EVENTS`
preemptions), so a new machine type starts from the prior and moves to its own record as attempts
end. ``p`` (notice coverage) is the share of those preemptions that committed after a notice,
starting from :data:`PRIOR_UNNOTICED` preemptions without one. The rule itself (Young-Daly) is in
:mod:`runner.task.interval`; the runner passes the estimate to every attempt (``RUNNER_MTBF_S``,
``RUNNER_NOTICE_COVERAGE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner import contract
from runner.task.interval import (  # noqa: F401 - the rule, re-exported for the control plane
    MAX_COVERAGE,
    MAX_INTERVAL_S,
    MIN_INTERVAL_S,
    PRIOR_EVENTS,
    PRIOR_MTBF_S,
    PRIOR_UNNOTICED,
    CheckpointCost,
    auto_interval,
    daly,
    effective_mtbf,
    from_env,
    young,
)

if TYPE_CHECKING:
    from runner.ledger import Ledger
    from runner.spec import JobSpec


@dataclass(frozen=True)
class Estimate:
    """The preemption process on one machine, as this ledger has seen it (with the prior)."""

    machine: str
    mtbf_s: float
    coverage: float
    machine_s: float   # observed machine time of ended attempts
    preemptions: int   # observed preemptions among them
    noticed: int       # those that committed a checkpoint after a notice (exit 75)

    def env(self) -> dict[str, str]:
        """The contract's variables that carry the estimate to a task."""
        return {contract.MTBF_S: f"{self.mtbf_s:.0f}", contract.NOTICE_COVERAGE: f"{self.coverage:.3f}"}

    def describe(self) -> str:
        seen = (f"{self.preemptions} preemptions in {self.machine_s / 3600:.2f} machine-hours"
                if self.machine_s else "no history yet")
        return (f"{self.machine}: MTBF {self.mtbf_s / 60:.1f} min, notice coverage {self.coverage:.2f} "
                f"({seen}; prior {PRIOR_MTBF_S / 3600:g} h)")


def estimate(machine_s: float, preemptions: int, noticed: int, machine: str = "?") -> Estimate:
    """Combine observed counts with the priors."""
    mtbf = (PRIOR_MTBF_S * PRIOR_EVENTS + machine_s) / (PRIOR_EVENTS + preemptions)
    coverage = noticed / (PRIOR_UNNOTICED + preemptions)
    return Estimate(machine, mtbf, coverage, machine_s, preemptions, noticed)


def machine_key(spec: JobSpec, table: Any = None) -> str:
    """The machine a spec runs on, for grouping history: ``cloud:region:type``, or the backend's name."""
    try:
        from runner.cost.prices import machine_of, price_table

        found = machine_of(spec, table if table is not None else price_table())
    except Exception:  # noqa: BLE001 - an unpriced machine still has a history under its backend
        found = None
    if found is None:
        return spec.backend
    return ":".join(found)


def estimate_from_ledger(ledger: Ledger, spec: JobSpec) -> Estimate:
    """The estimate for ``spec``'s machine from every ended attempt in the ledger on the same machine.

    One SQL query over the attempts of the jobs recorded with the same machine (``jobs.machine``,
    set when a job is submitted; older rows are filled in once, here).
    """
    from runner.cost.prices import price_table

    try:
        table = price_table()
    except Exception:  # noqa: BLE001 - a broken prices file is reported where prices are used
        table = None
    ledger.fill_machines(lambda job_spec: machine_key(job_spec, table))
    key = machine_key(spec, table)
    machine_s, preemptions, noticed = ledger.machine_history(key, contract.EXIT_PREEMPTED)
    return estimate(machine_s, preemptions, noticed, key)
