"""Golden request payloads of the AWS Batch backend, checked against botocore's service model.

The payloads are built from jobs/cifar-smoke.yaml with a fixed job id; a change shows as a diff
against tests/golden/. Every key is validated, recursively, against the input shapes botocore
defines for RegisterJobDefinition and SubmitJob, so a misspelt or vanished field is caught
without a cloud. Regenerate on purpose with ``RUNNER_UPDATE_GOLDEN=1 pytest tests/unit/test_aws_golden.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

boto3 = pytest.importorskip("boto3")

from runner.backends.aws_setup import definition_request, submit_request  # noqa: E402
from runner.backends.base import Submission  # noqa: E402
from runner.spec import load_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
JOB_ID = "cifar-smoke-20260101-000000-abcd"


def payloads() -> dict[str, dict[str, Any]]:
    spec = load_spec(ROOT / "jobs" / "cifar-smoke.yaml", {"backend": "aws",
                                                          "checkpoint.uri": "s3://spot-runner-ckpt/cifar-smoke"})
    uri = spec.checkpoint_uri_for(0, JOB_ID)
    sub = Submission(spec=spec, job_id=JOB_ID, key=f"{JOB_ID}-0-1", attempt=1, array_index=0,
                     checkpoint_uri=uri, env=spec.container_env(JOB_ID, 1, uri))
    definition = definition_request(spec, sub.env)
    return {"aws_register_job_definition": definition,
            "aws_submit_job": submit_request(sub, f"{definition['jobDefinitionName']}:1")}


def operation(name: str) -> Any:
    client = boto3.client("batch", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    return client._service_model.operation_model(name).input_shape


def check(value: Any, shape: Any, path: str) -> list[str]:
    """Return every way ``value`` does not fit botocore's ``shape``."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{path}: expected an object for {shape.name}"]
        problems = [f"{path}.{key}: not a field of {shape.name} (fields: {', '.join(shape.members)})"
                    for key in value if key not in shape.members]
        problems += [f"{path}: {shape.name} requires {key}" for key in shape.required_members if key not in value]
        for key, item in value.items():
            if key in shape.members:
                problems += check(item, shape.members[key], f"{path}.{key}")
        return problems
    if kind == "list":
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [p for i, item in enumerate(value) for p in check(item, shape.member, f"{path}[{i}]")]
    if kind == "map":
        if not isinstance(value, dict):
            return [f"{path}: expected a map"]
        return [p for k, v in value.items() for p in check(k, shape.key, f"{path}<key>") + check(v, shape.value,
                                                                                             f"{path}.{k}")]
    if kind == "string":
        if not isinstance(value, str):
            return [f"{path}: expected a string, got {value!r}"]
        enum = shape.enum
        return [f"{path}: {value!r} is not one of {enum}"] if enum and value not in enum else []
    if kind in ("integer", "long"):
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{path}: expected an integer"]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean"]
    return []


@pytest.mark.parametrize("name,op", [("aws_register_job_definition", "RegisterJobDefinition"),
                                     ("aws_submit_job", "SubmitJob")])
def test_payload_matches_golden_and_botocore(name, op):
    payload = payloads()[name]
    assert check(payload, operation(op), op) == []
    path = GOLDEN / f"{name}.json"
    text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
    if os.environ.get("RUNNER_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert json.loads(path.read_text()) == payload, f"{name} drifted from {path}; review and regenerate"


def test_the_checker_catches_drift():
    bad = {**payloads()["aws_submit_job"], "containerOverride": {}}
    bad["retryStrategy"] = {"attempts": 3, "evaluateOnExit": [{"onStatusReason": "Host EC2*", "action": "RETRIED"}]}
    problems = check(bad, operation("SubmitJob"), "SubmitJob")
    assert any("containerOverride:" in p for p in problems) and any("RETRIED" in p for p in problems), problems


def test_payload_contents():
    p = payloads()
    container = p["aws_register_job_definition"]["containerProperties"]
    assert {r["type"]: r["value"] for r in container["resourceRequirements"]} == {"VCPU": "2", "MEMORY": "2048"}
    assert container["image"] == "localhost/runner-cifar:latest"
    env = {e["name"] for e in container["environment"]}
    assert {"RUNNER_NOTICE", "RUNNER_CHECKPOINT_EVERY", "PYTHONUNBUFFERED"} <= env and "RUNNER_ATTEMPT" not in env
    assert p["aws_register_job_definition"]["timeout"] == {"attemptDurationSeconds": 600}
    submit = p["aws_submit_job"]
    overrides = {e["name"]: e["value"] for e in submit["containerOverrides"]["environment"]}
    assert overrides == {"RUNNER_ATTEMPT": "1", "RUNNER_JOB_ID": JOB_ID,
                         "RUNNER_CHECKPOINT_URI": "s3://spot-runner-ckpt/cifar-smoke"}
    rules = submit["retryStrategy"]["evaluateOnExit"]
    assert rules[0] == {"onStatusReason": "Host EC2*", "action": "RETRY"} and rules[-1]["action"] == "EXIT"
