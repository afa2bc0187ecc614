"""What AWS Batch's answers mean, as pure functions: attempt ids, job states, answers cut short.

:func:`classify` maps a ``describe_jobs`` job (or a ``list_jobs`` summary, a plain dict) onto an
:class:`AttemptStatus`; :func:`parse_id` reads the runner's ``<region>/<jobId>[:<index>]`` ids;
:func:`field` reads a key an answer must have; :func:`log_stream` names a job's CloudWatch stream;
:func:`one_array` tells whether a batch of submissions can go as one array job.
No service call here: the calls are in :mod:`runner.backends.aws_batch`, the requests in
:mod:`runner.backends.aws_setup`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from runner.backends.base import Submission
from runner.backends.cloud import EXIT_REASONS, exit_state
from runner.errors import BackendError, BackendUnavailable
from runner.states import AttemptState, AttemptStatus

PREEMPT_REASON = "Host EC2"   # "Host EC2 (instance i-...) terminated."
CANCEL_REASON = "spot-runner: cancelled by the user"
DEFAULT_LOG_GROUP = "/aws/batch/job"
PROGRESSION = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")
_WAITING = frozenset(PROGRESSION[:4])
_ID = re.compile(r"^([a-z]{2}(?:-[a-z]+)+-\d+)/([A-Za-z0-9-]+)(?::(\d+))?$")


def field(answer: dict[str, Any], key: str, call: str) -> Any:
    """``answer[key]``; an answer without it was cut short on the way (botocore parses a truncated body
    into an empty success), so it is no answer: BackendUnavailable, tried again, never "not found"."""
    if key not in answer:
        raise BackendUnavailable(f"AWS Batch {call} answered without {key} (a reply cut short); trying again")
    return answer[key]


def classify(job: dict[str, Any]) -> AttemptStatus:
    """Map a ``describe_jobs`` job (or a ``list_jobs`` summary) onto an AttemptStatus.

    SUBMITTED/PENDING/RUNNABLE/STARTING are PENDING; a FAILED job is PREEMPTED when its (or its
    last attempt's) status reason starts with ``Host EC2`` or its container exited 75; a job
    the runner cancelled is CANCELLED; any other FAILED keeps the service's reason.
    """
    status = str(job.get("status") or "")
    started, ended = _seconds(job.get("startedAt")), _seconds(job.get("stoppedAt"))
    container = job.get("container") or {}
    attempts = job.get("attempts") or []
    last = attempts[-1] if attempts else {}
    code = container.get("exitCode", (last.get("container") or {}).get("exitCode"))
    exit_code = int(code) if isinstance(code, int) else None
    reasons = [str(r) for r in (job.get("statusReason"), last.get("statusReason"),
                                container.get("reason"), (last.get("container") or {}).get("reason")) if r]
    reason = reasons[0] if reasons else ""

    if status in _WAITING:
        return AttemptStatus(AttemptState.PENDING, status.lower() + (f": {reason}" if reason else ""),
                             None, started, None)
    if status == "RUNNING":
        return AttemptStatus(AttemptState.RUNNING, "running", None, started, None)
    if status == "SUCCEEDED":
        return AttemptStatus(AttemptState.SUCCEEDED, "succeeded", exit_code or 0, started, ended)
    if status != "FAILED":
        return AttemptStatus(AttemptState.UNKNOWN, f"unrecognised AWS Batch status {status!r}",
                             exit_code, started, ended)
    if any(r.startswith(PREEMPT_REASON) for r in reasons):
        preempted = next(r for r in reasons if r.startswith(PREEMPT_REASON))
        return AttemptStatus(AttemptState.PREEMPTED, f"spot reclaim: {preempted}", exit_code, started, ended)
    if any(r.startswith(CANCEL_REASON) for r in reasons) or job.get("isCancelled"):
        return AttemptStatus(AttemptState.CANCELLED, reason or "cancelled", exit_code, started, ended)
    contract_state = exit_state(exit_code)
    if contract_state in EXIT_REASONS:
        return AttemptStatus(contract_state, EXIT_REASONS[contract_state], exit_code, started, ended)
    text = reason or "failed"
    if exit_code is not None:
        text += f" (exit {exit_code})"
    return AttemptStatus(AttemptState.FAILED, text, exit_code, started, ended)


def _seconds(ms: Any) -> float | None:
    return ms / 1000.0 if isinstance(ms, (int, float)) and ms > 0 else None


def parse_id(backend_id: str) -> tuple[str, str, int | None]:
    """Split ``<region>/<jobId>[:<index>]`` into (region, job id, index or None)."""
    m = _ID.match(backend_id or "")
    if not m:
        raise BackendError(f"{backend_id!r} is not an AWS Batch attempt id (<region>/<jobId>); "
                           "pass the id submit() returned")
    return m.group(1), m.group(2), None if m.group(3) is None else int(m.group(3))


def one_array(subs: Sequence[Submission], limit: int) -> bool:
    """True when ``subs`` are children 0..n-1 (n <= ``limit``) of one attempt of one spec, each in its
    own ``<prefix>/<index>`` checkpoint folder: one array job can carry them all."""
    first = subs[0]
    prefix = first.checkpoint_uri.rsplit("/", 1)[0]
    return (len(subs) <= limit and [s.array_index for s in subs] == list(range(len(subs)))
            and all(s.attempt == first.attempt and s.spec is first.spec for s in subs)
            and all(s.checkpoint_uri == f"{prefix}/{s.array_index}" for s in subs))


def log_stream(job: dict[str, Any]) -> tuple[str, str | None]:
    """(CloudWatch log group, stream) of a described job; the stream is None until its container starts."""
    container = job.get("container") or {}
    attempts = job.get("attempts") or []
    stream = container.get("logStreamName") or (
        (attempts[-1].get("container") or {}).get("logStreamName") if attempts else None)
    group = ((container.get("logConfiguration") or {}).get("options") or {}).get("awslogs-group", DEFAULT_LOG_GROUP)
    return group, stream


__all__ = ["CANCEL_REASON", "PREEMPT_REASON", "PROGRESSION", "classify", "field", "log_stream", "one_array",
           "parse_id"]
