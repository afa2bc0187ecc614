"""``every: auto``: the checkpoint interval from the Young-Daly rule, re-estimated as a job runs.

With checkpoint cost ``C`` (seconds of training lost per checkpoint) and mean time ``M`` between
failures that lose work, the interval that wastes least is, to first order, Young's
``tau = sqrt(2 C M)``; Daly's higher-order form, used here, adds
``tau = sqrt(2 C M) * (1 + sqrt(C / 2M) / 3 + C / 18M) - C`` (and ``tau = M`` once ``C >= 2M``).

Where the inputs come from:

- ``C`` is measured by the task itself: the loop's stall while handing a checkpoint to the writer,
  plus the slowdown of the steps that ran while the writer persisted it in the background.
- ``M`` comes from this ledger's history for the same machine (cloud, region, instance type):
  machine time of ended attempts over the preemptions among them, shrunk towards a stated prior
  (:data:`PRIOR_MTBF_S`, weighted as :data:`PRIOR_EVENTS` preemptions) so a new machine type
  starts from the prior and moves to its own record as attempts end. The runner passes the
  estimate to every attempt (``RUNNER_MTBF_S``), so each resubmission uses the newest history.
- Notices. A preemption whose notice came and whose parachute checkpoint committed (exit 75)
  loses almost nothing, so only the others count: their rate is ``(1 - p) / M``, where ``p`` is the
  share of past preemptions on this machine that committed after a notice. ``p`` starts from a
  prior of :data:`PRIOR_UNNOTICED` preemptions *without* a notice, so a notice source that has not
  proven itself does not stretch the interval, and a notice that stops coming pulls ``p`` back
  down as those attempts end. The stretch is capped (``p <= MAX_COVERAGE``), because a notice that
  fails only rarely still fails: the interval stays finite, within :data:`MAX_INTERVAL_S`.

Pure standard library: the task side imports it inside containers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.ledger import Ledger
    from runner.spec import JobSpec

#: Prior mean time between preemptions: one per 2 hours of machine time (spot GPUs in busy regions).
PRIOR_MTBF_S = 2 * 3600.0
#: How many observed preemptions the prior weighs as.
PRIOR_EVENTS = 1.0
#: Prior preemptions without a (committed) notice that the notice coverage starts from.
PRIOR_UNNOTICED = 2.0
#: Coverage above this is treated as this: at most a sqrt(10) ~ 3.2x longer interval.
MAX_COVERAGE = 0.9
MIN_INTERVAL_S = 10.0
MAX_INTERVAL_S = 3600.0


def young(cost_s: float, mtbf_s: float) -> float:
    """Young's first-order optimum ``sqrt(2 C M)``."""
    return math.sqrt(2.0 * max(cost_s, 0.0) * max(mtbf_s, 0.0))


def daly(cost_s: float, mtbf_s: float) -> float:
    """Daly's higher-order optimum (equals ``M`` once ``C >= 2M``)."""
    c, m = max(cost_s, 0.0), max(mtbf_s, 1e-9)
    if c >= 2 * m:
        return m
    x = c / (2 * m)
    return math.sqrt(2 * c * m) * (1 + math.sqrt(x) / 3 + x / 9) - c


def effective_mtbf(mtbf_s: float, coverage: float) -> float:
    """Mean time between preemptions that lose work, when a share ``coverage`` of them is noticed in time."""
    p = min(max(coverage, 0.0), MAX_COVERAGE)
    return mtbf_s / (1.0 - p)


def auto_interval(cost_s: float, mtbf_s: float, coverage: float = 0.0,
                  lo: float = MIN_INTERVAL_S, hi: float = MAX_INTERVAL_S) -> float:
    """The ``every: auto`` interval in seconds: Daly's optimum for the effective MTBF, within [lo, hi]."""
    return min(max(daly(cost_s, effective_mtbf(mtbf_s, coverage)), lo), hi)


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
        return {"RUNNER_MTBF_S": f"{self.mtbf_s:.0f}", "RUNNER_NOTICE_COVERAGE": f"{self.coverage:.3f}"}

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
    """The estimate for ``spec``'s machine from every ended attempt in the ledger on the same machine."""
    from runner.cost.prices import price_table
    from runner.states import AttemptState

    try:
        table = price_table()
    except Exception:  # noqa: BLE001 - a broken prices file is reported where prices are used
        table = None
    key = machine_key(spec, table)
    machine_s, preemptions, noticed = 0.0, 0, 0
    for job in ledger.list_jobs():
        try:
            if machine_key(job.spec(), table) != key:
                continue
        except Exception:  # noqa: BLE001 - a stored spec this version cannot read is skipped
            continue
        for a in ledger.attempts(job.id):
            if a.started_at is None or a.ended_at is None:
                continue
            machine_s += max(0.0, a.ended_at - a.started_at)
            if a.state == AttemptState.PREEMPTED:
                preemptions += 1
                noticed += a.exit_code == 75
    return estimate(machine_s, preemptions, noticed, key)


def from_env(env: dict[str, Any]) -> tuple[float, float]:
    """(MTBF, coverage) from the contract's variables, falling back to the priors."""
    def num(name: str, default: float) -> float:
        try:
            value = float(env.get(name, default))
        except (TypeError, ValueError):
            return default
        return value if math.isfinite(value) and value >= 0 else default

    return num("RUNNER_MTBF_S", PRIOR_MTBF_S) or PRIOR_MTBF_S, min(num("RUNNER_NOTICE_COVERAGE", 0.0), 1.0)


class CheckpointCost:
    """Measure ``C`` inside the task: stall per checkpoint plus the slowdown while the writer persists.

    Feed it every step's duration (and whether a background write was in flight) and every
    checkpoint's stall. ``C = mean stall + (busy steps per checkpoint) * (mean busy step - mean idle step)``.
    """

    def __init__(self) -> None:
        self.checkpoints = 0
        self.stall_s = 0.0
        self._idle = [0.0, 0]   # seconds, steps without a write in flight
        self._busy = [0.0, 0]   # seconds, steps with one

    def step(self, seconds: float, busy: bool) -> None:
        acc = self._busy if busy else self._idle
        acc[0] += seconds
        acc[1] += 1

    def checkpoint(self, stall_s: float) -> None:
        self.checkpoints += 1
        self.stall_s += stall_s

    @property
    def cost_s(self) -> float | None:
        """The measured cost of one checkpoint, or None before the first checkpoint."""
        if not self.checkpoints:
            return None
        cost = self.stall_s / self.checkpoints
        if self._idle[1] and self._busy[1]:
            slower = self._busy[0] / self._busy[1] - self._idle[0] / self._idle[1]
            cost += max(0.0, slower) * self._busy[1] / self.checkpoints
        return cost
