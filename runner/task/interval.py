"""``every: auto``: the checkpoint interval from the Young-Daly rule, re-estimated as a job runs.

The rule and what the task measures live here (the task side imports this module inside its
container); the estimate of the preemption process from a ledger's history is the control plane's,
in :mod:`runner.cost.interval`.

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
from typing import Any

from runner import contract

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


def from_env(env: dict[str, Any]) -> tuple[float, float]:
    """(MTBF, coverage) from the contract's variables, falling back to the priors."""
    def num(name: str, default: float) -> float:
        try:
            value = float(env.get(name, default))
        except (TypeError, ValueError):
            return default
        return value if math.isfinite(value) and value >= 0 else default

    return num(contract.MTBF_S, PRIOR_MTBF_S) or PRIOR_MTBF_S, min(num(contract.NOTICE_COVERAGE, 0.0), 1.0)


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
