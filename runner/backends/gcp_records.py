"""What Google Cloud Batch's records mean, as pure functions: a Job and its Tasks onto an AttemptStatus.

How a task GCP retried in place reads, and why exit 50001 is PREEMPTED: :mod:`runner.backends.gcp_batch`.
No service call here; the calls are in :mod:`runner.backends.gcp_batch`, the job request in
:mod:`runner.backends.gcp_setup`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from runner.backends.cloud import EXIT_REASONS, exit_state
from runner.backends.gcp_setup import (
    _EXIT_IN_TEXT,
    EXIT_SPOT_PREEMPTION,
    RESERVED_EXITS,
    RETRY_EXIT_CODES,
)
from runner.states import AttemptState, AttemptStatus


def classify(job: Any, tasks: Sequence[Any] = (), task_index: int | None = None) -> AttemptStatus:
    """Map a ``batch_v1.Job`` and its ``Task`` list onto an AttemptStatus.

    For a single-task job the job's state decides (a task GCP is about to retry may show FAILED
    inside a RUNNING job); ``task_index`` asks about one child of an array job instead.
    """
    from google.cloud import batch_v1

    J = batch_v1.JobStatus.State
    state = J(job.status.state)
    task = _task(tasks, task_index)
    events = list(job.status.status_events) + (list(task.status.status_events) if task is not None else [])
    retried = _retries(task)
    started, ended = _started(events), _time(job.update_time) if state in (J.SUCCEEDED, J.FAILED,
                                                                            J.CANCELLED) else None
    if task_index is not None and task is not None:  # one child of an array job
        T = batch_v1.TaskStatus.State
        tstate, task_events = T(task.status.state), task.status.status_events
        if tstate is T.SUCCEEDED:
            return AttemptStatus(AttemptState.SUCCEEDED, "task SUCCEEDED" + _retried(retried), 0, started,
                                 _last_time(task_events))
        if state is J.CANCELLED:
            return AttemptStatus(AttemptState.CANCELLED, "job CANCELLED", None, started, ended)
        if tstate is T.FAILED and (state is J.FAILED or not _will_retry(job, task)):
            return _failed(task_events, started, _last_time(task_events))
        if state is J.FAILED:
            return AttemptStatus(AttemptState.FAILED, f"job FAILED before task {task_index} ran (task "
                                                      f"{tstate.name})", None, started, ended)
        if tstate is T.RUNNING:
            return AttemptStatus(AttemptState.RUNNING, "task RUNNING" + _retried(retried), None, started)
        return AttemptStatus(AttemptState.PENDING, f"task {tstate.name}" + _retried(retried))
    if state in (J.QUEUED, J.SCHEDULED):
        return AttemptStatus(AttemptState.PENDING, f"job {state.name}" + _retried(retried))
    if state in (J.RUNNING, J.CANCELLATION_IN_PROGRESS, J.DELETION_IN_PROGRESS):
        return AttemptStatus(AttemptState.RUNNING, f"job {state.name}" + _retried(retried), None, started)
    if state is J.SUCCEEDED:
        return AttemptStatus(AttemptState.SUCCEEDED, "job SUCCEEDED" + _retried(retried), 0, started, ended)
    if state is J.CANCELLED:
        return AttemptStatus(AttemptState.CANCELLED, "job CANCELLED", None, started, ended)
    if state is J.FAILED:
        return _failed(events, started, ended)
    return AttemptStatus(AttemptState.UNKNOWN, f"job state {state.name}")


def _failed(events: Sequence[Any], started: float | None, ended: float | None) -> AttemptStatus:
    """Classify an ended failure by its last exit code and the event that tells it."""
    code, text = None, ""
    for event in events:
        found = _exit_code(event)
        if found is not None:
            code, text = found, event.description
    if code is None:
        text = next((e.description for e in reversed(events) if e.description), "job FAILED")
    text = " ".join(text.split())
    if code == EXIT_SPOT_PREEMPTION or "Spot Preemption" in text:
        return AttemptStatus(AttemptState.PREEMPTED, text, code or EXIT_SPOT_PREEMPTION, started, ended)
    if exit_state(code) in EXIT_REASONS:
        state = exit_state(code)
        assert state is not None
        return AttemptStatus(state, f"{EXIT_REASONS[state]} ({text})", code, started, ended)
    if code in RESERVED_EXITS:
        return AttemptStatus(AttemptState.FAILED, f"{RESERVED_EXITS[code]}: {text}", code, started, ended)
    return AttemptStatus(AttemptState.FAILED, text or f"exit {code}", code, started, ended)


def _exit_code(event: Any) -> int | None:
    """Return the exit code an event reports (its task_execution, else its text), or None."""
    if "task_execution" in event:
        return int(event.task_execution.exit_code)
    m = _EXIT_IN_TEXT.search(event.description or "")
    return int(m.group(1)) if m else None


def _task(tasks: Sequence[Any], index: int | None) -> Any:
    if not tasks:
        return None
    if index is None:
        return tasks[0]
    for task in tasks:
        if task.name.rsplit("/", 1)[-1] == str(index):
            return task
    return None


def _retries(task: Any) -> int:
    """Return how many times GCP restarted the task in place (FAILED events before the last state)."""
    if task is None:
        return 0
    failures = [e for e in task.status.status_events if "to FAILED" in e.description]
    from google.cloud import batch_v1

    ended_failed = batch_v1.TaskStatus.State(task.status.state) is batch_v1.TaskStatus.State.FAILED
    return max(0, len(failures) - (1 if ended_failed else 0))


def _retried(count: int) -> str:
    return f" (GCP retried it in place after {count} failure{'s' * (count != 1)})" if count else ""


def _will_retry(job: Any, task: Any) -> bool:
    """Return True when GCP will run a FAILED task of a running job again (its policy and budget)."""
    codes = [c for e in task.status.status_events if (c := _exit_code(e)) is not None]
    if not codes or codes[-1] not in RETRY_EXIT_CODES:
        return False
    budget = job.task_groups[0].task_spec.max_retry_count if job.task_groups else 0
    return len(codes) <= budget


def _started(events: Sequence[Any]) -> float | None:
    times = [_time(e.event_time) for e in events if "to RUNNING" in e.description]
    return next((t for t in times if t), None)


def _last_time(events: Sequence[Any]) -> float | None:
    return _time(events[-1].event_time) if events else None


def _time(value: Any) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value.timestamp())
    except (AttributeError, ValueError, OSError):
        return None
    return seconds if seconds > 0 else None


def stamp(value: Any) -> str:
    """A record's time as ``YYYY-MM-DDTHH:MM:SSZ`` (``-`` when unset)."""
    t = _time(value)
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = ["classify", "stamp"]
