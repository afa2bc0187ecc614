"""The watcher's submitting: each reserved attempt runs once, on the backend, with its spec's secrets.

Mixed into :class:`runner.watcher.Watcher`: reserve the next attempt (or the first ones of an
array), submit under the job's lease with the submit mark renewed before every try, retry a
backend that is unavailable without charging the attempt, fail at once what the service
refuses, and adopt (through the backend's ``find``) an attempt that an earlier watcher reserved
but never recorded as submitted.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from runner.backends import Backend, Submission
from runner.cost.interval import estimate_from_ledger
from runner.errors import BackendUnavailable, LedgerError, SubmitError
from runner.job_files import clear_halt, resolve_secrets
from runner.ledger import (
    Attempt,
    AttemptStillOpen,
    Job,
    JobNotActive,
    LeaseLost,
    Ledger,
    SubmitInProgress,
)
from runner.spec import JobSpec
from runner.states import AttemptState, AttemptStatus
from runner.watcher.simulation import sim_cloud

log = logging.getLogger("runner.watcher")


class Submitting:
    """Mixed into :class:`runner.watcher.Watcher`, which supplies the ledger, backends and events."""

    ledger: Ledger
    owner: str
    lease_ttl: float
    submit_retries: int
    _warned_unknown: set[int]

    if TYPE_CHECKING:  # supplied by the class this is mixed into
        def backend(self, name: str) -> Backend:
            ...

        def _emit(self, job_id: str, text: str) -> None:
            ...

        def _emit_once(self, attempt_id: int, job_id: str, text: str) -> None:
            ...

        def _capacity(self, job: Job, spec: JobSpec, index: int) -> str:
            ...

        def _preemptor_for(self) -> Any:
            ...

        @staticmethod
        def _index(attempt: Attempt) -> str:
            ...

    def _adopt_or_submit(self, job: Job, attempt: Attempt) -> None:
        """An attempt reserved but not recorded as submitted: adopt it where the backend has it, else submit.

        While another watcher's submit of it may be in flight (its mark is younger than the grace
        period), wait: it records the id, or its mark grows old and this pass asks the backend.
        """
        if attempt.submitting_by not in (None, self.owner):
            age = time.time() - (attempt.submitting_at or 0)
            grace = self.ledger.submit_grace(attempt.submitting_by)
            if age < grace:
                self._emit_once(attempt.id, job.id, f"attempt {attempt.number} is being submitted by "
                                                    f"{attempt.submitting_by}; waiting up to {grace - age:.0f}s "
                                                    "before asking the backend")
                return
        backend = self.backend(attempt.backend)
        found = backend.find(self._submission(resolve_secrets(job.spec(), job), job, attempt))
        if found is not None:
            self.ledger.record_submitted(attempt.id, found)
            self._emit(job.id, f"adopted attempt {attempt.number} ({found[:12]}) started by an earlier watcher")
            return
        self._submit(job, attempt)

    def _next_attempt(self, job: Job, index: int, why: str) -> None:
        spec = job.spec()
        previous = [a for a in self.ledger.attempts(job.id) if a.array_index == index]
        if previous and previous[-1].stop_requested == "switch":  # its switch is done: the next one runs on
            clear_halt(job, spec, index)
        try:
            attempt = self.ledger.reserve_attempt(job.id, index, owner=self.owner,
                                                  capacity=self._capacity(job, spec, index))
        except (AttemptStillOpen, JobNotActive):
            return  # another pass (or watcher) got there first, or the job was halted or cancelled meanwhile
        on = f" on {attempt.capacity}" if spec.capacity_policy != "spot-only" else ""
        self._emit(job.id, f"{why}: starting attempt {attempt.number}{self._index(attempt)}{on}")
        self._submit(job, attempt)

    def _first_attempts(self, job: Job, indexes: list[int], why: str) -> None:
        attempts = []
        spec = job.spec()
        for index in indexes:
            try:
                attempts.append(self.ledger.reserve_attempt(job.id, index, owner=self.owner,
                                                            capacity=self._capacity(job, spec, index)))
            except (AttemptStillOpen, JobNotActive):
                continue
        if attempts:
            self._emit(job.id, why)
            self._submit_all(job, attempts)

    def _submit(self, job: Job, attempt: Attempt) -> None:
        self._submit_all(job, [attempt])

    def _submission(self, spec: JobSpec, job: Job, attempt: Attempt) -> Submission:
        uri = spec.checkpoint_uri_for(attempt.array_index, job.id)
        env = spec.container_env(job.id, attempt.number, uri)
        if spec.simulate_preemption is not None and attempt.backend == "local":
            env["RUNNER_NOTICE"] = sim_cloud(spec)
            self._preemptor_for().prepare(attempt.key, sim_cloud(spec))
        return Submission(spec=spec, job_id=job.id, key=attempt.key, attempt=attempt.number,
                          array_index=attempt.array_index, checkpoint_uri=uri, env=env, capacity=attempt.capacity)

    def _submit_all(self, job: Job, attempts: list[Attempt]) -> None:
        """Submit attempts of one job on one backend (several at once for array children)."""
        if not self.ledger.acquire_lease(job.id, self.owner, self.lease_ttl):
            raise LeaseLost(f"the lease on {job.id} went to another watcher before submitting; it submits")
        try:
            spec = resolve_secrets(job.spec(), job)
            subs = [self._submission(spec, job, a) for a in attempts]
            if spec.checkpoint.every == "auto":  # the newest preemption history for Young-Daly
                estimate = estimate_from_ledger(self.ledger, spec)
                log.info("%s: every: auto with %s", job.id, estimate.describe())
                for sub in subs:
                    sub.env.update(estimate.env())
            backend = self.backend(attempts[0].backend)
            for try_ in Retrying(stop=stop_after_attempt(self.submit_retries), reraise=True,
                                 wait=wait_exponential(multiplier=0.5, max=4),
                                 retry=retry_if_exception_type(BackendUnavailable)):
                with try_:
                    # Marked before each try, under the lease (renewed), with time left on it: another
                    # watcher waits the submit grace from this try, not from the first.
                    if try_.retry_state.attempt_number > 1 and not self.ledger.acquire_lease(
                            job.id, self.owner, self.lease_ttl):
                        raise LeaseLost(f"the lease on {job.id} went to another watcher between submit tries")
                    self.ledger.begin_submit([a.id for a in attempts], self.owner, min(10.0, self.lease_ttl / 3))
                    ids = backend.submit_many(subs) if len(subs) > 1 else [backend.submit(subs[0])]
        except SubmitInProgress as exc:
            self._emit_once(attempts[0].id, job.id, f"not submitting: {exc}")
            return
        except BackendUnavailable as exc:  # not the attempt's fault: it stays reserved, tried next pass
            self._emit_once(attempts[0].id, job.id, f"attempt {attempts[0].number} waits for its backend: {exc}")
            return
        except (SubmitError, RetryError) as exc:  # the service refused the request: failed at once
            for attempt in attempts:
                self.ledger.update_attempt(attempt.id, AttemptStatus(AttemptState.FAILED, f"submit failed: {exc}"))
            self._emit(job.id, f"attempt {attempts[0].number} could not be submitted: {exc}")
            return
        for attempt, backend_id in zip(attempts, ids):
            self._warned_unknown.discard(attempt.id)
            try:
                self.ledger.record_submitted(attempt.id, backend_id)
            except LedgerError as exc:  # another watcher recorded its own submit meanwhile: ours is extra
                self._emit(job.id, f"attempt {attempt.number}: {exc}; stopping the extra {backend_id[:24]}")
                backend.cancel(backend_id)
