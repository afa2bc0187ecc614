"""AWS Batch answers cut short on the way: botocore parses a truncated 200 body into a success
without its fields (found by the control-plane fault group, tests/faults/control_cases.py).

Such an answer is no answer: a poll reads UNKNOWN (never "not found" -> FAILED, which is charged)
and a submit is BackendUnavailable (the watcher tries again, after looking the job up by name).
The real boto3 client talks to a local server (tests/backends/wire.py) that answers ``{}``.
"""

from __future__ import annotations

from typing import Any

import pytest

from runner.backends.aws_batch import AwsBatchBackend
from runner.backends.aws_setup import job_name
from runner.errors import BackendUnavailable
from runner.spec import spec_from_dict
from runner.states import AttemptState
from tests.backends.wire import Wire
from tests.integration.test_aws_batch import submission

pytest.importorskip("boto3")


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)


def aws_spec() -> Any:
    return spec_from_dict({"name": "lost", "image": "spot-runner/base:latest", "command": ["true"], "backend": "aws",
                           "aws": {"region": "us-east-1", "job_queue": "q", "job_role_arn":
                                   "arn:aws:iam::123456789012:role/r"},
                           "checkpoint": {"uri": "s3://bucket/lost"}})


@pytest.mark.parametrize("body", [{}, {"ResponseMetadata": {}}])
def test_a_describe_jobs_answer_without_its_list_reads_unknown(body: Any) -> None:
    with Wire() as wire:
        wire.answer(200, body)
        backend = AwsBatchBackend(endpoint_url=wire.url)
        status = backend.poll(["us-east-1/6f1c0b8e-job"])["us-east-1/6f1c0b8e-job"]
    assert status.state == AttemptState.UNKNOWN, status
    assert "answered without jobs" in status.reason and "\n" not in status.reason


def test_a_submit_job_answer_without_its_id_is_unavailable_and_the_retry_looks_it_up() -> None:
    spec = aws_spec()
    sub = submission(spec)
    with Wire() as wire:
        wire.answer(200, {"jobDefinitions": [{"jobDefinitionName": "d", "revision": 3}]}).answer(200, {})
        backend = AwsBatchBackend(endpoint_url=wire.url)
        with pytest.raises(BackendUnavailable, match="submit_job answered without jobId"):
            backend.submit(sub)
        submits = [p for m, p in wire.seen if m == "POST" and p.endswith("/submitjob")]
        assert len(submits) == 1, wire.seen  # the SDK did not resend it
        # the next try: the job was created after all; the lookup by name finds it, nothing is sent again
        wire.answers.clear()
        wire.answer(200, {"jobSummaryList": [{"jobId": "abc", "jobName": job_name(sub.key),
                                              "createdAt": 1}]})
        seen_before = len(wire.seen)
        found = backend.submit(sub)
        after = wire.seen[seen_before:]
    assert found == "us-east-1/abc", found
    assert not [p for _, p in after if p.endswith("/submitjob")], after
