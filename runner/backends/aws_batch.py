"""Run attempts on AWS Batch (spot compute) through boto3.

Ids carry their region, so a watcher with no settings can poll them: ``<region>/<jobId>`` for
a job and ``<region>/<parentJobId>:<index>`` for an array child. The endpoint comes from boto3's
own chain (``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_BATCH`` point it at moto).

Each spec gets one job definition, named after the spec and a hash of its content, so the same
spec reuses one revision. Per-attempt values (``RUNNER_JOB_ID``, ``RUNNER_ATTEMPT``,
``RUNNER_CHECKPOINT_URI``) travel as ``containerOverrides``. Env values are passed as given and
never logged. Batch retries spot reclaims (``Host EC2*``) and exit 75 itself, a few times; past
that the job FAILS with the reclaim's reason, :func:`classify` says PREEMPTED and the watcher
submits the next attempt.

Polling: ``describe_jobs`` in batches of 100. Array children are described the same way, or,
for big arrays, listed per status with ``list_jobs(arrayJobId=..., jobStatus=...)`` (1,000 a
page) after one ``describe_jobs`` of the parent, whose ``statusSummary`` tells which statuses are
worth listing: a 10,000-child array costs about a dozen calls a poll, not a hundred.

Unsupported, because: an entrypoint override (Batch has none: ``command`` replaces the image's
CMD only); multi-node jobs on spot (Batch refuses them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from pydantic import Field

from runner import contract
from runner.backends.base import Backend, Submission
from runner.cost.table import PriceTable
from runner.errors import BackendError, SubmitError
from runner.spec.model import JobSpec, SpecModel
from runner.states import AttemptState, AttemptStatus

log = logging.getLogger("runner.backends.aws_batch")

DESCRIBE_BATCH = 100          # describe_jobs takes at most 100 ids
LIST_PAGE = 1000              # list_jobs with jobStatus returns at most 1000 a page
MAX_ARRAY = 10_000
EXIT_PREEMPTED = contract.EXIT_PREEMPTED
PREEMPT_REASON = "Host EC2"   # "Host EC2 (instance i-...) terminated."
CANCEL_REASON = "spot-runner: cancelled by the user"
DEFAULT_LOG_GROUP = "/aws/batch/job"
PER_ATTEMPT_ENV = ("RUNNER_JOB_ID", "RUNNER_ATTEMPT", "RUNNER_CHECKPOINT_URI")
#: Set on array jobs: the task appends "/<value of this variable>" to RUNNER_CHECKPOINT_URI.
ARRAY_INDEX_ENV = "RUNNER_ARRAY_INDEX_VAR"
PROGRESSION = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")
_WAITING = frozenset(PROGRESSION[:4])
_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]+")
_ID = re.compile(r"^([a-z]{2}(?:-[a-z]+)+-\d+)/([A-Za-z0-9-]+)(?::(\d+))?$")


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


def aws_settings(spec: JobSpec) -> AwsSettings:
    """Return the spec's ``aws:`` section (empty settings when it has none)."""
    section = spec.section("aws")
    return section if isinstance(section, AwsSettings) else AwsSettings()


# ---------------------------------------------------------------------------- pure functions


def classify(job: dict[str, Any]) -> AttemptStatus:
    """Map a ``describe_jobs`` job (or a ``list_jobs`` summary) onto an AttemptStatus.

    SUBMITTED/PENDING/RUNNABLE/STARTING are PENDING; a FAILED job is PREEMPTED when its (or its
    last attempt's) status reason starts with ``Host EC2`` or its container exited 75; a job
    the runner cancelled is CANCELLED; any other FAILED keeps the service's reason.
    """
    status = str(job.get("status") or "")
    started, ended = _seconds(job.get("startedAt")), _seconds(job.get("stoppedAt"))
    container = job.get("container") or {}
    attempts = job.get("attempts") or []
    last = attempts[-1] if attempts else {}
    code = container.get("exitCode", (last.get("container") or {}).get("exitCode"))
    exit_code = int(code) if isinstance(code, int) else None
    reasons = [str(r) for r in (job.get("statusReason"), last.get("statusReason"),
                                container.get("reason"), (last.get("container") or {}).get("reason")) if r]
    reason = reasons[0] if reasons else ""

    if status in _WAITING:
        return AttemptStatus(AttemptState.PENDING, status.lower() + (f": {reason}" if reason else ""),
                             None, started, None)
    if status == "RUNNING":
        return AttemptStatus(AttemptState.RUNNING, "running", None, started, None)
    if status == "SUCCEEDED":
        return AttemptStatus(AttemptState.SUCCEEDED, "succeeded", exit_code or 0, started, ended)
    if status != "FAILED":
        return AttemptStatus(AttemptState.UNKNOWN, f"unrecognised AWS Batch status {status!r}",
                             exit_code, started, ended)
    if any(r.startswith(PREEMPT_REASON) for r in reasons):
        preempted = next(r for r in reasons if r.startswith(PREEMPT_REASON))
        return AttemptStatus(AttemptState.PREEMPTED, f"spot reclaim: {preempted}", exit_code, started, ended)
    if any(r.startswith(CANCEL_REASON) for r in reasons) or job.get("isCancelled"):
        return AttemptStatus(AttemptState.CANCELLED, reason or "cancelled", exit_code, started, ended)
    if exit_code == EXIT_PREEMPTED:
        return AttemptStatus(AttemptState.PREEMPTED, "exit 75: stopped after a preemption notice",
                             exit_code, started, ended)
    text = reason or "failed"
    if exit_code is not None:
        text += f" (exit {exit_code})"
    return AttemptStatus(AttemptState.FAILED, text, exit_code, started, ended)


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


def submit_request(sub: Submission, definition: str, array_size: int | None = None) -> dict[str, Any]:
    """Return ``submit_job``'s arguments for one attempt (or an array of ``array_size``)."""
    spec = sub.spec
    env = {k: sub.env[k] for k in PER_ATTEMPT_ENV if k in sub.env}
    if array_size is not None:  # every child sees the base URI and appends its own index
        env["RUNNER_CHECKPOINT_URI"] = sub.checkpoint_uri.rsplit("/", 1)[0]
        env[ARRAY_INDEX_ENV] = "AWS_BATCH_JOB_ARRAY_INDEX"
    request: dict[str, Any] = {
        "jobName": job_name(sub.key),
        "jobQueue": _settings(spec, "job_queue"),
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


def parse_id(backend_id: str) -> tuple[str, str, int | None]:
    """Split ``<region>/<jobId>[:<index>]`` into (region, job id, index or None)."""
    m = _ID.match(backend_id or "")
    if not m:
        raise BackendError(f"{backend_id!r} is not an AWS Batch attempt id (<region>/<jobId>); "
                           "pass the id submit() returned")
    return m.group(1), m.group(2), None if m.group(3) is None else int(m.group(3))


# ---------------------------------------------------------------------------- the backend


class AwsBatchBackend(Backend):
    """Run each attempt as an AWS Batch job on a spot compute environment."""

    name = "aws"
    summary = "AWS Batch, spot compute environment"
    settings_model = AwsSettings
    required = ("job_queue",)
    uri_example = "s3://bucket/prefix"
    notice = "aws"
    extra = "aws"

    @classmethod
    def machine(cls, spec: JobSpec, table: PriceTable) -> tuple[str, str, str] | None:
        """The first of ``aws.instance_types`` in ``aws.region`` (None for ``optimal``)."""
        aws = aws_settings(spec)
        if not aws.instance_types or aws.instance_types[0] in ("optimal", "default"):
            return None
        region = aws.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        return "aws", region, aws.instance_types[0]

    def __init__(self, region: str | None = None, endpoint_url: str | None = None,
                 config: Any = None) -> None:
        try:
            import boto3
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError, ClientError
        except ImportError as exc:
            raise BackendError("the aws backend needs boto3: pip install 'spot-runner[aws]'") from exc
        self._session = boto3.session.Session()
        self.default_region = region or self._session.region_name or "us-east-1"
        self.endpoint_url = endpoint_url
        self._config = config or Config(retries={"mode": "standard", "max_attempts": 2},
                                        connect_timeout=5, read_timeout=30)
        self._clients: dict[tuple[str, str], Any] = {}
        self._definitions: dict[tuple[str, str], str] = {}
        self._queues: dict[str, set[str]] = {}     # region -> queues submitted to by this process
        self._status_count: dict[str, int] = {}    # parent -> non-empty statuses at the last poll
        self._lock = threading.Lock()
        self._errors: tuple[type[BaseException], ...] = (BotoCoreError, ClientError)

    def client(self, service: str = "batch", region: str | None = None) -> Any:
        """Return (and keep) a boto3 client for ``service`` in ``region``."""
        region = region or self.default_region
        with self._lock:
            key = (service, region)
            if key not in self._clients:
                kwargs: dict[str, Any] = {"region_name": region, "config": self._config}
                if self.endpoint_url:
                    kwargs["endpoint_url"] = self.endpoint_url
                self._clients[key] = self._session.client(service, **kwargs)
            return self._clients[key]

    # ------------------------------------------------------------------ submit

    def submit(self, sub: Submission) -> str:
        """Register (once) the spec's job definition and submit the attempt; return its id."""
        region = self._region(sub.spec)
        batch = self.client("batch", region)
        definition = self._definition(batch, region, sub.spec, sub.env)
        try:
            answer = batch.submit_job(**submit_request(sub, definition))
        except self._errors as exc:
            raise SubmitError(_explain(exc, f"cannot submit {sub.key} to AWS Batch queue "
                                            f"{_settings(sub.spec, 'job_queue')} in {region}")) from exc
        self._queues.setdefault(region, set()).add(_settings(sub.spec, "job_queue"))
        return f"{region}/{answer['jobId']}"

    def submit_many(self, subs: Sequence[Submission]) -> list[str]:
        """Submit array children 0..n-1 of one attempt number as one array job; ids ``<parent>:<i>``."""
        first = subs[0] if subs else None
        uniform = (first is not None and 2 <= len(subs) <= MAX_ARRAY
                   and [s.array_index for s in subs] == list(range(len(subs)))
                   and all(s.attempt == first.attempt and s.spec is first.spec for s in subs)
                   and all(s.checkpoint_uri == f"{first.checkpoint_uri.rsplit('/', 1)[0]}/{s.array_index}"
                           for s in subs))
        if not uniform:
            return super().submit_many(subs)
        assert first is not None
        region = self._region(first.spec)
        batch = self.client("batch", region)
        definition = self._definition(batch, region, first.spec, first.env)
        try:
            answer = batch.submit_job(**submit_request(first, definition, array_size=len(subs)))
        except self._errors as exc:
            raise SubmitError(_explain(exc, f"cannot submit the {len(subs)}-child array {first.key} "
                                            f"to AWS Batch in {region}")) from exc
        self._queues.setdefault(region, set()).add(_settings(first.spec, "job_queue"))
        return [f"{region}/{answer['jobId']}:{i}" for i in range(len(subs))]

    def _definition(self, batch: Any, region: str, spec: JobSpec, env: dict[str, str]) -> str:
        """Return ``name:revision`` of the spec's job definition, registering it when missing."""
        request = definition_request(spec, env)
        name = request["jobDefinitionName"]
        if (region, name) in self._definitions:
            return self._definitions[(region, name)]
        try:
            found = batch.describe_job_definitions(jobDefinitionName=name, status="ACTIVE")
            revisions = sorted(int(d["revision"]) for d in found.get("jobDefinitions", []))
            if revisions:
                ref = f"{name}:{revisions[-1]}"
            else:
                answer = batch.register_job_definition(**request)
                ref = f"{answer['jobDefinitionName']}:{answer['revision']}"
                log.info("registered job definition %s for %s (%s)", ref, spec.name, spec.image)
        except self._errors as exc:
            raise SubmitError(_explain(exc, f"cannot register the job definition for {spec.name}")) from exc
        self._definitions[(region, name)] = ref
        return ref

    # ------------------------------------------------------------------ poll

    def poll(self, ids: Sequence[str]) -> dict[str, AttemptStatus]:
        """Return every id's status: describe_jobs by 100, big arrays listed per status."""
        result: dict[str, AttemptStatus] = {}
        by_region: dict[str, tuple[list[tuple[str, str]], dict[str, list[tuple[str, int]]]]] = {}
        for backend_id in dict.fromkeys(ids):
            try:
                region, job_id, index = parse_id(backend_id)
            except BackendError as exc:
                result[backend_id] = AttemptStatus(AttemptState.UNKNOWN, str(exc))
                continue
            plain, arrays = by_region.setdefault(region, ([], {}))
            if index is None:
                plain.append((backend_id, job_id))
            else:
                arrays.setdefault(job_id, []).append((backend_id, index))
        for region, (plain, arrays) in by_region.items():
            try:
                result.update(self._poll_region(region, plain, arrays))
            except self._errors as exc:  # the service is unreachable or refuses
                unknown = AttemptStatus(AttemptState.UNKNOWN, _explain(exc, f"cannot poll AWS Batch in {region}"))
                result.update({bid: unknown for bid, _ in plain})
                result.update({bid: unknown for kids in arrays.values() for bid, _ in kids})
        return result

    def _poll_region(self, region: str, plain: list[tuple[str, str]],
                     arrays: dict[str, list[tuple[str, int]]]) -> dict[str, AttemptStatus]:
        batch = self.client("batch", region)
        wanted = [job_id for _, job_id in plain]
        listed = [p for p, kids in arrays.items() if self._list_children(p, len(kids))]
        wanted += listed
        for parent, kids in arrays.items():
            if parent not in listed:
                wanted += [f"{parent}:{i}" for _, i in kids]
        described = self._describe(batch, wanted)
        result = {bid: _found(described.get(job_id), job_id) for bid, job_id in plain}
        for parent, kids in arrays.items():
            if parent in listed:
                children = self._children(batch, parent, described.get(parent))
            else:
                children = described
            for bid, i in kids:
                result[bid] = _found(children.get(f"{parent}:{i}"), f"{parent}:{i}")
        return result

    def _list_children(self, parent: str, count: int) -> bool:
        """Return True when listing the children per status costs fewer calls than describing them."""
        statuses = self._status_count.get(parent, 3)
        return 1 + statuses < math.ceil(count / DESCRIBE_BATCH)

    def _describe(self, batch: Any, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(job_ids), DESCRIBE_BATCH):
            answer = batch.describe_jobs(jobs=job_ids[start:start + DESCRIBE_BATCH])
            found.update({str(job["jobId"]): job for job in answer.get("jobs", [])})
        return found

    def _children(self, batch: Any, parent: str, described: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
        """List the children of ``parent`` status by status, in the order jobs progress."""
        summary = ((described or {}).get("arrayProperties") or {}).get("statusSummary") or {}
        statuses = [s for s in PROGRESSION if not summary or summary.get(s)]
        self._status_count[parent] = len(statuses)
        children: dict[str, dict[str, Any]] = {}
        for status in statuses:  # a child that moves on between two calls is seen twice: keep the later
            token: str | None = None
            while True:
                kwargs: dict[str, Any] = {"arrayJobId": parent, "jobStatus": status, "maxResults": LIST_PAGE}
                if token:
                    kwargs["nextToken"] = token
                answer = batch.list_jobs(**kwargs)
                children.update({str(j["jobId"]): j for j in answer.get("jobSummaryList", [])})
                token = answer.get("nextToken")
                if not token:
                    break
        return children

    # ------------------------------------------------------------------ cancel, logs, find

    def cancel(self, backend_id: str) -> None:
        """Terminate the job (queued or running); a job that has ended is left as it is."""
        region, job_id, index = parse_id(backend_id)
        target = job_id if index is None else f"{job_id}:{index}"
        try:
            self.client("batch", region).terminate_job(jobId=target, reason=CANCEL_REASON)
        except self._errors as exc:
            raise BackendError(_explain(exc, f"cannot terminate {backend_id}")) from exc

    def logs(self, backend_id: str, follow: bool = False) -> Iterator[str]:
        """Yield the attempt's CloudWatch log lines (follow them while the job runs)."""
        region, job_id, index = parse_id(backend_id)
        target = job_id if index is None else f"{job_id}:{index}"
        token: str | None = None
        while True:
            try:
                jobs = self.client("batch", region).describe_jobs(jobs=[target]).get("jobs", [])
            except self._errors as exc:
                raise BackendError(_explain(exc, f"cannot describe {backend_id}")) from exc
            if not jobs:
                raise BackendError(f"AWS Batch does not know {backend_id}: jobs are kept for about a day "
                                   "after they end")
            job = jobs[0]
            container = job.get("container") or {}
            attempts = job.get("attempts") or []
            stream = container.get("logStreamName") or (
                (attempts[-1].get("container") or {}).get("logStreamName") if attempts else None)
            group = ((container.get("logConfiguration") or {}).get("options") or {}).get(
                "awslogs-group", DEFAULT_LOG_GROUP)
            ended = job.get("status") in ("SUCCEEDED", "FAILED")
            if stream:
                token, lines = self._log_page(region, group, stream, token)
                yield from lines
            elif ended or not follow:
                yield (f"(no CloudWatch log stream for {backend_id}, status {job.get('status')}: Batch names "
                       "one when the container starts; the emulator only after it ends)")
                return
            if not follow or ended:
                if stream and ended:  # drain what is left
                    while True:
                        token, lines = self._log_page(region, group, stream, token)
                        if not lines:
                            break
                        yield from lines
                return
            time.sleep(2)

    def _log_page(self, region: str, group: str, stream: str, token: str | None) -> tuple[str | None, list[str]]:
        logs = self.client("logs", region)
        kwargs: dict[str, Any] = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        if token:
            kwargs["nextToken"] = token
        try:
            answer = logs.get_log_events(**kwargs)
        except self._errors as exc:
            raise BackendError(_explain(exc, f"cannot read the CloudWatch stream {group}/{stream}")) from exc
        lines = [str(e.get("message", "")).rstrip("\n") for e in answer.get("events", [])]
        following = answer.get("nextForwardToken")
        return (following if following != token else token), lines

    def find(self, sub: Submission) -> str | None:
        """Return the newest job named after ``sub``'s key in its region's queues, or None."""
        key = sub.key
        region = self._region(sub.spec)
        batch = self.client("batch", region)
        try:
            queues = set(self._queues.get(region, set()))
            for page in batch.get_paginator("describe_job_queues").paginate():
                queues.update(q["jobQueueName"] for q in page.get("jobQueues", []))
            found: list[dict[str, Any]] = []
            for queue in sorted(queues):
                answer = batch.list_jobs(jobQueue=queue, filters=[{"name": "JOB_NAME", "values": [job_name(key)]}])
                found += [j for j in answer.get("jobSummaryList", []) if j.get("jobName") == job_name(key)]
        except self._errors as exc:
            raise BackendError(_explain(exc, f"cannot list AWS Batch jobs in {region}")) from exc
        if not found:
            return None
        newest = max(found, key=lambda j: j.get("createdAt") or 0)
        return f"{region}/{newest['jobId']}"

    @classmethod
    def init(cls, spec: JobSpec, echo: Any) -> None:
        """Create or update the spot compute environment and the job queue (``runner init aws``)."""
        from runner.backends.aws_setup import ensure_batch

        backend = cls(region=aws_settings(spec).region)
        ensure_batch(backend.client("batch", backend._region(spec)), spec, echo)

    def _region(self, spec: JobSpec) -> str:
        return aws_settings(spec).region or self.default_region

    def close(self) -> None:
        self._clients.clear()


# ---------------------------------------------------------------------------- helpers


def _found(job: dict[str, Any] | None, job_id: str) -> AttemptStatus:
    if job is None:
        return AttemptStatus(AttemptState.FAILED, f"AWS Batch does not know job {job_id} "
                                                  "(ended more than a day ago, or deleted)")
    return classify(job)


def _settings(spec: JobSpec, field: str) -> str:
    value = getattr(aws_settings(spec), field, None)
    if not value:
        raise SubmitError(f"field 'aws.{field}' is required with backend aws; add {field}: ... under aws:")
    return str(value)


def _seconds(ms: Any) -> float | None:
    return ms / 1000.0 if isinstance(ms, (int, float)) and ms > 0 else None


def _explain(exc: BaseException, what: str) -> str:
    """One line for a botocore error: the service's code and message, or that it is unreachable."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        err = response["Error"]
        text = f"{what}: {err.get('Code', 'error')}: {err.get('Message', '')}"
    else:
        text = f"{what}: cannot reach AWS ({type(exc).__name__}: {exc}); check the network, " \
               "AWS_ENDPOINT_URL and the region"
    text = " ".join(text.split())
    return text if len(text) <= 400 else text[:397] + "..."


__all__ = ["AwsBatchBackend", "AwsSettings", "aws_settings", "classify", "definition_request", "job_name", "parse_id", "retry_strategy",
           "submit_request"]
