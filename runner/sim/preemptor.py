"""Preempt local attempts on purpose, the way a spot market would, driven by the watcher's loop.

The watcher calls :meth:`Preemptor.prepare` right before submitting an attempt (so the
simulator's namespace imitates the right cloud from the container's first request) and
:meth:`Preemptor.step` for each RUNNING attempt of a job whose spec has ``simulate_preemption``.

When an attempt is due (``started_at + every``, or ``started_at + Exp(mean)`` drawn once per
attempt from a Random seeded by the seed, the job, the array index and the attempt number):

- parachute: the simulator announces the preemption in the attempt's namespace; once the
  notice window has passed and the container still runs, it is SIGKILLed, like a cloud's hard
  stop. Without a simulator the notice is a SIGTERM instead.
- bus: the container is SIGKILLed at once, with no notice.
- mixed: odd attempt numbers get a parachute, even ones a bus, so both happen.

``outages`` (spans of time from the job's submission) make spot capacity run out: a spot attempt
submitted during one is created but held (PENDING, waiting for a machine) until it ends
(:meth:`Preemptor.hold`, :meth:`Preemptor.release`), and a running spot attempt is preempted when
one begins. On-demand attempts are never held nor preempted.

State lives in memory; a restarted watcher re-derives it from the attempt's times (a parachute
whose notice cannot be confirmed gets a fresh notice, never a kill without one). At most
``count`` preemptions are started per job, counting ``job.preemptions_used`` as done.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runner.states import AttemptState

if TYPE_CHECKING:
    from runner.backends.local import LocalBackend
    from runner.ledger import Attempt, Job
    from runner.sim.metadata import MetadataSimulator
    from runner.spec import SimulatePreemption

log = logging.getLogger("runner.sim.preemptor")


@dataclass
class _Plan:
    """What the preemptor has decided and done for one attempt."""

    job_id: str
    key: str
    backend_id: str
    due_at: float
    mode: str  # "parachute" or "bus"
    noticed_at: float | None = None
    done: bool = False


@dataclass
class _JobCount:
    """Preemptions of one job: those charged when first seen, plus those started since."""

    baseline: int
    started: int = 0


class Preemptor:
    """Decide when each running local attempt is preempted, and do it."""

    def __init__(self, backend: LocalBackend, simulator: MetadataSimulator | None,
                 clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.simulator = simulator
        self.clock = clock
        self._plans: dict[str, _Plan] = {}
        self._jobs: dict[str, _JobCount] = {}

    def prepare(self, attempt_key: str, cloud: str) -> None:
        """Make the attempt's simulator namespace imitate ``cloud``; call right before submit."""
        if self.simulator is not None:
            self.simulator.configure(namespace=attempt_key, cloud=cloud)

    def due_at(self, job: Job, attempt: Attempt, plan: SimulatePreemption) -> float | None:
        """Return when this attempt is to be preempted (from its start, else its submission): its
        period's end, or the next outage's start, whichever comes first."""
        started = attempt.started_at or attempt.submitted_at
        if started is None:
            return None
        due = [started + rng_due for rng_due in self._periodic(job, attempt, plan)]
        due += [job.created_at + a for a, _ in plan.outage_spans if job.created_at + a >= started]
        return min(due) if due else None

    @staticmethod
    def _periodic(job: Job, attempt: Attempt, plan: SimulatePreemption) -> list[float]:
        if plan.every_s is not None:
            return [plan.every_s]
        if plan.mean_s:
            rng = random.Random(f"{plan.seed}:{job.id}:{attempt.array_index}:{attempt.number}")
            return [rng.expovariate(1.0 / plan.mean_s)]
        return []

    def available(self, job: Job, plan: SimulatePreemption, now: float | None = None) -> bool:
        """Whether simulated spot capacity is there now (no outage of ``plan`` is going on)."""
        t = (self.clock() if now is None else now) - job.created_at
        return not any(a <= t < b for a, b in plan.outage_spans)

    def hold(self, job: Job, plan: SimulatePreemption, capacity: str) -> bool:
        """Whether a new attempt of ``capacity`` must wait for a machine (spot, during an outage)."""
        return capacity == "spot" and not self.available(job, plan)

    def release(self, job: Job, attempt: Attempt, plan: SimulatePreemption) -> str | None:
        """Start a held spot attempt once its outage is over; return what was done, or None."""
        if attempt.backend_id is None or attempt.state is not AttemptState.PENDING or attempt.started_at:
            return None
        if not self.available(job, plan) or not self.backend.start(attempt.backend_id):
            return None
        return f"{attempt.key}: spot capacity is back; started"

    def step(self, job: Job, attempt: Attempt, plan: SimulatePreemption, cloud: str) -> str | None:
        """Preempt the attempt if its time has come; return what was done, or None."""
        backend_id = attempt.backend_id
        if backend_id is None or attempt.state is not AttemptState.RUNNING or attempt.capacity != "spot":
            return None
        state = self._plans.get(attempt.key)
        if state is None:
            due = self.due_at(job, attempt, plan)
            if due is None:
                return None
            state = _Plan(job.id, attempt.key, backend_id, due, _mode_for(plan.mode, attempt.number))
            self._plans[attempt.key] = state
        if state.done:
            return None
        now = self.clock()
        if state.noticed_at is None:
            if now < state.due_at or not self._may_start(job, plan):
                return None
            self._jobs[job.id].started += 1
            if state.mode == "bus":
                return self._kill(state, "without notice (bus)")
            return self._notice(state, plan.notice_s, cloud, now)
        if now < state.noticed_at + plan.notice_s:
            return None
        return self._kill(state, f"after its {plan.notice_s:g}s notice (parachute)")

    def forget(self, attempt_key: str) -> None:
        """Drop what is remembered about an attempt that has ended."""
        self._plans.pop(attempt_key, None)

    def _may_start(self, job: Job, plan: SimulatePreemption) -> bool:
        """Return True while the job's preemption count allows starting one more."""
        count = self._jobs.setdefault(job.id, _JobCount(job.preemptions_used))
        if plan.count is None:
            return True
        return max(job.preemptions_used, count.baseline + count.started) < plan.count

    def _notice(self, state: _Plan, notice_s: float, cloud: str, now: float) -> str | None:
        key = state.key
        if self.simulator is None:
            state.noticed_at = now
            if not self.backend.notify(state.backend_id):  # it ended on its own: nothing to count
                state.done = True
                self._jobs[state.job_id].started -= 1
                return None
            return f"{key}: preemption notice by SIGTERM, {notice_s:g}s before the kill"
        pending = self.simulator.state(key)
        if pending.get("pending") and pending.get("deadline"):  # given before a watcher restart
            left = float(pending["deadline"]) - time.time()  # the simulator keeps wall-clock time
            state.noticed_at = now + left - notice_s
            return None
        self.simulator.preempt(cloud, notice_s, namespace=key)
        state.noticed_at = now
        return f"{key}: {cloud} preemption notice, {notice_s:g}s before the kill"

    def _kill(self, state: _Plan, how: str) -> str:
        state.done = True
        if not self.backend.preempt(state.backend_id, state.mode):
            if state.mode == "bus":  # it ended on its own, not by this preemption: nothing to count
                self._jobs[state.job_id].started -= 1
            return f"{state.key}: had already stopped when its preemption came"
        return f"{state.key}: killed {how}"


def _mode_for(mode: str, number: int) -> str:
    """Return parachute or bus; ``mixed`` alternates (odd attempts parachute, even ones bus)."""
    if mode == "mixed":
        return "parachute" if number % 2 else "bus"
    return mode


__all__ = ["Preemptor"]
