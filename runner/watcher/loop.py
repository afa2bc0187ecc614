"""The watcher's loop: poll, adopt, decide, submit (see the package's docstring for its guarantees)."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from runner.backends import Backend, get_backend
from runner.contract import STATE_HALTED
from runner.errors import (
    BackendError,
    RunnerError,
)
from runner.job_files import read_result
from runner.ledger import (
    LEASE_TTL,
    Attempt,
    Job,
    JobStateChanged,
    LeaseLost,
    Ledger,
)
from runner.policy import Move, Stop, as_halted, decide
from runner.states import ACTIVE_JOB, AttemptState, AttemptStatus, JobState
from runner.watcher.capacity import CapacitySteering
from runner.watcher.simulation import PreemptionSimulation
from runner.watcher.submitting import Submitting

log = logging.getLogger("runner.watcher")


def new_owner_id() -> str:
    """Return a watcher id unique across hosts and restarts: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def stale_after(interval: float) -> float:
    """Seconds without a finished pass after which a watcher counts as unhealthy."""
    return max(3 * interval, 10.0)


@dataclass
class Event:
    """Something the watcher did or saw, for the CLI to print."""

    job_id: str
    text: str
    at: float = field(default_factory=time.time)


class Watcher(Submitting, CapacitySteering, PreemptionSimulation):
    """Drive jobs in one ledger to completion."""

    def __init__(self, ledger: Ledger, job_ids: Iterable[str] | None = None,
                 on_event: Callable[[Event], None] | None = None,
                 submit_retries: int = 3, backend_factory: Callable[[str], Backend] | None = None,
                 owner: str | None = None, lease_ttl: float = LEASE_TTL) -> None:
        self.ledger = ledger
        self.owner = owner or new_owner_id()
        self.lease_ttl = lease_ttl
        self.held: frozenset[str] = frozenset()  # replaced, never mutated: the health thread reads it
        self.started_at = time.time()
        self.last_tick_at: float | None = None
        self.ticks = 0
        self.last_error = ""
        self._others: dict[str, str] = {}  # job id -> the other watcher last seen holding it
        self.job_ids = set(job_ids) if job_ids is not None else None
        self.on_event = on_event or (lambda e: log.info("%s: %s", e.job_id, e.text))
        self.submit_retries = submit_retries
        self._backend_factory = backend_factory
        self._backends: dict[str, Backend] = {}
        self._simulator: Any = None
        self._preemptor: Any = None
        self._warned_unknown: set[int] = set()

    # -- public ---------------------------------------------------------------------------
    def active_jobs(self) -> list[Job]:
        jobs = self.ledger.list_jobs(ACTIVE_JOB)
        return [j for j in jobs if self.job_ids is None or j.id in self.job_ids]

    def tick(self) -> None:
        """Do one pass over every active job whose lease this watcher holds or can take."""
        active = {j.id: j for j in self.active_jobs()}
        held = self.ledger.acquire_leases(active, self.owner, self.lease_ttl)
        self._note_leases(active, held)
        jobs = {i: j for i, j in active.items() if i in held}
        self._poll(jobs)
        for job in jobs.values():
            try:
                if not self.ledger.acquire_lease(job.id, self.owner, self.lease_ttl):
                    raise LeaseLost(f"the lease on {job.id} expired during this pass and another watcher took it")
                self._advance(job)
            except LeaseLost as exc:
                held.discard(job.id)
                self._emit(job.id, f"lease lost, leaving the job to its holder: {exc}")
            except JobStateChanged:
                continue  # moved by a user's halt or cancel meanwhile: decided again next pass
            except RunnerError as exc:
                self._emit(job.id, f"error: {exc}")
        still = {j.id for j in self.active_jobs()}
        self.ledger.release_leases(self.owner, held - still)  # ended jobs need no watcher
        self.held = frozenset(held & still)
        self.last_tick_at = time.time()
        self.ticks += 1

    def _note_leases(self, active: dict[str, Job], held: set[str]) -> None:
        for job_id in sorted(held - self.held):
            self._others.pop(job_id, None)
            self._emit(job_id, f"watching (lease held by {self.owner} for {self.lease_ttl:g}s, renewed each pass)")
        for lease in self.ledger.leases(sorted(set(active) - held)):
            if self._others.get(lease.job_id) != lease.owner:
                self._others[lease.job_id] = lease.owner
                until = time.strftime("%H:%M:%S", time.localtime(lease.expires_at))
                self._emit(lease.job_id, f"watched by another watcher ({lease.owner}, lease until {until}); "
                                         "taking over if it stops renewing")

    def health(self, interval: float = 2.0) -> dict[str, Any]:
        """Return this watcher's health: ok unless its last pass is older than ``stale_after``."""
        now = time.time()
        since = self.last_tick_at if self.last_tick_at is not None else self.started_at
        limit = stale_after(interval)
        return {"ok": now - since <= limit, "owner": self.owner, "pid": os.getpid(),
                "started_at": self.started_at, "last_tick_at": self.last_tick_at,
                "last_tick_age_s": None if self.last_tick_at is None else round(now - self.last_tick_at, 3),
                "stale_after_s": limit, "ticks": self.ticks, "jobs_held": sorted(self.held),
                "lease_ttl_s": self.lease_ttl, "last_error": self.last_error}

    def run(self, interval: float = 2.0, until_done: bool = True,
            should_stop: Callable[[], bool] = lambda: False, *, once: bool = False, keep_going: bool = False,
            after_pass: Callable[[], None] | None = None) -> None:
        """Pass every ``interval`` seconds: the one run loop of the CLI, the service, tests and benchmarks.

        Stops when no watched job is active (``until_done``), when ``should_stop()`` says so, or
        after one pass (``once``). With ``keep_going`` (a service) a pass that fails is kept in
        ``last_error``, reported, and tried again; otherwise its error propagates.
        """
        while not should_stop():
            try:
                self.tick()
                self.last_error = ""
            except RunnerError as exc:
                if not keep_going or once:
                    raise
                self.last_error = str(exc)
                self._emit("-", f"error: {exc}; trying again in {interval:g}s")
            if after_pass is not None:
                after_pass()
            if once or (until_done and not self.active_jobs()):
                return
            deadline = time.monotonic() + interval
            while not should_stop() and time.monotonic() < deadline:
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        """Release this watcher's leases (another watcher may take the jobs at once) and stop."""
        try:
            self.ledger.release_leases(self.owner)
        except RunnerError as exc:  # the leases expire on their own
            log.warning("could not release the leases of %s: %s", self.owner, exc)
        self.held = frozenset()
        for backend in self._backends.values():
            backend.close()
        if self._simulator is not None:
            self._simulator.stop()

    # -- polling --------------------------------------------------------------------------
    def _poll(self, jobs: dict[str, Job]) -> None:
        open_attempts = [a for a in self.ledger.open_attempts() if a.job_id in jobs]
        by_backend: dict[str, list[Attempt]] = {}
        for attempt in open_attempts:
            if attempt.backend_id is None:
                try:
                    self._adopt_or_submit(jobs[attempt.job_id], attempt)
                except LeaseLost as exc:
                    self._emit(attempt.job_id, f"lease lost, leaving the job to its holder: {exc}")
                except BackendError as exc:  # find() could not ask the backend: next pass
                    self._emit_once(attempt.id, attempt.job_id, f"attempt {attempt.number} waits for its "
                                                                f"backend: {exc}")
                continue
            by_backend.setdefault(attempt.backend, []).append(attempt)
        for name, attempts in by_backend.items():
            backend = self.backend(name)
            try:
                statuses = backend.poll([a.backend_id for a in attempts if a.backend_id])
            except BackendError as exc:
                statuses = {a.backend_id: AttemptStatus(AttemptState.UNKNOWN, str(exc))
                            for a in attempts if a.backend_id}
            for attempt in attempts:
                status = statuses.get(attempt.backend_id or "",
                                      AttemptStatus(AttemptState.UNKNOWN, "not in the poll answer"))
                self._record(attempt, status)

    def _record(self, attempt: Attempt, status: AttemptStatus) -> None:
        if status.state == AttemptState.UNKNOWN:
            if attempt.id not in self._warned_unknown:
                self._warned_unknown.add(attempt.id)
                self._emit(attempt.job_id, f"attempt {attempt.number}: state unknown ({status.reason}); "
                                           "not resubmitting, will poll again")
            if attempt.state != AttemptState.UNKNOWN:
                self.ledger.update_attempt(attempt.id, status)
            return
        self._warned_unknown.discard(attempt.id)
        job = self.ledger.get_job(attempt.job_id) if status.state.is_terminal() else None
        if job is not None and (as_halted(job.state, status.state, status.exit_code)
                                or self._store_says_halted(job, attempt, status)):
            why = {"switch": "stopped to switch capacity", "budget": "stopped at the budget"}.get(
                attempt.stop_requested or "", "halted by the user")
            status = AttemptStatus(AttemptState.HALTED, f"{why} ({status.reason})", status.exit_code,
                                   status.started_at, status.ended_at)
        if status.state != attempt.state:
            updated = self.ledger.update_attempt(attempt.id, status)
            text = f"attempt {attempt.number}{self._index(attempt)} {updated.state.value.lower()}"
            if status.reason and status.state.is_terminal():
                text += f": {status.reason}"
            self._emit(attempt.job_id, text)

    @staticmethod
    def _store_says_halted(job: Job, attempt: Attempt, status: AttemptStatus) -> bool:
        """Whether the attempt's own last commit answered the halt (progress.json: ``halted``, this attempt).

        For a PAUSING job whose attempt a backend reports FAILED with no exit code (moto's Batch drops
        them; so does Slurm 22.05's sacct --json): the checkpoint store is the witness.
        """
        if job.state != JobState.PAUSING or status.state not in (AttemptState.FAILED, AttemptState.PREEMPTED):
            return False
        from runner.summary import read_progress

        progress = read_progress(job, attempt.array_index) or {}
        return progress.get("state") == STATE_HALTED and progress.get("attempt") == attempt.number

    def _emit_once(self, attempt_id: int, job_id: str, text: str) -> None:
        """Say ``text`` once while an attempt keeps waiting (an outage may last many passes)."""
        if attempt_id not in self._warned_unknown:
            self._warned_unknown.add(attempt_id)
            self._emit(job_id, text)

    # -- deciding -------------------------------------------------------------------------
    def _advance(self, job: Job) -> None:
        """Carry out what :func:`runner.policy.decide` says for the job now (after steering it)."""
        attempts = self.ledger.attempts(job.id)
        if job.state in (JobState.QUEUED, JobState.RUNNING) and self._steer(job, attempts):
            job, attempts = self.ledger.get_job(job.id), self.ledger.attempts(job.id)
        for action in decide(job, attempts, time.time(), progressed=self._progressed(job, attempts)):
            if isinstance(action, Move):
                if action.final:
                    self._finish(job, action.state, action.message)
                    return
                job = self.ledger.set_job_state(job.id, action.state, action.message or job.message, owner=self.owner,
                                                expect=(job.state,))
                if action.message:
                    self._emit(job.id, f"job {action.state.value.lower()}: {action.message}")
            elif isinstance(action, Stop):
                self._stop(job, action)
            elif len(action.indexes) > 1 or action.why.startswith("first attempt"):
                self._first_attempts(job, list(action.indexes), action.why)
            else:
                self._next_attempt(job, action.indexes[0], action.why)
        for attempt in attempts:
            if attempt.state == AttemptState.RUNNING and job.state == JobState.RUNNING:
                self._maybe_preempt(job, attempt)
            elif attempt.state == AttemptState.PENDING and attempt.backend == "local" and self._preemptor:
                self._maybe_release(job, attempt)

    def _stop(self, job: Job, action: Stop) -> None:
        """Cancel one attempt on its backend; a failure is said once and tried again next pass."""
        attempt = self.ledger.get_attempt(action.attempt_id)
        if attempt.backend_id is None:  # reserved, never submitted (or not yet adopted): nothing runs
            self.ledger.update_attempt(attempt.id, AttemptStatus(
                AttemptState.HALTED if job.state == JobState.PAUSING else AttemptState.CANCELLED, action.why))
            return
        try:
            self.backend(attempt.backend).cancel(attempt.backend_id)
        except BackendError as exc:
            self._emit_once(attempt.id, job.id, f"attempt {attempt.number} could not be stopped yet ({exc}); "
                                                "trying again each pass")
            return
        self._emit_once(-attempt.id, job.id, f"stopping attempt {attempt.number}: {action.why}")

    def _finish(self, job: Job, state: JobState, message: str) -> None:
        if state == JobState.SUCCEEDED:
            self.ledger.set_result(job.id, read_result(job))
        self.ledger.set_job_state(job.id, state, message, owner=self.owner, expect=(job.state,))
        self._emit(job.id, f"job {state.value.lower()}: {message}")

    # -- helpers --------------------------------------------------------------------------
    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            if self._backend_factory is not None:
                self._backends[name] = self._backend_factory(name)
            elif name == "local":
                self._backends[name] = get_backend("local", simulator_url=self._simulator_url())
            else:
                self._backends[name] = get_backend(name)
        return self._backends[name]

    def _emit(self, job_id: str, text: str) -> None:
        self.on_event(Event(job_id, text))

    @staticmethod
    def _index(attempt: Attempt) -> str:
        return f" [index {attempt.array_index}]" if attempt.array_index else ""


