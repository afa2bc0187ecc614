"""The watcher's steering of jobs with a deadline or a budget (decisions in :mod:`runner.steering`).

Before :func:`runner.policy.decide` runs on a job, :meth:`CapacitySteering._steer` checks its budget
(over it: the job pauses, each attempt is asked to halt) and each open attempt's capacity (spot or
on-demand): a switch halts the attempt with a checkpoint (``HALT`` why=switch) or cancels one still
pending. New attempts take the capacity :func:`runner.steering.capacity_for` chooses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner.errors import BackendError
from runner.job_files import write_halt
from runner.ledger import Attempt, Job, Ledger
from runner.spec import JobSpec
from runner.states import AttemptState, AttemptStatus, JobState

if TYPE_CHECKING:
    from runner.backends import Backend


class CapacitySteering:
    """Mixed into :class:`runner.watcher.Watcher`, which supplies the ledger, backends and events."""

    ledger: Ledger
    owner: str

    if TYPE_CHECKING:  # supplied by the class this is mixed into
        def backend(self, name: str) -> Backend:
            ...

        def _emit(self, job_id: str, text: str) -> None:
            ...

        def _preemptor_for(self) -> Any:
            ...

    def _progressed(self, job: Job, attempts: list[Attempt]) -> frozenset[tuple[int, int]]:
        """The (index, number) of preempted attempts that committed progress (charged to no budget).

        Read only when a preempted attempt waits for its successor: then its budget is counted.
        """
        latest = {a.array_index: a for a in attempts}
        waiting = sorted(i for i, a in latest.items() if a.state == AttemptState.PREEMPTED)
        if not waiting:
            return frozenset()
        from runner.summary import read_progress

        spec = job.spec()
        done: set[tuple[int, int]] = set()
        for index in waiting:
            history = (read_progress(job, index, spec) or {}).get("attempts") or {}
            for number, h in history.items():
                if isinstance(h, dict) and str(number).isdigit() and \
                        (h.get("checkpoint_step") or 0) > (h.get("resumed_from") or 0):
                    done.add((index, int(number)))
        return frozenset(done)

    def _steer(self, job: Job, attempts: list[Attempt]) -> bool:
        """Keep a job with a deadline or a budget on course (:mod:`runner.steering`); True if it changed."""
        spec = job.spec()
        if spec.capacity_policy == "spot-only" and spec.budget is None:
            return False
        from runner.steering import over_budget, steer
        from runner.summary import read_progress

        progress = read_progress(job, 0, spec)
        why = over_budget(job, spec, attempts, progress)
        open_ = [a for a in attempts if not a.state.is_terminal()]
        if why is not None:
            for attempt in open_:
                self.ledger.request_stop(attempt.id, "budget")
            write_halt(job, spec, "budget")
            self.ledger.set_job_state(job.id, JobState.PAUSING, why, owner=self.owner, expect=(job.state,))
            self._emit(job.id, f"job pausing: {why}")
            return True
        changed = False
        for attempt in open_:
            change = steer(job, spec, attempt, read_progress(job, attempt.array_index, spec),
                           spot_available=self._spot_known(job, spec))
            if change is None:
                continue
            self.ledger.request_stop(attempt.id, "switch")
            self._emit(job.id, f"attempt {attempt.number} ({attempt.capacity}): {change.why}")
            if change.commit:
                write_halt(job, spec, "switch", attempt.array_index)
            elif attempt.backend_id is None:
                self.ledger.update_attempt(attempt.id, AttemptStatus(AttemptState.CANCELLED, change.why))
            else:
                try:
                    self.backend(attempt.backend).cancel(attempt.backend_id)
                except BackendError as exc:
                    self._emit(job.id, f"attempt {attempt.number} could not be stopped yet ({exc}); next pass")
            changed = True
        return changed

    def _capacity(self, job: Job, spec: JobSpec, index: int) -> str:
        if spec.capacity_policy in ("spot-only", "on-demand"):
            return "spot" if spec.capacity_policy == "spot-only" else "on-demand"
        from runner.steering import capacity_for
        from runner.summary import read_progress

        return capacity_for(job, spec, read_progress(job, index, spec), spot_available=self._spot_known(job, spec))

    def _spot_known(self, job: Job, spec: JobSpec) -> bool | None:
        """Whether spot capacity is there now, where it is known: a local job's simulated outages."""
        plan = spec.simulate_preemption
        if plan is None or not plan.outages or job.backend != "local":
            return None
        return bool(self._preemptor_for().available(job, plan))
