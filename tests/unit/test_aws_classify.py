"""classify() against describe_jobs / list_jobs payloads shaped like AWS Batch's answers."""

from __future__ import annotations

import pytest

from runner.backends.aws_batch import classify, parse_id
from runner.backends.aws_setup import job_name
from runner.states import AttemptState

JOB = {"jobArn": "arn:aws:batch:us-east-1:123456789012:job/8f2c1b7e-1111-4a5b-9c3d-0e1f2a3b4c5d",
       "jobName": "cifar-smoke-0-1", "jobId": "8f2c1b7e-1111-4a5b-9c3d-0e1f2a3b4c5d",
       "jobQueue": "arn:aws:batch:us-east-1:123456789012:job-queue/spot-runner-queue",
       "createdAt": 1732600000000, "dependsOn": [], "parameters": {}, "tags": {}}
RECLAIMED = {**JOB, "status": "FAILED", "statusReason": "Host EC2 (instance i-08784105ffff56b4f) terminated.",
             "startedAt": 1732600060000, "stoppedAt": 1732600360000,
             "attempts": [{"container": {"containerInstanceArn": "arn:aws:ecs:...", "taskArn": "arn:aws:ecs:...",
                                         "exitCode": 137, "logStreamName": "jd/default/abc"},
                           "startedAt": 1732600060000, "stoppedAt": 1732600360000,
                           "statusReason": "Host EC2 (instance i-08784105ffff56b4f) terminated."}],
             "container": {"image": "x", "exitCode": 137, "logStreamName": "jd/default/abc"}}


@pytest.mark.parametrize("status", ["SUBMITTED", "PENDING", "RUNNABLE", "STARTING"])
def test_waiting_states_are_pending(status):
    assert classify({**JOB, "status": status}).state == AttemptState.PENDING


def test_running_and_succeeded():
    running = classify({**JOB, "status": "RUNNING", "startedAt": 1732600060000})
    assert running.state == AttemptState.RUNNING and running.started_at == 1732600060.0
    done = classify({**JOB, "status": "SUCCEEDED", "startedAt": 1732600060000, "stoppedAt": 1732600120000,
                     "statusReason": "Essential container in task exited", "container": {"exitCode": 0}})
    assert done.state == AttemptState.SUCCEEDED and done.ended_at == 1732600120.0 and done.exit_code == 0


def test_spot_reclaim_is_preempted():
    status = classify(RECLAIMED)
    assert status.state == AttemptState.PREEMPTED and "Host EC2" in status.reason and status.exit_code == 137


def test_reclaim_reason_only_on_the_attempt():
    job = {**RECLAIMED, "statusReason": "Essential container in task exited"}
    assert classify(job).state == AttemptState.PREEMPTED


def test_moto_shape_of_a_terminated_job():
    job = {**JOB, "status": "FAILED", "statusReason": "Host EC2 (instance i-0123) terminated.",
           "attempts": [{"container": {"containerInstanceArn": "TBD", "logStreamName": None}}],
           "container": {"command": [], "environment": []}}
    assert classify(job).state == AttemptState.PREEMPTED


def test_exit_75_is_preempted():
    job = {**JOB, "status": "FAILED", "statusReason": "Essential container in task exited",
           "container": {"exitCode": 75}}
    assert classify(job).state == AttemptState.PREEMPTED


def test_other_failures_keep_the_reason():
    job = {**JOB, "status": "FAILED", "statusReason": "Essential container in task exited",
           "container": {"exitCode": 1, "reason": "OutOfMemoryError: Container killed due to memory usage"}}
    status = classify(job)
    assert status.state == AttemptState.FAILED and status.exit_code == 1
    assert status.reason == "Essential container in task exited (exit 1)"
    timeout = classify({**JOB, "status": "FAILED", "statusReason": "Job attempt duration exceeded timeout"})
    assert timeout.state == AttemptState.FAILED and "timeout" in timeout.reason


def test_cancelled_by_the_runner():
    job = {**JOB, "status": "FAILED", "statusReason": "spot-runner: cancelled by the user"}
    assert classify(job).state == AttemptState.CANCELLED


def test_list_jobs_summary_shape():
    summary = {"jobArn": JOB["jobArn"], "jobId": JOB["jobId"] + ":7", "jobName": "x", "createdAt": 1,
               "status": "FAILED", "statusReason": "Host EC2 (instance i-1) terminated.",
               "container": {"exitCode": 137}, "arrayProperties": {"index": 7}}
    assert classify(summary).state == AttemptState.PREEMPTED


def test_unknown_status():
    assert classify({**JOB, "status": "WEIRD"}).state == AttemptState.UNKNOWN


def test_job_names_are_sanitised():
    assert job_name("cifar-smoke-0-1") == "cifar-smoke-0-1"
    assert job_name("-a.b/c d") == "a-b-c-d"
    long = job_name("x" * 300)
    assert len(long) == 128 and long[0] == "x"
    assert job_name("x" * 300) != job_name("x" * 299)


def test_ids_carry_the_region():
    assert parse_id("eu-west-1/abc-123") == ("eu-west-1", "abc-123", None)
    assert parse_id("us-gov-west-1/abc-123:42") == ("us-gov-west-1", "abc-123", 42)
    with pytest.raises(Exception, match="not an AWS Batch attempt id"):
        parse_id("abc-123")


class FakeBatch:
    """describe_jobs / list_jobs over a 10,000-child array, counting calls (no network)."""

    def __init__(self, parent: str, statuses: list[str]) -> None:
        self.parent, self.statuses, self.calls = parent, statuses, []
        counts = {s: statuses.count(s) for s in set(statuses)}
        self.parent_job = {**JOB, "jobId": parent, "status": "PENDING",
                           "arrayProperties": {"size": len(statuses), "statusSummary": counts}}

    def child(self, i: int) -> dict:
        return {"jobId": f"{self.parent}:{i}", "status": self.statuses[i], "jobName": "x", "createdAt": 1}

    def describe_jobs(self, jobs: list[str]) -> dict:
        assert len(jobs) <= 100
        self.calls.append("describe_jobs")
        out = [self.parent_job] if self.parent in jobs else []
        return {"jobs": out + [self.child(int(j.split(":")[1])) for j in jobs if ":" in j]}

    def list_jobs(self, arrayJobId: str, jobStatus: str, maxResults: int, nextToken: str | None = None) -> dict:
        self.calls.append("list_jobs")
        matching = [i for i, s in enumerate(self.statuses) if s == jobStatus]
        start = int(nextToken or 0)
        page = matching[start:start + maxResults]
        answer = {"jobSummaryList": [self.child(i) for i in page]}
        if start + maxResults < len(matching):
            answer["nextToken"] = str(start + maxResults)
        return answer


@pytest.mark.parametrize("size", [100, 1000, 10000])
def test_poll_costs_at_most_one_call_per_100_children(size, monkeypatch):
    from runner.backends.aws_batch import AwsBatchBackend

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    statuses = (["RUNNING"] * (size // 2) + ["RUNNABLE"] * (size // 4) + ["SUCCEEDED"] * (size // 8)
                + ["FAILED"] * (size - size // 2 - size // 4 - size // 8))
    fake = FakeBatch("p-1", statuses)
    backend = AwsBatchBackend(region="us-east-1")
    backend._clients[("batch", "us-east-1")] = fake
    ids = [f"us-east-1/p-1:{i}" for i in range(size)]
    for cycle in range(2):
        fake.calls.clear()
        result = backend.poll(ids)
        assert [result[i].state.value for i in ids] == [
            {"RUNNABLE": "PENDING"}.get(s, s) for s in statuses]
        assert len(fake.calls) <= size / 100, (cycle, fake.calls)
    print(f"{size} children: {len(fake.calls)} calls per poll ({fake.calls})")


def test_one_array_only_for_children_0_to_n_of_one_attempt_in_their_own_folders():
    from runner.backends.aws_records import one_array
    from runner.backends.base import Submission
    from runner.spec import spec_from_dict

    spec = spec_from_dict({"name": "arr", "image": "img", "backend": "aws", "array": 3,
                           "aws": {"job_queue": "q"}, "checkpoint": {"uri": "s3://bucket/arr"}})

    def sub(index: int, attempt: int = 1, uri: str | None = None) -> Submission:
        uri = uri or spec.checkpoint_uri_for(index, "j")
        return Submission(spec=spec, job_id="j", key=f"j-{index}-{attempt}", attempt=attempt,
                          array_index=index, checkpoint_uri=uri, env={})

    assert one_array([sub(0), sub(1), sub(2)], limit=10)
    assert not one_array([sub(0), sub(1), sub(2)], limit=2)          # past Batch's array size
    assert not one_array([sub(0), sub(2)], limit=10)                 # a gap: index 1 is not being resubmitted
    assert not one_array([sub(0), sub(1, attempt=2)], limit=10)      # two attempt numbers
    assert not one_array([sub(0), sub(1, uri="s3://bucket/elsewhere/1")], limit=10)


def test_a_registration_answer_cut_short_is_waited_out_not_a_failed_submit():
    """Seen in the fault table (seed 836923361): RegisterJobDefinition's answer cut short, which botocore
    parses as an empty success, became KeyError 'jobDefinitionName' and a FAILED attempt, charged."""
    from runner.backends.aws_setup import ensure_definition
    from runner.errors import BackendUnavailable

    class Batch:
        def __init__(self) -> None:
            self.registered: list[int] = []

        def describe_job_definitions(self, jobDefinitionName: str, status: str) -> dict:
            return {"jobDefinitions": [{"revision": r} for r in self.registered]}

        def register_job_definition(self, **request: object) -> dict:
            self.registered.append(len(self.registered) + 1)
            return {}  # the service acted; its answer was lost on the way

    batch = Batch()
    with pytest.raises(BackendUnavailable, match="register_job_definition answered without jobDefinitionName"):
        ensure_definition(batch, {"jobDefinitionName": "spot-runner-x-abc"})
    assert ensure_definition(batch, {"jobDefinitionName": "spot-runner-x-abc"}) == ("spot-runner-x-abc:1", False)
    assert batch.registered == [1]  # asked again, it found the one registered: not a second
