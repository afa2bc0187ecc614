"""AWS Batch's paged reads: job records by 100, array children per status, CloudWatch log pages.

Plain functions of a boto3 client, used by :mod:`runner.backends.aws_batch` (which holds the
clients and the skeleton's loop). What the records mean is in :mod:`runner.backends.aws_records`.
"""

from __future__ import annotations

import math
from typing import Any

from runner.backends.aws_records import PROGRESSION, field

DESCRIBE_BATCH = 100          # describe_jobs takes at most 100 ids
LIST_PAGE = 1000              # list_jobs with jobStatus returns at most 1000 a page


def describe_jobs(batch: Any, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """``jobId -> job`` for ``job_ids``, one ``describe_jobs`` call per 100."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(job_ids), DESCRIBE_BATCH):
        answer = batch.describe_jobs(jobs=job_ids[start:start + DESCRIBE_BATCH])
        found.update({str(job["jobId"]): job for job in field(answer, "jobs", "describe_jobs")})
    return found


def listing_pays(statuses: int, children: int) -> bool:
    """True when listing ``children`` per status (``statuses`` of them, plus the parent's describe)
    costs fewer calls than describing them by 100."""
    return 1 + statuses < math.ceil(children / DESCRIBE_BATCH)


def list_children(batch: Any, parent: str, described: dict[str, Any] | None) -> tuple[dict[str, dict[str, Any]], int]:
    """The children of array job ``parent`` listed status by status, in the order jobs progress,
    and how many statuses were listed (those the parent's ``statusSummary`` says are not empty)."""
    summary = ((described or {}).get("arrayProperties") or {}).get("statusSummary") or {}
    statuses = [s for s in PROGRESSION if not summary or summary.get(s)]
    children: dict[str, dict[str, Any]] = {}
    for status in statuses:  # a child that moves on between two calls is seen twice: keep the later
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"arrayJobId": parent, "jobStatus": status, "maxResults": LIST_PAGE}
            if token:
                kwargs["nextToken"] = token
            answer = batch.list_jobs(**kwargs)
            children.update({str(j["jobId"]): j for j in field(answer, "jobSummaryList", "list_jobs")})
            token = answer.get("nextToken")
            if not token:
                break
    return children, len(statuses)


def log_page(logs: Any, group: str, stream: str, token: str | None) -> tuple[str | None, list[str]]:
    """The next page of a CloudWatch stream after ``token``: (the token to read on from, its lines)."""
    kwargs: dict[str, Any] = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
    if token:
        kwargs["nextToken"] = token
    answer = logs.get_log_events(**kwargs)
    lines = [str(e.get("message", "")).rstrip("\n") for e in answer.get("events", [])]
    following = answer.get("nextForwardToken")  # the same token again: the end of the stream for now
    return (following if following != token else token), lines
