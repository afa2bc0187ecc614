"""Google Cloud Batch: the spec's ``gcp:`` section, names, and the job the backend creates.

One attempt is one Batch job named after the attempt's key (``[a-z][a-z0-9-]{0,62}``, shortened
with a hash of the key), so submitting a key twice adopts the first job instead of starting a
second one. The job asks for one container task (``task_count`` N for array children submitted
together: task i gets child i's contract environment through ``task_environments``, i.e.
``BATCH_TASK_INDEX`` = i), SPOT provisioning (STANDARD for ``spot: false``), and ONE lifecycle
policy: RETRY_TASK on exit codes 50001 (GCP's spot preemption) and 75 (the contract's "stopped
after a notice"), up to ``max_retry_count = min(10, retries.preemptions)``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from runner import contract
from runner.backends.base import Submission
from runner.errors import BackendError, SubmitError
from runner.spec.model import JobSpec, SpecModel

EXIT_SPOT_PREEMPTION = 50001
EXIT_PREEMPTED = contract.EXIT_PREEMPTED
RETRY_EXIT_CODES = (EXIT_SPOT_PREEMPTION, EXIT_PREEMPTED)
MAX_RETRY_LIMIT = 10  # GCP accepts max_retry_count 0..10
GROUP = "group0"
LABEL_MANAGED = "spot_runner_managed"  # label keys with underscores: filters need no quoting
LABEL_JOB = "spot_runner_job"
LABEL_KEY = "spot_runner_key"
KEY_VARIABLE = "RUNNER_ATTEMPT_KEY"  # in each array task's environment, to find it by key
#: GCP's reserved exit codes other than preemption: a lost VM or a limit, never the task's code.
RESERVED_EXITS = {50002: "VM reporting timeout", 50003: "VM rebooted during the task",
                  50004: "VM unresponsive", 50005: "max run duration exceeded", 50006: "VM recreated"}
_JOB_ID = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_EXIT_IN_TEXT = re.compile(r"exit code (\d+)")
_TASK_SUFFIX = re.compile(r"^(?P<job>projects/[^/]+/locations/[^/]+/jobs/[^/]+)"
                          r"(?:/taskGroups/[^/]+/tasks/(?P<index>\d+))?$")


#: GCP families whose GPUs come with the machine type (the accelerator fields only repeat them).
_GCP_BUNDLED_GPU = ("a2-", "a3-", "g2-")


class GcpSettings(SpecModel):
    """The ``gcp:`` section."""

    project: str | None = None
    region: str | None = None
    machine_type: str | None = None
    accelerator_type: str | None = None
    accelerator_count: int | None = Field(default=None, ge=0, le=64)
    service_account: str | None = None


def gcp_settings(spec: JobSpec) -> GcpSettings:
    """Return the spec's ``gcp:`` section (empty settings when it has none)."""
    section = spec.section("gcp")
    return section if isinstance(section, GcpSettings) else GcpSettings()


# ---------------------------------------------------------------------------- names


def job_id_for(key: str) -> str:
    """Return a valid Batch job id for ``key``: a letter first, ``[a-z0-9-]``, at most 63 chars.

    The id ends with a hash of the whole key, so shortening never makes two keys collide.
    """
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    base = re.sub(r"[^a-z0-9-]+", "-", key.lower()).strip("-")
    if not base[:1].isalpha():
        base = "sr-" + base
    base = base[: 63 - len(digest) - 1].rstrip("-")
    job_id = f"{base}-{digest}"
    assert _JOB_ID.match(job_id), job_id
    return job_id


def label_value(text: str) -> str:
    """Return ``text`` as a GCP label value: lowercase ``[a-z0-9_-]``, at most 63 characters."""
    value = re.sub(r"[^a-z0-9_-]+", "-", text.lower())
    if len(value) > 63:
        value = value[:52] + "-" + hashlib.sha256(text.encode()).hexdigest()[:10]
    return value


def split_id(backend_id: str) -> tuple[str, int | None]:
    """Return (job name, task index or None) of a backend id."""
    m = _TASK_SUFFIX.match(backend_id)
    if m is None:
        raise BackendError(f"{backend_id!r} is not a GCP Batch job name; expected "
                           "projects/P/locations/R/jobs/J (as `runner status` shows)")
    index = m.group("index")
    return m.group("job"), None if index is None else int(index)


# ---------------------------------------------------------------------------- the request


def build_job(subs: Sequence[Submission]) -> Any:
    """Return the ``batch_v1.Job`` that runs ``subs`` (one task each, all of one job spec)."""
    from google.cloud import batch_v1
    from google.protobuf import duration_pb2

    first = subs[0]
    spec, res = first.spec, first.spec.resources
    gcp = gcp_settings(spec)
    if not first.checkpoint_uri.startswith(("gs://", "s3://", "az://")):
        raise SubmitError(f"checkpoint URI {first.checkpoint_uri} is on this machine, which GCP VMs "
                          "cannot reach; set checkpoint.uri: gs://bucket/prefix")
    entrypoint, commands = "", list(spec.args)
    if spec.command:
        entrypoint, commands = spec.command[0], [*spec.command[1:], *spec.args]
    container = batch_v1.Runnable.Container(image_uri=spec.image, entrypoint=entrypoint, commands=commands)
    shared, per_task = _environments(subs)
    task_spec = batch_v1.TaskSpec(
        runnables=[batch_v1.Runnable(container=container)],
        compute_resource=batch_v1.ComputeResource(
            cpu_milli=int(res.cpus * 1000), memory_mib=max(1, res.memory_bytes // 2**20),
            boot_disk_mib=(res.disk_bytes or 0) // 2**20),
        max_retry_count=min(MAX_RETRY_LIMIT, spec.retries.preemptions),
        lifecycle_policies=[batch_v1.LifecyclePolicy(
            action=batch_v1.LifecyclePolicy.Action.RETRY_TASK,
            action_condition=batch_v1.LifecyclePolicy.ActionCondition(exit_codes=list(RETRY_EXIT_CODES)))],
        environment=batch_v1.Environment(variables=shared),
    )
    if spec.timeout_s is not None:
        task_spec.max_run_duration = duration_pb2.Duration(seconds=int(spec.timeout_s))
    group = batch_v1.TaskGroup(task_spec=task_spec, task_count=len(subs), parallelism=len(subs))
    if len(subs) > 1:
        group.task_environments = [batch_v1.Environment(variables=v) for v in per_task]
    policy = batch_v1.AllocationPolicy.InstancePolicy(
        provisioning_model=(batch_v1.AllocationPolicy.ProvisioningModel.SPOT if first.capacity == "spot"
                            else batch_v1.AllocationPolicy.ProvisioningModel.STANDARD))
    if gcp.machine_type:
        policy.machine_type = gcp.machine_type
    accelerator_type = gcp.accelerator_type or res.gpu_type
    accelerator_count = gcp.accelerator_count if gcp.accelerator_count is not None else res.gpus
    if accelerator_type and accelerator_count:
        policy.accelerators = [batch_v1.AllocationPolicy.Accelerator(
            type_=accelerator_type, count=accelerator_count)]
    allocation = batch_v1.AllocationPolicy(
        instances=[batch_v1.AllocationPolicy.InstancePolicyOrTemplate(
            policy=policy, install_gpu_drivers=bool(accelerator_type and accelerator_count))])
    if gcp.service_account:
        allocation.service_account = batch_v1.ServiceAccount(email=gcp.service_account)
    labels = {LABEL_MANAGED: "1", LABEL_JOB: label_value(first.job_id)}
    if len(subs) == 1:
        labels[LABEL_KEY] = label_value(first.key)
    return batch_v1.Job(
        task_groups=[group], allocation_policy=allocation, labels=labels,
        logs_policy=batch_v1.LogsPolicy(destination=batch_v1.LogsPolicy.Destination.CLOUD_LOGGING))


def _environments(subs: Sequence[Submission]) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Split the submissions' environments: what all tasks share, and what differs per task."""
    envs = [dict(sub.env) for sub in subs]
    if len(subs) == 1:
        return envs[0], []
    shared = {k: v for k, v in envs[0].items() if all(e.get(k) == v for e in envs[1:])}
    per_task = [{**{k: v for k, v in e.items() if k not in shared}, KEY_VARIABLE: sub.key}
                for e, sub in zip(envs, subs)]
    return shared, per_task



def parent_of(spec: JobSpec) -> str | None:
    """Return ``projects/P/locations/R`` of a spec, or None when it lacks either."""
    gcp = gcp_settings(spec)
    if not gcp.project or not gcp.region:
        return None
    return f"projects/{gcp.project}/locations/{gcp.region}"
