"""The GCP Batch request payload: a golden file, and every field name checked against the SDK's protos.

Regenerate the golden file after an intended change with ``RUNNER_UPDATE_GOLDEN=1 pytest <this file>``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

batch_v1 = pytest.importorskip("google.cloud.batch_v1")
from google.protobuf import json_format  # noqa: E402
from google.protobuf.descriptor import Descriptor, FieldDescriptor  # noqa: E402

from runner.backends.base import Submission  # noqa: E402
from runner.backends.gcp_setup import (  # noqa: E402
    KEY_VARIABLE,
    RETRY_EXIT_CODES,
    build_job,
    job_id_for,
)
from runner.spec import load_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "gcp_job.json"
JOB_ID = "cifar-smoke-000000"
URI = "gs://spot-runner-test/cifar-smoke"


def submission(index: int = 0, array: int = 1) -> Submission:
    spec = load_spec(ROOT / "jobs" / "cifar-smoke.yaml",
                     {"backend": "gcp", "checkpoint.uri": URI, "array": array})
    uri = spec.checkpoint_uri_for(index, JOB_ID)
    return Submission(spec=spec, job_id=JOB_ID, key=f"{JOB_ID}-{index}-1", attempt=1, array_index=index,
                      checkpoint_uri=uri, env=spec.container_env(JOB_ID, 1, uri))


def wire(job: Any) -> dict[str, Any]:
    """The request body as the REST transport sends it: JSON names, enums as integers."""
    return json.loads(json_format.MessageToJson(batch_v1.Job.pb(job), use_integers_for_enums=True))


def unknown_fields(payload: Any, descriptor: Descriptor, path: str = "Job") -> list[str]:
    """Return the paths of keys in ``payload`` that are not fields of ``descriptor``, recursively."""
    bad = []
    fields = {f.json_name: f for f in descriptor.fields} | {f.name: f for f in descriptor.fields}
    for key, value in payload.items():
        field = fields.get(key)
        if field is None:
            bad.append(f"{path}.{key}")
            continue
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        sub = field.message_type
        if sub.GetOptions().map_entry:  # labels, variables: free keys; check message values only
            value_field = sub.fields_by_name["value"]
            if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                for k, v in value.items():
                    bad += unknown_fields(v, value_field.message_type, f"{path}.{key}[{k}]")
            continue
        if sub.full_name.startswith("google.protobuf."):  # Duration, Timestamp: JSON strings
            continue
        if _repeated(field):
            for i, item in enumerate(value):
                bad += unknown_fields(item, sub, f"{path}.{key}[{i}]")
        else:
            bad += unknown_fields(value, sub, f"{path}.{key}")
    return bad


def _repeated(field: FieldDescriptor) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf >= 6; older ones have only ``label``
    return bool(flag) if flag is not None else field.label == FieldDescriptor.LABEL_REPEATED


def test_job_matches_the_golden_file():
    payload = wire(build_job([submission()]))
    if os.environ.get("RUNNER_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    assert payload == json.loads(GOLDEN.read_text())


def test_golden_field_names_are_the_sdk_s():
    golden = json.loads(GOLDEN.read_text())
    assert unknown_fields(golden, batch_v1.Job.pb().DESCRIPTOR) == []
    # and the checker does catch a wrong name, at any depth
    golden["taskGroups"][0]["taskSpec"]["runnables"][0]["container"]["imageURI"] = "x"
    golden["allocationPolicy"]["instances"][0]["policy"]["provisioningModle"] = 2
    assert sorted(unknown_fields(golden, batch_v1.Job.pb().DESCRIPTOR)) == [
        "Job.allocationPolicy.instances[0].policy.provisioningModle",
        "Job.taskGroups[0].taskSpec.runnables[0].container.imageURI"]


def test_the_golden_job_says_what_the_issue_asks():
    job = batch_v1.Job.from_json(GOLDEN.read_text())
    (group,) = job.task_groups
    spec = group.task_spec
    assert group.task_count == 1
    assert spec.runnables[0].container.image_uri == "localhost/runner-cifar:latest"
    assert list(spec.runnables[0].container.commands)[:2] == ["--data", "synthetic"]
    (policy,) = spec.lifecycle_policies
    assert policy.action == batch_v1.LifecyclePolicy.Action.RETRY_TASK
    assert tuple(policy.action_condition.exit_codes) == RETRY_EXIT_CODES == (50001, 75)
    assert spec.max_retry_count == 10  # min(10, retries.preemptions = 20)
    assert spec.compute_resource.cpu_milli == 2000 and spec.compute_resource.memory_mib == 2048
    assert spec.environment.variables["RUNNER_CHECKPOINT_URI"] == URI
    instance = job.allocation_policy.instances[0].policy
    assert instance.provisioning_model == batch_v1.AllocationPolicy.ProvisioningModel.SPOT
    assert instance.machine_type == "e2-standard-2"
    assert job.labels["spot_runner_job"] == JOB_ID


def test_accelerators_and_service_account_come_from_the_spec():
    sub = submission()
    spec = sub.spec.model_copy(update={"gcp": sub.spec.gcp.model_copy(update={
        "accelerator_type": "nvidia-tesla-t4", "accelerator_count": 1,
        "service_account": "runner@my-project.iam.gserviceaccount.com"}), "spot": True})
    job = build_job([Submission(**{**sub.__dict__, "spec": spec})])
    (accelerator,) = job.allocation_policy.instances[0].policy.accelerators
    assert (accelerator.type_, accelerator.count) == ("nvidia-tesla-t4", 1)
    assert job.allocation_policy.instances[0].install_gpu_drivers
    assert job.allocation_policy.service_account.email == "runner@my-project.iam.gserviceaccount.com"
    assert unknown_fields(wire(job), batch_v1.Job.pb().DESCRIPTOR) == []


def test_array_children_are_one_job_with_a_task_each():
    subs = [submission(i, array=3) for i in range(3)]
    job = build_job(subs)
    (group,) = job.task_groups
    assert group.task_count == 3 and len(group.task_environments) == 3
    shared = group.task_spec.environment.variables
    assert shared["RUNNER_JOB_ID"] == JOB_ID and "RUNNER_CHECKPOINT_URI" not in shared
    for i, env in enumerate(group.task_environments):  # BATCH_TASK_INDEX i gets child i's contract env
        assert env.variables["RUNNER_CHECKPOINT_URI"] == f"{URI}/{i}"
        assert env.variables[KEY_VARIABLE] == subs[i].key
    assert unknown_fields(wire(job), batch_v1.Job.pb().DESCRIPTOR) == []


def test_a_local_checkpoint_uri_is_refused():
    from runner.errors import SubmitError

    sub = submission()
    with pytest.raises(SubmitError, match="gs://"):
        build_job([Submission(**{**sub.__dict__, "checkpoint_uri": "file:///tmp/x"})])


def test_job_id_of_the_golden_key():
    assert job_id_for(f"{JOB_ID}-0-1").startswith(f"{JOB_ID}-0-1-")


def test_the_standin_speaks_the_sdk_s_enum_values():
    from tests.standins import gcp_batch as standin

    assert standin.JOB_STATES == {m.name: m.value for m in batch_v1.JobStatus.State}
    assert standin.TASK_STATES == {m.name: m.value for m in batch_v1.TaskStatus.State}
    assert standin.ACTIONS == {m.name: m.value for m in batch_v1.LifecyclePolicy.Action}
