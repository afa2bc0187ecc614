"""classify() for Azure Batch tasks, on REST payloads shaped as the service returns them."""

from __future__ import annotations

import pytest

from runner.backends.azure_batch import classify, parse_id
from runner.errors import BackendError
from runner.states import AttemptState

NODE = "tvmps_0a1b2c3d4e5f6a7b_p"
NODE_INFO = {"affinityId": f"TVM:{NODE}", "poolId": "spot-runner-cpu", "nodeId": NODE,
             "nodeUrl": f"https://acct.eastus.batch.azure.com/pools/spot-runner-cpu/nodes/{NODE}",
             "taskRootDirectory": "workitems/job/job-1/task"}
START = "2026-03-01T10:00:00.123456Z"


def task(state, previous=None, node=True, **info):
    body = {"id": "cifar-smoke-0a1b2c-0-1", "state": state, "stateTransitionTime": "2026-03-01T10:05:00Z",
            "creationTime": "2026-03-01T09:59:00Z", "executionInfo": {"retryCount": 0, "requeueCount": 0, **info}}
    if previous:
        body["previousState"] = previous
    if node:
        body["nodeInfo"] = dict(NODE_INFO)
    return body


FAILURE_EXIT = {"category": "usererror", "code": "FailureExitCode",
                "message": "The task process exited with an unexpected exit code"}
ENDED = {"category": "usererror", "code": "TaskEnded", "message": "Task Was Ended by User Request"}


@pytest.mark.parametrize("payload, node_state, expected, words", [
    (task("active", node=False), None, AttemptState.PENDING, "waiting"),
    (task("preparing", "active", startTime=None), "running", AttemptState.PENDING, "preparing"),
    (task("running", "preparing", startTime=START), "running", AttemptState.RUNNING, NODE),
    (task("completed", "running", startTime=START, endTime="2026-03-01T10:09:00Z", exitCode=0, result="success"),
     "idle", AttemptState.SUCCEEDED, "exit 0"),
    (task("completed", "running", startTime=START, exitCode=1, result="failure", failureInfo=FAILURE_EXIT),
     "idle", AttemptState.FAILED, "FailureExitCode"),
    (task("completed", "running", startTime=START, exitCode=75, result="failure", failureInfo=FAILURE_EXIT),
     "idle", AttemptState.PREEMPTED, "exit 75"),
    # The node went `preempted`; Azure has not requeued the task yet.
    (task("running", "preparing", startTime=START), "preempted", AttemptState.PREEMPTED, "preempted"),
    # Requeued: the same task is back to active after running; no field says why.
    (task("active", "running", startTime=START), "preempted", AttemptState.PREEMPTED, "preempted"),
    (task("active", "running", startTime=START), None, AttemptState.PREEMPTED, "requeued"),
    (task("active", "running", startTime=START), "idle", AttemptState.PREEMPTED, "requeued"),
    # The runner ended the requeued task before it ran again: still a preemption on later polls.
    (task("completed", "active", startTime=START, result="failure", failureInfo=ENDED), "idle",
     AttemptState.PREEMPTED, "ended by the runner"),
    # Terminated while it ran, or before it ever started: a cancel.
    (task("completed", "running", startTime=START, result="failure", failureInfo=ENDED), "idle",
     AttemptState.CANCELLED, "TaskEnded"),
    (task("completed", "active", node=False, result="failure", failureInfo=ENDED), None,
     AttemptState.CANCELLED, "TaskEnded"),
    (task("completed", "preparing", startTime=START, result="failure",
          failureInfo={"category": "usererror", "code": "ContainerStartFailed", "message": "no such image"}),
     "idle", AttemptState.FAILED, "no such image"),
    (task("weird"), None, AttemptState.UNKNOWN, "weird"),
])
def test_classify(payload, node_state, expected, words):
    status = classify(payload, node_state)
    assert status.state is expected, status
    assert words in status.reason


def test_a_new_start_time_means_requeued_and_run_again():
    seen = (START, NODE)
    again = task("running", "preparing", startTime="2026-03-01T10:07:30Z")
    assert classify(again, "running", seen).state is AttemptState.PREEMPTED
    assert classify(task("running", "preparing", startTime=START), "running", seen).state is AttemptState.RUNNING


def test_times_and_exit_code_come_through():
    status = classify(task("completed", "running", startTime=START, endTime="2026-03-01T10:09:00Z",
                           exitCode=0, result="success"), "idle")
    assert status.exit_code == 0 and status.ended_at - status.started_at == pytest.approx(539.876544)


def test_classify_reads_sdk_models_too():
    from azure.batch import models as m

    model = m.BatchTask(task("running", "preparing", startTime=START))
    assert classify(model, "preempted").state is AttemptState.PREEMPTED


def test_ids_are_self_describing():
    assert parse_id("http://127.0.0.1:8080|job-1|job-1-0-1") == ("http://127.0.0.1:8080", "job-1", "job-1-0-1")
    with pytest.raises(BackendError, match="not an Azure attempt id"):
        parse_id("abc")
