"""classify() for Google Cloud Batch, on payloads shaped like the service's JSON (enums as integers)."""

from __future__ import annotations

import json
from typing import Any

import pytest

batch_v1 = pytest.importorskip("google.cloud.batch_v1")

from runner.backends.gcp_batch import GcpBatchBackend, classify  # noqa: E402
from runner.backends.gcp_setup import job_id_for, label_value, split_id  # noqa: E402
from runner.states import AttemptState  # noqa: E402

NAME = "projects/my-project/locations/us-central1/jobs/cifar-smoke-3f9a1c-0-1-5d41402abc"
INSTANCE = "zones/us-central1-a/instances/cifar-smoke-3f9a1c-0-6a8e2c41-group0-0-x7k2"
SPOT = (f"Task state is updated from RUNNING to FAILED on {INSTANCE} due to Spot Preemption with "
        "exit code 50001.")
JOB_STATE = {"QUEUED": 1, "SCHEDULED": 2, "RUNNING": 3, "SUCCEEDED": 4, "FAILED": 5,
             "CANCELLATION_IN_PROGRESS": 7, "CANCELLED": 8, "STATE_UNSPECIFIED": 0}
TASK_STATE = {"PENDING": 1, "ASSIGNED": 2, "RUNNING": 3, "FAILED": 4, "SUCCEEDED": 5}


def event(text: str, at: str = "2026-11-20T10:00:00.123Z", exit_code: int | None = None,
          task_state: str | None = None) -> dict[str, Any]:
    e: dict[str, Any] = {"type": "STATUS_CHANGED", "description": text, "eventTime": at}
    if exit_code is not None:
        e["taskExecution"] = {"exitCode": exit_code}
    if task_state:
        e["taskState"] = TASK_STATE[task_state]
    return e


def job(state: str, events: list[dict[str, Any]] = (), max_retry: int = 1, count: int = 1) -> Any:
    body = {"name": NAME, "uid": "cifar-smoke-3f9a1c-0-1-5d-2b7c9e10",
            "taskGroups": [{"name": f"{NAME}/taskGroups/group0", "taskCount": str(count),
                            "taskSpec": {"maxRetryCount": max_retry,
                                         "lifecyclePolicies": [{"action": 1,
                                                                "actionCondition": {"exitCodes": [50001, 75]}}]}}],
            "status": {"state": JOB_STATE[state], "statusEvents": list(events)},
            "updateTime": "2026-11-20T10:05:00Z"}
    return batch_v1.Job.from_json(json.dumps(body), ignore_unknown_fields=True)


def task(state: str, events: list[dict[str, Any]], index: int = 0) -> Any:
    body = {"name": f"{NAME}/taskGroups/group0/tasks/{index}",
            "status": {"state": TASK_STATE[state], "statusEvents": events}}
    return batch_v1.Task.from_json(json.dumps(body), ignore_unknown_fields=True)


RUN = [event(f"Task state is updated from ASSIGNED to RUNNING on {INSTANCE}.", "2026-11-20T10:01:00Z",
             task_state="RUNNING")]


@pytest.mark.parametrize("state", ["QUEUED", "SCHEDULED"])
def test_queued_and_scheduled_are_pending(state):
    status = classify(job(state))
    assert status.state is AttemptState.PENDING and state in status.reason


def test_running_has_its_start_time():
    status = classify(job("RUNNING"), [task("RUNNING", RUN)])
    assert status.state is AttemptState.RUNNING
    assert status.started_at == 1795168860.0  # 2026-11-20T10:01:00Z


def test_succeeded():
    done = RUN + [event(f"Task state is updated from RUNNING to SUCCEEDED on {INSTANCE}.", exit_code=0,
                        task_state="SUCCEEDED")]
    status = classify(job("SUCCEEDED"), [task("SUCCEEDED", done)])
    assert (status.state, status.exit_code) == (AttemptState.SUCCEEDED, 0)
    assert status.ended_at is not None and "retried" not in status.reason


def test_spot_preemption_is_preempted_with_the_event_text():
    events = RUN + [event(SPOT, exit_code=50001, task_state="FAILED")]
    status = classify(job("FAILED", [event("Job state is set from RUNNING to FAILED for job " + NAME + ".")]),
                      [task("FAILED", events)])
    assert status.state is AttemptState.PREEMPTED
    assert status.exit_code == 50001 and "due to Spot Preemption with exit code 50001" in status.reason


def test_spot_preemption_told_only_by_the_job_event():
    """No task list (or no taskExecution): the words of the status event suffice."""
    text = f"Job state is set from RUNNING to FAILED for job {NAME} with task failure: {SPOT}"
    status = classify(job("FAILED", [event(text)]))
    assert (status.state, status.exit_code) == (AttemptState.PREEMPTED, 50001)


def test_exit_75_is_a_preemption_with_notice():
    events = RUN + [event(f"Task state is updated from RUNNING to FAILED on {INSTANCE} with exit code 75.",
                          exit_code=75, task_state="FAILED")]
    status = classify(job("FAILED"), [task("FAILED", events)])
    assert (status.state, status.exit_code) == (AttemptState.PREEMPTED, 75)
    assert "preemption notice" in status.reason


def test_other_exit_code_is_a_failure_with_the_event_text():
    text = f"Task state is updated from RUNNING to FAILED on {INSTANCE} with exit code 1."
    status = classify(job("FAILED"), [task("FAILED", RUN + [event(text, exit_code=1, task_state="FAILED")])])
    assert (status.state, status.exit_code) == (AttemptState.FAILED, 1)
    assert status.reason == text


def test_reserved_exit_codes_are_named():
    text = f"Task state is updated from RUNNING to FAILED on {INSTANCE} with exit code 50005."
    status = classify(job("FAILED"), [task("FAILED", [event(text, exit_code=50005, task_state="FAILED")])])
    assert status.state is AttemptState.FAILED and status.reason.startswith("max run duration exceeded")


def test_failed_without_events():
    status = classify(job("FAILED"))
    assert status.state is AttemptState.FAILED and status.reason == "job FAILED"


@pytest.mark.parametrize("state,expected", [("CANCELLED", AttemptState.CANCELLED),
                                            ("CANCELLATION_IN_PROGRESS", AttemptState.RUNNING),
                                            ("STATE_UNSPECIFIED", AttemptState.UNKNOWN)])
def test_cancel_and_unknown_states(state, expected):
    assert classify(job(state)).state is expected


def test_a_task_gcp_is_retrying_keeps_the_attempt_running():
    """GCP retries in place: the job stays RUNNING, so the watcher must not resubmit."""
    events = RUN + [event(SPOT, exit_code=50001, task_state="FAILED")]
    status = classify(job("RUNNING"), [task("FAILED", events)])
    assert status.state is AttemptState.RUNNING


def test_success_after_an_in_place_retry_says_so():
    events = RUN + [event(SPOT, exit_code=50001, task_state="FAILED"),
                    event("Task state is updated from FAILED to PENDING: retry 1 of 1.", task_state="PENDING"),
                    *RUN, event(f"Task state is updated from RUNNING to SUCCEEDED on {INSTANCE}.", exit_code=0,
                                task_state="SUCCEEDED")]
    status = classify(job("SUCCEEDED"), [task("SUCCEEDED", events)])
    assert status.state is AttemptState.SUCCEEDED
    assert "retried it in place after 1 failure" in status.reason


def test_array_children_are_classified_by_their_own_task():
    ok = [event(f"Task state is updated from RUNNING to SUCCEEDED on {INSTANCE}.", exit_code=0,
                task_state="SUCCEEDED")]
    preempted = RUN + [event(SPOT, exit_code=50001, task_state="FAILED")]
    tasks = [task("SUCCEEDED", ok, 0), task("FAILED", preempted, 1), task("RUNNING", RUN, 2)]
    running = job("RUNNING", max_retry=1, count=3)
    assert classify(running, tasks, 0).state is AttemptState.SUCCEEDED
    assert classify(running, tasks, 1).state is AttemptState.PENDING  # GCP will retry it (1 of 1 left)
    assert classify(running, tasks, 2).state is AttemptState.RUNNING
    spent = job("RUNNING", max_retry=0, count=3)
    assert classify(spent, tasks, 1).state is AttemptState.PREEMPTED  # no retry left: the watcher's turn
    assert classify(job("FAILED", count=3), tasks, 1).state is AttemptState.PREEMPTED


def test_array_children_of_an_ended_job():
    ok = [event(f"Task state is updated from RUNNING to SUCCEEDED on {INSTANCE}.", exit_code=0,
                task_state="SUCCEEDED")]
    bug = RUN + [event(f"Task state is updated from RUNNING to FAILED on {INSTANCE} with exit code 2.",
                       exit_code=2, task_state="FAILED")]
    cancelled = RUN + [event(f"Task state is updated from RUNNING to FAILED on {INSTANCE}.", task_state="FAILED")]
    tasks = [task("SUCCEEDED", ok, 0), task("FAILED", bug, 1), task("PENDING", [], 2), task("FAILED", cancelled, 3)]
    failed = job("FAILED", count=4)
    assert classify(failed, tasks, 0).state is AttemptState.SUCCEEDED  # a sibling's failure is not its own
    assert (classify(failed, tasks, 1).state, classify(failed, tasks, 1).exit_code) == (AttemptState.FAILED, 2)
    assert classify(failed, tasks, 2).state is AttemptState.FAILED
    gone = job("CANCELLED", count=4)
    assert classify(gone, tasks, 0).state is AttemptState.SUCCEEDED
    assert {classify(gone, tasks, i).state for i in (1, 2, 3)} == {AttemptState.CANCELLED}


def test_job_ids_are_valid_short_and_distinct():
    keys = ["cifar-smoke-3f9a1c-0-1", "0-starts-with-a-digit", "UPPER_and.dots-0-1",
            "a" * 80 + "-0-1", "a" * 80 + "-0-2"]
    ids = [job_id_for(k) for k in keys]
    for i in ids:
        assert len(i) <= 63 and i[0].isalpha() and all(c.isalnum() or c == "-" for c in i) and i == i.lower()
    assert len(set(ids)) == len(ids)
    assert job_id_for(keys[0]) == job_id_for(keys[0])
    assert len(label_value("x" * 100)) <= 63


def test_ids_are_self_describing():
    assert split_id(NAME) == (NAME, None)
    assert split_id(f"{NAME}/taskGroups/group0/tasks/7") == (NAME, 7)


class _DownClient:
    """A client whose every call fails the way the REST transport does when the service is down."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def get_job(self, name: str) -> Any:
        raise self.exc

    def list_tasks(self, parent: str) -> Any:
        raise self.exc


@pytest.mark.parametrize("exc", [ConnectionError("connection refused"),
                                 pytest.param("503", id="ServiceUnavailable")])
def test_a_failing_poll_is_unknown(exc):
    if exc == "503":
        from google.api_core.exceptions import ServiceUnavailable

        exc = ServiceUnavailable("backend unavailable")
    backend = GcpBatchBackend(client=_DownClient(exc))
    statuses = backend.poll([NAME, f"{NAME}/taskGroups/group0/tasks/1", "not-a-job-name"])
    assert {s.state for s in statuses.values()} == {AttemptState.UNKNOWN}
    assert len(statuses) == 3
