"""What Azure Batch's records mean, as pure functions: attempt ids, task states, refused tasks.

:func:`classify` maps a task (REST JSON or SDK model) and its node's state onto an
:class:`AttemptStatus`: how Azure's requeue-after-preemption reads is told in
:mod:`runner.backends.azure_batch`, which makes the calls. Ids are ``<account_url>|<job>|<task>``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from runner.backends.cloud import EXIT_REASONS, exit_state
from runner.errors import BackendError, SubmitError, one_line
from runner.states import AttemptState, AttemptStatus

SEP = "|"


def classify(task: Mapping[str, Any], node_state: str | None = None,
             seen: tuple[Any, Any] | None = None) -> AttemptStatus:
    """Map an Azure task (REST JSON or SDK model) and its node's state onto an AttemptStatus.

    ``seen`` is the (start time, node id) this process saw the task running with before, if
    any: a different one now means Azure requeued and re-ran it after a preemption.
    """
    state = str(task.get("state") or "").lower()
    previous = str(task.get("previousState") or "").lower()
    info = task.get("executionInfo") or {}
    node = (task.get("nodeInfo") or {}).get("nodeId")
    started, ended = _epoch(info.get("startTime")), _epoch(info.get("endTime"))
    code = info.get("exitCode")
    exit_code = int(code) if code is not None else None
    failure = info.get("failureInfo") or {}
    on_node = f" on node {node}" if node else ""
    its_node = f"its node {node}" if node else "its node"

    def status(kind: AttemptState, reason: str) -> AttemptStatus:
        return AttemptStatus(kind, reason, exit_code, started, ended)

    if state == "completed":
        if exit_code == 0 and not failure:
            return status(AttemptState.SUCCEEDED, "exit 0")
        if exit_state(exit_code) in EXIT_REASONS:
            state = exit_state(exit_code)
            assert state is not None
            return status(state, EXIT_REASONS[state])
        if failure.get("code") == "TaskEnded":
            if previous in ("active", "preparing") and started is not None:
                return status(AttemptState.PREEMPTED, f"requeued after {its_node} was preempted; "
                                                      "ended by the runner")
            return status(AttemptState.CANCELLED, "terminated (TaskEnded)")
        if failure:
            what = f"{failure.get('category') or 'error'} {failure.get('code') or ''}".strip()
            text = " ".join(str(failure.get("message") or "").split())
            tail = f" (exit {exit_code})" if exit_code is not None else ""
            return status(AttemptState.FAILED, f"{what}: {text}{tail}" if text else what + tail)
        return status(AttemptState.FAILED, f"exit {exit_code}" if exit_code is not None else "completed, no exit code")
    if node_state == "preempted" and state in ("running", "preparing", "active") and node:
        return status(AttemptState.PREEMPTED, f"node {node} was preempted (task {state})")
    if state == "active":
        if previous in ("running", "preparing") and int(info.get("retryCount") or 0) == 0:
            return status(AttemptState.PREEMPTED, f"requeued by Azure: {its_node} was preempted")
        return AttemptStatus(AttemptState.PENDING, "active: waiting for a node", None, started, None)
    if state == "preparing":
        return AttemptStatus(AttemptState.PENDING, f"preparing{on_node}", None, started, None)
    if state == "running":
        if seen is not None and seen != (info.get("startTime"), node) and seen[0] is not None:
            return status(AttemptState.PREEMPTED, f"requeued by Azure and started again{on_node}")
        return AttemptStatus(AttemptState.RUNNING, f"running{on_node}", None, started, None)
    return AttemptStatus(AttemptState.UNKNOWN, f"unrecognised task state {state!r}", exit_code, started, ended)


def parse_id(backend_id: str) -> tuple[str, str, str]:
    """Split ``"<account_url>|<job>|<task>"``."""
    parts = backend_id.split(SEP)
    if len(parts) != 3 or not all(parts):
        raise BackendError(f"{backend_id!r} is not an Azure attempt id (<account_url>|<job>|<task>); "
                           "pass the id the azure backend returned")
    return parts[0], parts[1], parts[2]


def region_of(account_url: str | None) -> str | None:
    """Return the region in ``https://<account>.<region>.batch.azure.com``, if the URL has that shape."""
    host = urllib.parse.urlsplit(account_url or "").hostname or ""
    parts = host.split(".")
    return parts[1] if len(parts) >= 5 and host.endswith(".batch.azure.com") else None


def check_collection(result: Any) -> None:
    """Raise SubmitError for tasks the service refused (TaskExists is an adoption, not an error)."""
    refused = []
    for item in result.get("value") or []:
        error = item.get("error") or {}
        if item.get("status") == "success" or error.get("code") == "TaskExists":
            continue
        message = error.get("message") or {}
        text = message.get("value") if isinstance(message, Mapping) else message
        refused.append(f"{item.get('taskId')}: {item.get('status')} {error.get('code') or ''} "
                       f"{' '.join(str(text or '').split())}".strip())
    if refused:
        raise SubmitError(f"Azure refused {len(refused)} task(s): " + "; ".join(refused[:3]))


def _epoch(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def message(exc: BaseException) -> str:
    """The service's message of an Azure error, on one line."""
    return one_line(getattr(exc, "message", None) or exc, 300)


__all__ = ["SEP", "check_collection", "classify", "message", "parse_id", "region_of"]
