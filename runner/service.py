"""The runner's verbs, used alike by the CLI, the dashboard, the tests and the benchmarks.

    submit(ledger, "jobs/cifar.yaml", settings=["epochs=2"])   # validate, preflight, record: a job id
    cancel(ledger, job_id)     # stop every attempt first, then the job is CANCELLED
    halt(ledger, job_id)       # ask the running attempt to commit and stop: PAUSING, then PAUSED
    resume(ledger, job_id)     # PAUSED -> QUEUED: the next attempt starts from the checkpoint
    watch(ledger, [job_id])    # the one run loop (Watcher.run) with signals, health and progress

Verbs that stop machines act on the attempts first and record the job last: ``cancel`` moves the
job to CANCELLING, asks each backend to stop each open attempt (retrying what fails), and only a
poll that shows every attempt ended makes it CANCELLED; until then every watcher keeps stopping
the attempts of a CANCELLING job each pass, and a repeated ``runner cancel`` tries again at once.
``halt`` writes a ``HALT`` object under each checkpoint URI, which the task's notice listener sees
within a few seconds on every backend (it commits a checkpoint and exits 75, as after a notice).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from runner.backends import Backend, get_backend
from runner.errors import BackendError, RunnerError, SpecError
from runner.job_files import clear_halt, write_halt
from runner.ledger import Job, JobStateChanged, Ledger
from runner.paths import data_dir
from runner.plugins import backend_class
from runner.spec import (
    JobSpec,
    load_spec,
    parse_settings,
    parse_simulate_preemption,
    spec_from_dict,
)
from runner.states import JobState

#: Tries of one backend call that stops an attempt (then the watcher keeps trying each pass).
STOP_TRIES = 3


@dataclass
class Outcome:
    """What a verb did: the job afterwards, one line for people, and what is still running."""

    job: Job
    message: str
    changed: bool = True
    still_running: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- submit


def load_job_spec(spec_path: str | Path, *, backend: str | None = None, settings: Sequence[str] = (),
                  simulate_preemption: str | None = None, args: str | None = None) -> JobSpec:
    """Read a spec with the CLI's overrides: ``--backend``, ``--set key=value``, ``--args``, ``--simulate-preemption``."""
    overrides: dict[str, Any] = parse_settings(list(settings), "--set")
    if backend is not None:
        overrides["backend"] = backend
    if simulate_preemption is not None:
        overrides["simulate_preemption"] = parse_simulate_preemption(simulate_preemption).model_dump(
            exclude_none=True)
    spec = load_spec(spec_path, overrides)
    if args:
        data = spec.model_dump(mode="json", exclude_defaults=True)
        data["args"] = merge_args(spec.args, args)
        spec = spec_from_dict(data, f"{spec_path} with --args")
    return spec


def merge_args(args: Sequence[str], changes: str) -> list[str]:
    """Return ``args`` with the flags in ``changes`` (``"--epochs 2 --fast"``) set: replaced where present, else added.

    A flag followed by a value replaces that flag's value (``--epochs 30`` -> ``--epochs 2``;
    ``--epochs=30`` too); a flag alone is added once.
    """
    import shlex

    try:
        words = shlex.split(changes)
    except ValueError as exc:
        raise SpecError(f"--args {changes[:80]!r}: {exc}; quote it as in a shell") from None
    result = list(args)
    i = 0
    while i < len(words):
        flag = words[i]
        if not flag.startswith("-"):
            raise SpecError(f"--args: {flag[:40]!r} is not a flag; write flags and values, e.g. --args='--epochs 2'")
        value: str | None = None
        if "=" in flag and flag.startswith("--"):
            flag, value = flag.split("=", 1)
        elif i + 1 < len(words) and not words[i + 1].startswith("-"):
            value = words[i + 1]
            i += 1
        i += 1
        for j, word in enumerate(result):
            if word == flag and value is not None and j + 1 < len(result):
                result[j + 1] = value
                break
            if word.startswith(flag + "="):
                result[j] = f"{flag}={value}" if value is not None else flag
                break
            if word == flag and value is None:
                break
        else:
            result += [flag] if value is None else [flag, value]
    return result


def submit(ledger: Ledger, spec_path: str | Path, *, backend: str | None = None, settings: Sequence[str] = (),
           simulate_preemption: str | None = None, args: str | None = None) -> tuple[str, JobSpec]:
    """Validate the spec, check it against its backend (image, data folders), record a QUEUED job."""
    spec = load_job_spec(spec_path, backend=backend, settings=settings, simulate_preemption=simulate_preemption,
                         args=args)
    backend = backend_class(spec.backend)
    problem = backend.check_runnable(spec)
    if problem is not None:
        raise SpecError(f"{spec_path}: field {problem[0]!r}: {problem[1]}")
    backend.preflight(spec)
    from runner.cost.interval import machine_key

    job_id = ledger.create_job(spec, Path(spec_path).resolve(), machine=machine_key(spec))
    return job_id, spec


# ---------------------------------------------------------------------------- cancel, halt, resume


def cancel(ledger: Ledger, job_id: str, backend_factory: Callable[[str], Backend] = get_backend) -> Outcome:
    """Stop every open attempt of the job, then record it CANCELLED (CANCELLING until confirmed)."""
    job = ledger.get_job(job_id)
    open_ = [a for a in ledger.attempts(job_id) if a.is_open]
    if job.state.is_terminal() and not open_:
        return Outcome(job, f"{job_id} is already {job.state.value}", changed=False)
    if not job.state.is_terminal():
        job = _move(ledger, job_id, JobState.CANCELLING, "cancel requested by the user",
                    lambda s: not s.is_terminal())
    still: list[str] = []
    stopped: set[int] = set()
    backends: dict[str, Backend] = {}
    try:
        for attempt in open_:
            if attempt.backend_id is None:
                continue  # reserved, never submitted: the watcher's pass records it (it may be adopting it)
            backend = backends.get(attempt.backend) or backends.setdefault(attempt.backend,
                                                                            backend_factory(attempt.backend))
            try:
                for try_ in Retrying(stop=stop_after_attempt(STOP_TRIES), wait=wait_exponential(0.5, max=4),
                                     retry=retry_if_exception_type(BackendError), reraise=True):
                    with try_:
                        backend.cancel(attempt.backend_id)
                stopped.add(attempt.id)
            except BackendError as exc:
                still.append(f"attempt {attempt.number} ({exc})")
        _confirm(ledger, job_id, backends, stopped)
    finally:
        for backend in backends.values():
            backend.close()
    job = _settle(ledger, job_id, JobState.CANCELLING, JobState.CANCELLED, "cancelled by the user")
    if job.state == JobState.CANCELLED:
        return Outcome(job, f"cancelled {job_id}")
    running = len([a for a in ledger.attempts(job_id) if a.is_open])
    detail = f": {'; '.join(still)}" if still else ""
    return Outcome(job, f"{job_id} is CANCELLING: {running} attempt(s) not confirmed stopped yet{detail}; "
                        "watchers keep stopping them; `runner cancel` again retries now", still_running=still)


def halt(ledger: Ledger, job_id: str) -> Outcome:
    """Ask the job's running attempt to commit a checkpoint and stop; the job becomes PAUSING, then PAUSED."""
    job = ledger.get_job(job_id)
    if job.state == JobState.PAUSED:
        return Outcome(job, f"{job_id} is already PAUSED; resume it with `runner resume {job_id}`", changed=False)
    if job.state.is_terminal() or job.state == JobState.CANCELLING:
        raise RunnerError(f"{job_id} is {job.state.value}: there is nothing to halt")
    write_halt(job, None, "halt")
    if job.state == JobState.PAUSING:
        return Outcome(job, f"{job_id} is already PAUSING (halt requested again)", changed=False)
    job = _move(ledger, job_id, JobState.PAUSING, "halt requested: the running attempt commits a checkpoint and "
                f"stops; then the job is PAUSED (resume with `runner resume {job_id}`)",
                lambda s: s in (JobState.QUEUED, JobState.RUNNING))
    return Outcome(job, f"halting {job_id}: its attempt commits a checkpoint and stops; the job is then PAUSED")


def resume(ledger: Ledger, job_id: str, budget: float | None = None) -> Outcome:
    """Start a PAUSED job again from its checkpoint: the HALT request is removed, the job QUEUED.

    ``budget`` raises (or sets) the job's budget first: a job paused by its budget goes on with it.
    """
    job = ledger.get_job(job_id)
    if job.state in (JobState.QUEUED, JobState.RUNNING):
        return Outcome(job, f"{job_id} is {job.state.value}, not paused: nothing to resume", changed=False)
    if job.state == JobState.PAUSING:
        raise RunnerError(f"{job_id} is still PAUSING (its attempt is committing a checkpoint); "
                          f"wait for PAUSED (`runner status {job_id}`), then resume")
    if job.state != JobState.PAUSED:
        raise RunnerError(f"{job_id} is {job.state.value}: only a PAUSED job resumes; submit the spec again")
    if budget is not None:
        data = job.spec().model_dump(mode="json", exclude_defaults=True)
        job = ledger.update_spec(job_id, spec_from_dict({**data, "budget": budget}, "--budget"))
    elif job.message.startswith("budget reached"):
        raise SpecError(f"{job_id} was paused by its budget; raise it: runner resume {job_id} --budget <more>")
    clear_halt(job)
    job = _move(ledger, job_id, JobState.QUEUED, "resumed by the user", lambda s: s == JobState.PAUSED)
    return Outcome(job, f"resumed {job_id}: the next attempt starts from its newest checkpoint")


def _move(ledger: Ledger, job_id: str, state: JobState, message: str, allowed: Callable[[JobState], bool]) -> Job:
    """Move the job to ``state`` from any state ``allowed`` accepts, whatever a watcher does meanwhile."""
    for _ in range(10):
        job = ledger.get_job(job_id)
        if not allowed(job.state):
            raise RunnerError(f"{job_id} became {job.state.value} meanwhile; nothing was changed")
        try:
            return ledger.set_job_state(job_id, state, message, expect=(job.state,))
        except JobStateChanged:
            continue
    raise RunnerError(f"{job_id} keeps changing state; try again")


def _confirm(ledger: Ledger, job_id: str, backends: dict[str, Backend], stopped: set[int]) -> None:
    """Poll the attempts just stopped and record what the backends say (a stop is confirmed by a poll).

    Only attempts whose stop call went through: one that could not be stopped is still running, and
    polling it for ten seconds would only delay saying so.
    """
    by_backend: dict[str, list[Any]] = {}
    for attempt in ledger.attempts(job_id):
        if attempt.is_open and attempt.backend_id and attempt.backend in backends and attempt.id in stopped:
            by_backend.setdefault(attempt.backend, []).append(attempt)
    for name, attempts in by_backend.items():
        for _ in range(10):  # a stop takes a moment to show (AWS: RUNNING -> FAILED)
            try:
                statuses = backends[name].poll([a.backend_id for a in attempts])
            except BackendError:
                return
            for attempt in attempts:
                status = statuses.get(attempt.backend_id)
                if status is not None and status.is_terminal():
                    ledger.update_attempt(attempt.id, status)
            attempts = [a for a in attempts if not ledger.get_attempt(a.id).state.is_terminal()]
            if not attempts:
                break
            time.sleep(1.0)


def _settle(ledger: Ledger, job_id: str, pending: JobState, final: JobState, message: str) -> Job:
    """Move a job from ``pending`` to ``final`` once none of its attempts is open."""
    job = ledger.get_job(job_id)
    if job.state == pending and not any(a.is_open for a in ledger.attempts(job_id)):
        try:
            job = ledger.set_job_state(job_id, final, message, expect=(pending,))
        except JobStateChanged:
            job = ledger.get_job(job_id)
    return job


# ---------------------------------------------------------------------------- watch


@dataclass
class WatchOptions:
    """How :func:`watch` runs: the CLI's ``runner watch`` flags and the foreground ``submit``'s."""

    interval: float = 2.0
    once: bool = False
    service: bool = False          # keep going through failed passes; with no job ids, wait for new jobs
    health_port: int | None = None
    status_file: Path | None = None
    lease_ttl: float | None = None
    timeout: float | None = None   # give up waiting after this long (the job goes on)


def watch(ledger: Ledger, job_ids: Iterable[str] | None, options: WatchOptions,
          on_event: Callable[[Any], None], after_pass: Callable[[Any], None] | None = None,
          on_ready: Callable[[str | None], None] | None = None) -> str:
    """Run the watcher in this process until the jobs end (or a signal, ``once``, ``timeout``).

    ``on_ready`` is called once the health endpoint is bound, with its URL (the real port, also
    for ``--health-port 0``), or with None when there is none.

    Returns why it stopped: ``"done"``, ``"signal"``, ``"once"`` or ``"timeout"``. SIGTERM (and,
    for a service, SIGINT) stop it cleanly: leases released, the jobs go on.
    """
    from runner.health import HealthServer, write_status
    from runner.ledger import LEASE_TTL
    from runner.watcher import Watcher

    ids = list(job_ids) if job_ids is not None else None
    stop = {"why": ""}
    started = time.monotonic()

    def on_signal(signum: int, _frame: Any) -> None:
        stop["why"] = "signal"

    def should_stop() -> bool:
        if not stop["why"] and options.timeout is not None and time.monotonic() - started > options.timeout:
            stop["why"] = "timeout"
        return bool(stop["why"])

    watcher = Watcher(ledger, ids, on_event=on_event, lease_ttl=options.lease_ttl or LEASE_TTL)
    server = HealthServer(watcher, options.health_port, options.interval).start() \
        if options.health_port is not None else None
    if on_ready is not None:
        on_ready(server.url if server is not None else None)
    previous = signal.signal(signal.SIGTERM, on_signal)
    previous_int = signal.signal(signal.SIGINT, on_signal) if options.service else None

    def each_pass() -> None:
        if options.status_file is not None:
            write_status(options.status_file, watcher.health(options.interval))
        if after_pass is not None:
            after_pass(watcher)

    try:
        watcher.run(options.interval, until_done=ids is not None, should_stop=should_stop, once=options.once,
                    keep_going=options.service, after_pass=each_pass)
    finally:
        watcher.close()
        if server is not None:
            server.stop()
        if options.status_file is not None:
            write_status(options.status_file, {**watcher.health(options.interval), "ok": False, "stopped": True})
        signal.signal(signal.SIGTERM, previous)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)
    return stop["why"] or ("once" if options.once else "done")


def spawn_watcher(job_id: str, interval: float) -> Path:
    """Start ``runner watch JOB`` in the background (its own session); return its log file."""
    log_path = data_dir() / "watch" / f"{job_id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as fh:
        subprocess.Popen([sys.executable, "-m", "runner.cli", "watch", job_id, "--interval", str(interval)],
                         stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True, env=os.environ.copy())
    return log_path


__all__ = ["Outcome", "WatchOptions", "cancel", "halt", "load_job_spec", "merge_args", "resume", "spawn_watcher",
           "submit",
           "watch"]
