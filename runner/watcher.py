"""The one loop that keeps jobs alive: poll, classify, resubmit, within budgets.

Each pass (:meth:`Watcher.tick`):

1. polls every open attempt, one batched call per backend, and stores what it hears;
   a poll that fails gives UNKNOWN, which never leads to a resubmission;
2. adopts attempts reserved but never recorded as submitted (a watcher killed mid-submit):
   the backend finds them by their deterministic key, else they are submitted now;
3. for each active job and array index, looks at the newest attempt: a PREEMPTED one is
   followed by the next attempt on the same checkpoint URI while the preemption budget lasts,
   a FAILED one while the failure budget lasts; budgets are recounted from the attempts, so
   a crash between two steps never double-charges;
4. asks the preemption simulator (local runs only) whether to preempt a running attempt.

The ledger is the only state; a watcher killed at any instant and started again carries on.
The ledger's one-open-attempt rule makes a second concurrent attempt impossible.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from runner.backends import Backend, Submission, get_backend
from runner.errors import BackendError, RunnerError, SubmitError
from runner.ledger import Attempt, AttemptStillOpen, Job, Ledger
from runner.spec import JobSpec, load_spec
from runner.states import AttemptState, AttemptStatus, JobState

log = logging.getLogger("runner.watcher")
SIM_PORT = int(os.environ.get("RUNNER_SIM_PORT", "18169"))
REDACTED = "***"


@dataclass
class Event:
    """Something the watcher did or saw, for the CLI to print."""

    job_id: str
    text: str
    at: float = field(default_factory=time.time)


class Watcher:
    """Drive jobs in one ledger to completion."""

    def __init__(self, ledger: Ledger, job_ids: Iterable[str] | None = None,
                 on_event: Callable[[Event], None] | None = None,
                 submit_retries: int = 3, backend_factory: Callable[[str], Backend] | None = None) -> None:
        self.ledger = ledger
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
        jobs = self.ledger.list_jobs([JobState.QUEUED, JobState.RUNNING])
        return [j for j in jobs if self.job_ids is None or j.id in self.job_ids]

    def tick(self) -> None:
        """Do one pass over every active job."""
        jobs = {j.id: j for j in self.active_jobs()}
        self._poll(jobs)
        for job in jobs.values():
            try:
                self._advance(job)
            except RunnerError as exc:
                self._emit(job.id, f"error: {exc}")

    def run(self, interval: float = 2.0, until_done: bool = True,
            should_stop: Callable[[], bool] = lambda: False) -> None:
        """Tick every ``interval`` seconds until no watched job is active (or ``should_stop``)."""
        while not should_stop():
            self.tick()
            if until_done and not self.active_jobs():
                return
            time.sleep(interval)

    def close(self) -> None:
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
                self._adopt_or_submit(jobs[attempt.job_id], attempt)
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
        if status.state != attempt.state:
            updated = self.ledger.update_attempt(attempt.id, status)
            text = f"attempt {attempt.number}{self._index(attempt)} {updated.state.value.lower()}"
            if status.reason and status.state.is_terminal():
                text += f": {status.reason}"
            self._emit(attempt.job_id, text)

    def _adopt_or_submit(self, job: Job, attempt: Attempt) -> None:
        backend = self.backend(attempt.backend)
        found = backend.find(attempt.key)
        if found is not None:
            self.ledger.record_submitted(attempt.id, found)
            self._emit(job.id, f"adopted attempt {attempt.number} ({found[:12]}) started by an earlier watcher")
            return
        self._submit(job, attempt)

    # -- deciding -------------------------------------------------------------------------
    def _advance(self, job: Job) -> None:
        job = self.ledger.recount(job.id)
        attempts = self.ledger.attempts(job.id)
        latest: dict[int, Attempt] = {}
        for a in attempts:
            latest[a.array_index] = a
        done = 0
        first = [i for i in range(job.array_size) if i not in latest]
        if first:
            self._first_attempts(job, first)
        for index in range(job.array_size):
            attempt = latest.get(index)
            if attempt is None:
                continue
            elif attempt.state == AttemptState.SUCCEEDED:
                done += 1
            elif attempt.state == AttemptState.PREEMPTED:
                if job.preemptions_used <= job.preemption_budget:  # the budget counts retries
                    self._next_attempt(job, index, f"preempted ({job.preemptions_used} of "
                                                   f"{job.preemption_budget} retries)")
                else:
                    self._finish(job, JobState.FAILED, f"preempted {job.preemptions_used} times, more than "
                                 f"the preemption budget (retries.preemptions = {job.preemption_budget}); "
                                 "raise it or run on demand (spot: false)")
                    return
            elif attempt.state == AttemptState.FAILED:
                if job.failures_used <= job.failure_budget:
                    self._next_attempt(job, index, f"failed ({job.failures_used} of "
                                                   f"{job.failure_budget} retries)")
                else:
                    self._finish(job, JobState.FAILED, f"attempt {attempt.number} failed "
                                 f"({attempt.reason or 'no reason given'}) and the failure budget "
                                 f"(retries.failures = {job.failure_budget}) is spent; see "
                                 f"`runner logs {job.id}`")
                    return
            elif attempt.state == AttemptState.CANCELLED:
                self._finish(job, JobState.CANCELLED, "cancelled")
                return
            else:  # PENDING, RUNNING, UNKNOWN
                if attempt.state == AttemptState.RUNNING and job.state == JobState.QUEUED:
                    job = self.ledger.set_job_state(job.id, JobState.RUNNING)
                if attempt.state == AttemptState.RUNNING:
                    self._maybe_preempt(job, attempt)
        if done == job.array_size:
            self._finish(job, JobState.SUCCEEDED, "all attempts done")

    def _next_attempt(self, job: Job, index: int, why: str) -> None:
        try:
            attempt = self.ledger.reserve_attempt(job.id, index)
        except AttemptStillOpen:
            return  # another pass (or watcher) got there first
        self._emit(job.id, f"{why}: starting attempt {attempt.number}{self._index(attempt)}")
        self._submit(job, attempt)

    def _first_attempts(self, job: Job, indexes: list[int]) -> None:
        attempts = []
        for index in indexes:
            try:
                attempts.append(self.ledger.reserve_attempt(job.id, index))
            except AttemptStillOpen:
                continue
        if attempts:
            what = "attempt 1" if job.array_size == 1 else f"{len(attempts)} array children"
            self._emit(job.id, f"first attempt: starting {what}")
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
                          array_index=attempt.array_index, checkpoint_uri=uri, env=env)

    def _submit_all(self, job: Job, attempts: list[Attempt]) -> None:
        """Submit attempts of one job on one backend (several at once for array children)."""
        try:
            spec = resolve_secrets(job.spec(), job)
            subs = [self._submission(spec, job, a) for a in attempts]
            backend = self.backend(attempts[0].backend)
            for try_ in Retrying(stop=stop_after_attempt(self.submit_retries), reraise=True,
                                 wait=wait_exponential(multiplier=0.5, max=8),
                                 retry=retry_if_exception_type(SubmitError)):
                with try_:
                    ids = backend.submit_many(subs) if len(subs) > 1 else [backend.submit(subs[0])]
        except (SubmitError, RetryError) as exc:
            for attempt in attempts:
                self.ledger.update_attempt(attempt.id, AttemptStatus(AttemptState.FAILED, f"submit failed: {exc}"))
            self._emit(job.id, f"attempt {attempts[0].number} could not be submitted: {exc}")
            return
        for attempt, backend_id in zip(attempts, ids):
            self.ledger.record_submitted(attempt.id, backend_id)

    def _finish(self, job: Job, state: JobState, message: str) -> None:
        if state == JobState.SUCCEEDED:
            self.ledger.set_result(job.id, read_result(job))
        self.ledger.set_job_state(job.id, state, message)
        self._emit(job.id, f"job {state.value.lower()}: {message}")

    def _maybe_preempt(self, job: Job, attempt: Attempt) -> None:
        spec = job.spec()
        if spec.simulate_preemption is None or attempt.backend != "local" or not attempt.backend_id:
            return
        did = self._preemptor_for().step(job, attempt, spec.simulate_preemption, sim_cloud(spec))
        if did:
            self._emit(job.id, f"simulator: {did}")

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

    def _simulator_url(self) -> str | None:
        if self._simulator is None:
            return None
        port = self._simulator.url.rsplit(":", 1)[1]  # the bound port, also when 0 was asked
        return f"http://host.docker.internal:{port}"

    def _preemptor_for(self) -> Any:
        if self._preemptor is None:
            from runner.sim.metadata import MetadataSimulator
            from runner.sim.preemptor import Preemptor

            if self._simulator is None:
                try:
                    self._simulator = MetadataSimulator(host="0.0.0.0", port=SIM_PORT).start()
                except OSError:  # another watcher on this host holds the port: take any free one
                    self._simulator = MetadataSimulator(host="0.0.0.0", port=0).start()
                    log.warning("port %d is taken (another watcher?); the notice simulator listens at %s",
                                SIM_PORT, self._simulator.url)
            self._backends.pop("local", None)  # rebuild with the simulator's URL
            self._preemptor = Preemptor(self.backend("local"), self._simulator)
        return self._preemptor

    def _emit(self, job_id: str, text: str) -> None:
        self.on_event(Event(job_id, text))

    @staticmethod
    def _index(attempt: Attempt) -> str:
        return f" [index {attempt.array_index}]" if attempt.array_index else ""


def sim_cloud(spec: JobSpec) -> str:
    """The cloud whose notices the simulator imitates for ``spec`` (aws unless the spec says)."""
    return spec.notice if spec.notice in ("aws", "gcp", "azure") else "aws"


def resolve_secrets(spec: JobSpec, job: Job) -> JobSpec:
    """Put back env values the ledger redacted: from this process's environment or the spec file."""
    missing = [k for k, v in spec.env.items() if v == REDACTED]
    if not missing:
        return spec
    env = dict(spec.env)
    from_file: JobSpec | None = None
    for key in missing:
        if key in os.environ:
            env[key] = os.environ[key]
            continue
        if from_file is None and job.spec_path and os.path.exists(job.spec_path):
            from_file = load_spec(job.spec_path)
        if from_file is not None and from_file.env.get(key, REDACTED) != REDACTED:
            env[key] = from_file.env[key]
        else:
            raise SubmitError(f"env {key} of job {job.id} is a secret the ledger does not keep: "
                              f"export {key} where the watcher runs")
    return spec.model_copy(update={"env": env})


def read_result(job: Job) -> dict[str, Any]:
    """Read each array child's final manifest from its checkpoint store."""
    from runner.stores import open_store
    from runner.task import manifest as mf

    spec = job.spec()
    results = []
    for index in range(job.array_size):
        uri = spec.checkpoint_uri_for(index, job.id)
        try:
            final = mf.read_manifest(open_store(uri), mf.FINAL)
        except (FileNotFoundError, RunnerError, OSError) as exc:
            results.append({"checkpoint_uri": uri, "error": f"no final result: {exc}"})
            continue
        results.append({"checkpoint_uri": uri, "weights_sha256": final.get("weights_sha256"),
                        "metrics": final.get("metrics", {}), "step": final.get("step")})
    return results[0] if job.array_size == 1 else {"children": results}
