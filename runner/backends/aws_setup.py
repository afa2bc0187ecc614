"""AWS Batch: the spec's ``aws:`` section, the requests the backend sends, and ``runner init aws``.

The requests: one job definition per spec (named after the spec and a hash of its content, so the
same spec reuses one revision; per-attempt values travel as ``containerOverrides``), a retry
strategy that lets Batch retry spot reclaims (``Host EC2*``) and exit 75 itself a few times, and
job names made from the attempt's key (what ``find`` looks them up by).

``runner init aws`` creates or updates, idempotently, a spot compute environment and a job queue.

The compute environment is MANAGED, ``SPOT`` with ``SPOT_PRICE_CAPACITY_OPTIMIZED`` allocation,
``minvCpus`` 0 (nothing runs, nothing is paid) and the spec's ``max_vcpus``, instance types,
subnets, security groups and instance profile. What cannot change in place (type, allocation,
subnets, ...) is reported with the fix rather than changed behind the user's back.

Its instances start from the launch template ``<compute environment>-imds`` (``ensure_imds_template``):
metadata options ``HttpTokens=required``, ``HttpPutResponseHopLimit=2``, so that task containers on a
bridge network can get IMDSv2 tokens and read spot interruption notices (with the default hop limit
of 1 the token's answer never reaches a container). A launch template the user set is left alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import Field

from runner import contract
from runner.backends.aws_records import field
from runner.backends.transient import describe
from runner.errors import BackendError, SubmitError
from runner.spec.model import JobSpec, SpecModel

if TYPE_CHECKING:
    from runner.backends.base import Submission

EXIT_PREEMPTED = contract.EXIT_PREEMPTED
PER_ATTEMPT_ENV = (contract.JOB_ID, contract.ATTEMPT, contract.CHECKPOINT_URI)
_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]+")

DEFAULT_MAX_VCPUS = 256
WAIT_S = 300


class AwsSettings(SpecModel):
    """The ``aws:`` section; ``runner init aws`` can create what it names."""

    region: str | None = None
    job_queue: str | None = None
    compute_environment: str | None = None
    instance_types: list[str] = Field(default_factory=list, max_length=100)
    subnets: list[str] = Field(default_factory=list, max_length=100)
    security_group_ids: list[str] = Field(default_factory=list, max_length=100)
    instance_role: str | None = None
    service_role: str | None = None
    max_vcpus: int | None = Field(default=None, ge=1, le=1_000_000)
    job_role_arn: str | None = None
    log_group: str | None = None
    on_demand_job_queue: str | None = None      # default: <job_queue>-ondemand
    on_demand_compute_environment: str | None = None


def aws_settings(spec: JobSpec) -> AwsSettings:
    """Return the spec's ``aws:`` section (empty settings when it has none)."""
    section = spec.section("aws")
    return section if isinstance(section, AwsSettings) else AwsSettings()


def job_name(key: str) -> str:
    """Return ``key`` as a Batch job name: ``[A-Za-z0-9][A-Za-z0-9_-]*``, at most 128 characters."""
    name = _NAME_BAD.sub("-", key).lstrip("-_")
    if not name:
        name = "job"
    if len(name) > 128:
        digest = hashlib.sha256(key.encode()).hexdigest()[:8]
        name = name[:119] + "-" + digest
    return name


def retry_strategy(spec: JobSpec) -> dict[str, Any]:
    """Retry spot reclaims and exit 75 inside Batch (a few times); exit on anything else."""
    attempts = max(1, min(5, spec.retries.preemptions + 1))
    return {"attempts": attempts, "evaluateOnExit": [
        {"onStatusReason": "Host EC2*", "action": "RETRY"},
        {"onExitCode": str(EXIT_PREEMPTED), "action": "RETRY"},
        {"onReason": "*", "action": "EXIT"},
    ]}


def definition_request(spec: JobSpec, env: dict[str, str]) -> dict[str, Any]:
    """Return ``register_job_definition``'s arguments for ``spec`` (stable env only)."""
    res = spec.resources
    requirements = [{"type": "VCPU", "value": str(max(1, math.ceil(res.cpus)))},
                    {"type": "MEMORY", "value": str(max(4, math.ceil(res.memory_bytes / 2**20)))}]
    if res.gpus:
        requirements.append({"type": "GPU", "value": str(res.gpus)})
    container: dict[str, Any] = {
        "image": spec.image,
        "resourceRequirements": requirements,
        "environment": [{"name": k, "value": v} for k, v in sorted(env.items()) if k not in PER_ATTEMPT_ENV],
    }
    command = [*(spec.command or []), *spec.args]
    if command:
        container["command"] = command
    settings = aws_settings(spec)
    if settings.job_role_arn:
        container["jobRoleArn"] = settings.job_role_arn
    if settings.log_group:
        container["logConfiguration"] = {"logDriver": "awslogs",
                                         "options": {"awslogs-group": settings.log_group}}
    request: dict[str, Any] = {"type": "container", "containerProperties": container,
                               "retryStrategy": retry_strategy(spec),
                               "tags": {"spot-runner.spec": spec.name}}
    if spec.timeout_s is not None:
        request["timeout"] = {"attemptDurationSeconds": max(60, math.ceil(spec.timeout_s))}
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:12]
    request["jobDefinitionName"] = job_name(f"spot-runner-{spec.name}-{digest}")
    return {"jobDefinitionName": request.pop("jobDefinitionName"), **request}


def ensure_definition(batch: Any, request: dict[str, Any]) -> tuple[str, bool]:
    """``(name:revision, registered)`` of the job definition ``request`` registers: the newest ACTIVE
    revision of its name (the name carries a hash of the request), else a new one registered now."""
    name = request["jobDefinitionName"]
    found = batch.describe_job_definitions(jobDefinitionName=name, status="ACTIVE")
    revisions = sorted(int(d["revision"]) for d in field(found, "jobDefinitions", "describe_job_definitions"))
    if revisions:
        return f"{name}:{revisions[-1]}", False
    answer = batch.register_job_definition(**request)  # cut short, it reads as {}: ask again (it finds it then)
    return f"{field(answer, 'jobDefinitionName', 'register_job_definition')}:" \
           f"{field(answer, 'revision', 'register_job_definition')}", True


def submit_request(sub: Submission, definition: str, array_size: int | None = None) -> dict[str, Any]:
    """Return ``submit_job``'s arguments for one attempt (or an array of ``array_size``)."""
    spec = sub.spec
    env = {k: sub.env[k] for k in PER_ATTEMPT_ENV if k in sub.env}
    if array_size is not None:  # every child sees the base URI and appends its own index
        env[contract.CHECKPOINT_URI] = sub.checkpoint_uri.rsplit("/", 1)[0]
        env[contract.ARRAY_INDEX_VAR] = "AWS_BATCH_JOB_ARRAY_INDEX"
    request: dict[str, Any] = {
        "jobName": job_name(sub.key),
        "jobQueue": queue_for(spec, sub.capacity),
        "jobDefinition": definition,
        "containerOverrides": {"environment": [{"name": k, "value": v} for k, v in sorted(env.items())]},
        "retryStrategy": retry_strategy(spec),
        "tags": {"spot-runner.job": sub.job_id, "spot-runner.key": sub.key,
                 "spot-runner.attempt": str(sub.attempt)},
        "propagateTags": True,
    }
    if array_size is not None:
        request["arrayProperties"] = {"size": array_size}
    if spec.timeout_s is not None:
        request["timeout"] = {"attemptDurationSeconds": max(60, math.ceil(spec.timeout_s))}
    return request


def queue_for(spec: JobSpec, capacity: str) -> str:
    """The job queue an attempt of ``capacity`` goes to: ``job_queue`` (spot), or its on-demand sibling."""
    queue = required(spec, "job_queue")
    if capacity == "spot":
        return queue
    return aws_settings(spec).on_demand_job_queue or f"{queue}-ondemand"


def required(spec: JobSpec, field: str) -> str:
    """Return a required ``aws:`` setting, or a one-line SubmitError naming it."""
    value = getattr(aws_settings(spec), field, None)
    if not value:
        raise SubmitError(f"field 'aws.{field}' is required with backend aws; add {field}: ... under aws:")
    return str(value)


def ensure_batch(batch: Any, spec: JobSpec, echo: Callable[[str], None], wait_s: float = WAIT_S,
                 ec2: Any = None) -> dict[str, str]:
    """Make sure the compute environment and the queue exist as the spec asks; return their ARNs."""
    from botocore.exceptions import BotoCoreError, ClientError

    settings = aws_settings(spec)
    queue = settings.job_queue
    if not queue:
        raise BackendError("field 'aws.job_queue' is required for `runner init aws`; add job_queue: ... under aws:")
    ce_name = settings.compute_environment or f"{queue}-spot"
    od_queue = queue_for(spec, "on-demand")
    od_name = settings.on_demand_compute_environment or f"{queue}-ondemand"
    try:
        template = ensure_imds_template(ec2 or _ec2_like(batch), f"{ce_name}-imds")
        ce_arn = _ensure_compute_environment(batch, ce_name, settings, echo, wait_s, template)
        queue_arn = _ensure_queue(batch, queue, ce_arn, echo)
        # On-demand capacity beside it, for the attempts a deadline needs (minvCpus 0: idle costs nothing).
        od_arn = _ensure_compute_environment(batch, od_name, settings, echo, wait_s, template, "on-demand")
        od_queue_arn = _ensure_queue(batch, od_queue, od_arn, echo)
    except (BotoCoreError, ClientError) as exc:
        raise BackendError(f"`runner init aws` failed: {describe(exc)}") from exc
    return {"compute_environment": ce_arn, "job_queue": queue_arn,
            "on_demand_compute_environment": od_arn, "on_demand_job_queue": od_queue_arn}


#: (computeResources type, allocation strategy) by capacity.
CAPACITY_KINDS = {"spot": ("SPOT", "SPOT_PRICE_CAPACITY_OPTIMIZED"), "on-demand": ("EC2", "BEST_FIT_PROGRESSIVE")}


def compute_resources(settings: AwsSettings, capacity: str = "spot") -> dict[str, Any]:
    """Return the ``computeResources`` of the spot (or on-demand) compute environment for ``settings``."""
    missing = [f for f in ("subnets", "security_group_ids", "instance_role") if not getattr(settings, f)]
    if missing:
        raise BackendError(f"`runner init aws` needs aws.{missing[0]} to create a compute environment; "
                           f"add {missing[0]}: ... under aws: (subnets and security groups of your VPC, "
                           "the instance profile of ecsInstanceRole)")
    kind, strategy = CAPACITY_KINDS[capacity]
    return {
        "type": kind,
        "allocationStrategy": strategy,
        "minvCpus": 0,
        "maxvCpus": settings.max_vcpus or DEFAULT_MAX_VCPUS,
        "instanceTypes": list(settings.instance_types) or ["optimal"],
        "subnets": list(settings.subnets),
        "securityGroupIds": list(settings.security_group_ids),
        "instanceRole": settings.instance_role,
    }


def _ensure_compute_environment(batch: Any, name: str, settings: AwsSettings, echo: Callable[[str], None],
                                wait_s: float, template: dict[str, str], capacity: str = "spot") -> str:
    kind, strategy = CAPACITY_KINDS[capacity]
    found = batch.describe_compute_environments(computeEnvironments=[name]).get("computeEnvironments", [])
    if not found:
        wanted = {**compute_resources(settings, capacity), "launchTemplate": template}
        kwargs: dict[str, Any] = {"computeEnvironmentName": name, "type": "MANAGED", "state": "ENABLED",
                                  "computeResources": wanted, "tags": {"spot-runner": "1"}}
        if settings.service_role:
            kwargs["serviceRole"] = settings.service_role
        arn = str(batch.create_compute_environment(**kwargs)["computeEnvironmentArn"])
        echo(f"created compute environment {name}: {kind}, {strategy}, "
             f"0-{wanted['maxvCpus']} vCPUs, {', '.join(wanted['instanceTypes'])}, {_imds_said(template)} ({arn})")
        _wait_valid(batch, name, echo, wait_s)
        return arn
    ce = found[0]
    arn = str(ce["computeEnvironmentArn"])
    have = ce.get("computeResources") or {}
    problems = []
    if ce.get("type") != "MANAGED" or have.get("type") != kind:
        problems.append(f"it is {ce.get('type')}/{have.get('type')}, not MANAGED/{kind}")
    if have.get("allocationStrategy") not in (None, strategy):
        problems.append(f"its allocation strategy is {have.get('allocationStrategy')}")
    for problem in problems:
        echo(f"warning: compute environment {name}: {problem}; this cannot change in place: "
             f"delete it, or name another one with aws.{'compute_environment' if capacity == 'spot' else 'on_demand_compute_environment'}")
    changes: dict[str, Any] = {}
    what: list[str] = []
    max_vcpus = settings.max_vcpus
    if max_vcpus and int(have.get("maxvCpus") or 0) != max_vcpus:
        changes["computeResources"] = {"maxvCpus": max_vcpus}
        what.append(f"maxvCpus {have.get('maxvCpus')} -> {max_vcpus}")
    theirs = have.get("launchTemplate") or {}
    ours = theirs.get("launchTemplateName") == template["launchTemplateName"]
    if not theirs or (ours and str(theirs.get("version")) != template["version"]):
        changes.setdefault("computeResources", {})["launchTemplate"] = template
        what.append(_imds_said(template))
    said = _imds_said(template)
    if theirs and not ours:
        mine = theirs.get("launchTemplateName") or theirs.get("launchTemplateId")
        said = f"your launch template {mine}"
        echo(f"note: compute environment {name} uses your launch template {mine}: "
             "give it the metadata options HttpTokens=required and HttpPutResponseHopLimit=2, or task containers "
             "cannot read spot interruption notices with IMDSv2")
    if ce.get("state") != "ENABLED":
        changes["state"] = "ENABLED"
        what.append(f"state {ce.get('state')} -> ENABLED")
    if changes:
        batch.update_compute_environment(computeEnvironment=name, **changes)
        echo(f"updated compute environment {name}: {', '.join(what)}")
        _wait_valid(batch, name, echo, wait_s)
    else:
        echo(f"found compute environment {name} ({have.get('type')}, {have.get('allocationStrategy')}, "
             f"0-{have.get('maxvCpus')} vCPUs, {said}): unchanged")
    return arn


#: The instance metadata options task containers need (hop limit 2: the token's answer crosses the bridge).
IMDS_OPTIONS = {"HttpTokens": "required", "HttpPutResponseHopLimit": 2, "HttpEndpoint": "enabled"}


def ensure_imds_template(ec2: Any, name: str) -> dict[str, str]:
    """Create (or bring up to date) the launch template ``name`` with ``IMDS_OPTIONS``; return it for Batch."""
    from botocore.exceptions import ClientError

    data = {"MetadataOptions": IMDS_OPTIONS}
    try:
        [found] = ec2.describe_launch_templates(LaunchTemplateNames=[name])["LaunchTemplates"]
    except ClientError as exc:
        if "NotFound" not in str(exc.response.get("Error", {}).get("Code", "")):
            raise
        made = ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData=data, TagSpecifications=[
            {"ResourceType": "launch-template", "Tags": [{"Key": "spot-runner", "Value": "1"}]}])
        return {"launchTemplateName": name, "version": str(made["LaunchTemplate"]["LatestVersionNumber"])}
    version = str(found["DefaultVersionNumber"])
    [current] = ec2.describe_launch_template_versions(LaunchTemplateName=name, Versions=[version])[
        "LaunchTemplateVersions"]
    options = current.get("LaunchTemplateData", {}).get("MetadataOptions", {})
    if any(options.get(key) != value for key, value in IMDS_OPTIONS.items()):
        made = ec2.create_launch_template_version(LaunchTemplateName=name, SourceVersion=version,
                                                  LaunchTemplateData=data)
        version = str(made["LaunchTemplateVersion"]["VersionNumber"])
        ec2.modify_launch_template(LaunchTemplateName=name, DefaultVersion=version)
    return {"launchTemplateName": name, "version": version}


def _imds_said(template: dict[str, str]) -> str:
    return (f"launch template {template['launchTemplateName']} v{template['version']} (IMDSv2 tokens required, "
            "PUT response hop limit 2: task containers can read spot notices)")


def _ec2_like(batch: Any) -> Any:
    """An EC2 client with the Batch client's region, credentials and (an emulator's) endpoint."""
    import boto3

    kwargs: dict[str, Any] = {"region_name": batch.meta.region_name, "config": batch.meta.config}
    if "amazonaws.com" not in batch.meta.endpoint_url:  # an emulator (AWS_ENDPOINT_URL): one endpoint for all
        kwargs["endpoint_url"] = batch.meta.endpoint_url
    credentials = batch._request_signer._credentials  # botocore keeps a client's own credentials only here
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        kwargs.update(aws_access_key_id=frozen.access_key, aws_secret_access_key=frozen.secret_key,
                      aws_session_token=frozen.token)
    return boto3.client("ec2", **kwargs)


def _wait_valid(batch: Any, name: str, echo: Callable[[str], None], wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        found = batch.describe_compute_environments(computeEnvironments=[name]).get("computeEnvironments", [])
        status = found[0].get("status") if found else None
        if status in (None, "VALID"):
            return
        if status == "INVALID":
            raise BackendError(f"compute environment {name} is INVALID: {found[0].get('statusReason')}; "
                               "fix the roles, subnets or security groups and run `runner init aws` again")
        if time.monotonic() > deadline:
            raise BackendError(f"compute environment {name} is still {status} after {wait_s:.0f} s; "
                               "run `runner init aws` again later")
        echo(f"waiting for compute environment {name} ({status})")
        time.sleep(5)


def _ensure_queue(batch: Any, queue: str, ce_arn: str, echo: Callable[[str], None]) -> str:
    order = [{"order": 1, "computeEnvironment": ce_arn}]
    found = batch.describe_job_queues(jobQueues=[queue]).get("jobQueues", [])
    if not found:
        arn = str(batch.create_job_queue(jobQueueName=queue, state="ENABLED", priority=1,
                                         computeEnvironmentOrder=order,
                                         tags={"spot-runner": "1"})["jobQueueArn"])
        echo(f"created job queue {queue} on {ce_arn.rsplit('/', 1)[-1]} ({arn})")
        return arn
    q = found[0]
    envs = [e.get("computeEnvironment") for e in q.get("computeEnvironmentOrder") or []]
    if q.get("state") != "ENABLED" or ce_arn not in envs:
        batch.update_job_queue(jobQueue=queue, state="ENABLED", computeEnvironmentOrder=order)
        echo(f"updated job queue {queue}: ENABLED on {ce_arn.rsplit('/', 1)[-1]}")
    else:
        echo(f"found job queue {queue} on {ce_arn.rsplit('/', 1)[-1]}: unchanged")
    return str(q["jobQueueArn"])


__all__ = ["IMDS_OPTIONS", "compute_resources", "ensure_batch", "ensure_imds_template"]
