"""Run attempts as Google Cloud Batch jobs on SPOT VMs.

One attempt is one Batch job named after the attempt's key (``[a-z][a-z0-9-]{0,62}``, shortened
with a hash of the key), so submitting a key twice adopts the first job instead of starting a
second one. Backend ids are the full job names, ``projects/P/locations/R/jobs/J``, so a backend
built with no arguments polls and cancels them; an array child submitted with its siblings is
``<job name>/taskGroups/group0/tasks/<i>``.

The job asks for one container task (``task_count`` N for array children submitted together:
task i gets child i's contract environment through ``task_environments``, i.e.
``BATCH_TASK_INDEX`` = i), SPOT provisioning, and ONE lifecycle policy: RETRY_TASK on exit codes
50001 (GCP's spot preemption) and 75 (the contract's "stopped after a notice"), up to
``max_retry_count = min(10, retries.preemptions)``.

How the watcher sees a task that GCP retried itself: not at all while it happens. The job stays
RUNNING (a retried task goes FAILED -> PENDING -> RUNNING inside the same job), so the attempt
stays RUNNING and nothing is resubmitted; the number of in-place retries shows in the final
reason. Only when GCP's retries are spent does the job end FAILED with exit 50001 (or 75): that
attempt is PREEMPTED and the watcher starts the next one on the same checkpoint URI, charged once
to the preemption budget. The budget thus counts attempts, each of which may have survived up to
``max_retry_count`` preemptions in place.

:func:`classify` maps a Job plus its Tasks onto an AttemptStatus, purely. A poll that fails
(network, server error, quota) reports UNKNOWN for that job's ids, never FAILED.

The client is ``google.cloud.batch_v1.BatchServiceClient``, imported here only; with
``RUNNER_GCP_BATCH_ENDPOINT`` set it talks REST to that endpoint with anonymous credentials (the
test stand-in), else it uses the default endpoint and the default credential chain.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

from pydantic import Field

from runner import contract
from runner.backends.base import Backend, Submission
from runner.cost.table import PriceTable
from runner.errors import BackendError, SubmitError
from runner.spec.model import JobSpec, SpecModel
from runner.states import AttemptState, AttemptStatus

log = logging.getLogger("runner.backends.gcp_batch")

ENDPOINT_ENV = "RUNNER_GCP_BATCH_ENDPOINT"
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
        provisioning_model=(batch_v1.AllocationPolicy.ProvisioningModel.SPOT if spec.spot
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


# ---------------------------------------------------------------------------- classification


def classify(job: Any, tasks: Sequence[Any] = (), task_index: int | None = None) -> AttemptStatus:
    """Map a ``batch_v1.Job`` and its ``Task`` list onto an AttemptStatus.

    For a single-task job the job's state decides (a task GCP is about to retry may show FAILED
    inside a RUNNING job); ``task_index`` asks about one child of an array job instead.
    """
    from google.cloud import batch_v1

    J = batch_v1.JobStatus.State
    state = J(job.status.state)
    task = _task(tasks, task_index)
    events = list(job.status.status_events) + (list(task.status.status_events) if task is not None else [])
    retried = _retries(task)
    started, ended = _started(events), _time(job.update_time) if state in (J.SUCCEEDED, J.FAILED,
                                                                            J.CANCELLED) else None
    if task_index is not None and task is not None:  # one child of an array job
        T = batch_v1.TaskStatus.State
        tstate, task_events = T(task.status.state), task.status.status_events
        if tstate is T.SUCCEEDED:
            return AttemptStatus(AttemptState.SUCCEEDED, "task SUCCEEDED" + _retried(retried), 0, started,
                                 _last_time(task_events))
        if state is J.CANCELLED:
            return AttemptStatus(AttemptState.CANCELLED, "job CANCELLED", None, started, ended)
        if tstate is T.FAILED and (state is J.FAILED or not _will_retry(job, task)):
            return _failed(task_events, started, _last_time(task_events))
        if state is J.FAILED:
            return AttemptStatus(AttemptState.FAILED, f"job FAILED before task {task_index} ran (task "
                                                      f"{tstate.name})", None, started, ended)
        if tstate is T.RUNNING:
            return AttemptStatus(AttemptState.RUNNING, "task RUNNING" + _retried(retried), None, started)
        return AttemptStatus(AttemptState.PENDING, f"task {tstate.name}" + _retried(retried))
    if state in (J.QUEUED, J.SCHEDULED):
        return AttemptStatus(AttemptState.PENDING, f"job {state.name}" + _retried(retried))
    if state in (J.RUNNING, J.CANCELLATION_IN_PROGRESS, J.DELETION_IN_PROGRESS):
        return AttemptStatus(AttemptState.RUNNING, f"job {state.name}" + _retried(retried), None, started)
    if state is J.SUCCEEDED:
        return AttemptStatus(AttemptState.SUCCEEDED, "job SUCCEEDED" + _retried(retried), 0, started, ended)
    if state is J.CANCELLED:
        return AttemptStatus(AttemptState.CANCELLED, "job CANCELLED", None, started, ended)
    if state is J.FAILED:
        return _failed(events, started, ended)
    return AttemptStatus(AttemptState.UNKNOWN, f"job state {state.name}")


def _failed(events: Sequence[Any], started: float | None, ended: float | None) -> AttemptStatus:
    """Classify an ended failure by its last exit code and the event that tells it."""
    code, text = None, ""
    for event in events:
        found = _exit_code(event)
        if found is not None:
            code, text = found, event.description
    if code is None:
        text = next((e.description for e in reversed(events) if e.description), "job FAILED")
    text = " ".join(text.split())
    if code == EXIT_SPOT_PREEMPTION or "Spot Preemption" in text:
        return AttemptStatus(AttemptState.PREEMPTED, text, code or EXIT_SPOT_PREEMPTION, started, ended)
    if code == EXIT_PREEMPTED:
        return AttemptStatus(AttemptState.PREEMPTED, f"exit 75: stopped after a preemption notice ({text})",
                             code, started, ended)
    if code in RESERVED_EXITS:
        return AttemptStatus(AttemptState.FAILED, f"{RESERVED_EXITS[code]}: {text}", code, started, ended)
    return AttemptStatus(AttemptState.FAILED, text or f"exit {code}", code, started, ended)


def _exit_code(event: Any) -> int | None:
    """Return the exit code an event reports (its task_execution, else its text), or None."""
    if "task_execution" in event:
        return int(event.task_execution.exit_code)
    m = _EXIT_IN_TEXT.search(event.description or "")
    return int(m.group(1)) if m else None


def _task(tasks: Sequence[Any], index: int | None) -> Any:
    if not tasks:
        return None
    if index is None:
        return tasks[0]
    for task in tasks:
        if task.name.rsplit("/", 1)[-1] == str(index):
            return task
    return None


def _retries(task: Any) -> int:
    """Return how many times GCP restarted the task in place (FAILED events before the last state)."""
    if task is None:
        return 0
    failures = [e for e in task.status.status_events if "to FAILED" in e.description]
    from google.cloud import batch_v1

    ended_failed = batch_v1.TaskStatus.State(task.status.state) is batch_v1.TaskStatus.State.FAILED
    return max(0, len(failures) - (1 if ended_failed else 0))


def _retried(count: int) -> str:
    return f" (GCP retried it in place after {count} failure{'s' * (count != 1)})" if count else ""


def _will_retry(job: Any, task: Any) -> bool:
    """Return True when GCP will run a FAILED task of a running job again (its policy and budget)."""
    codes = [c for e in task.status.status_events if (c := _exit_code(e)) is not None]
    if not codes or codes[-1] not in RETRY_EXIT_CODES:
        return False
    budget = job.task_groups[0].task_spec.max_retry_count if job.task_groups else 0
    return len(codes) <= budget


def _started(events: Sequence[Any]) -> float | None:
    times = [_time(e.event_time) for e in events if "to RUNNING" in e.description]
    return next((t for t in times if t), None)


def _last_time(events: Sequence[Any]) -> float | None:
    return _time(events[-1].event_time) if events else None


def _time(value: Any) -> float | None:
    if not value:
        return None
    try:
        stamp = float(value.timestamp())
    except (AttributeError, ValueError, OSError):
        return None
    return stamp if stamp > 0 else None


# ---------------------------------------------------------------------------- the backend


class GcpBatchBackend(Backend):
    """Run each attempt as a Google Cloud Batch job on SPOT VMs."""

    name = "gcp"
    summary = "Google Cloud Batch, SPOT VMs"
    settings_model = GcpSettings
    required = ("project", "region")
    uri_example = "gs://bucket/prefix"
    notice = "gcp"
    extra = "gcp"

    @classmethod
    def machine(cls, spec: JobSpec, table: PriceTable) -> tuple[str, str, str] | None:
        """``gcp.machine_type`` (plus its accelerators, unless the family bundles them) in ``gcp.region``."""
        gcp = gcp_settings(spec)
        if not gcp.machine_type or not gcp.region:
            return None
        itype = gcp.machine_type
        if gcp.accelerator_type and (gcp.accelerator_count or 1) > 0 and not itype.startswith(_GCP_BUNDLED_GPU):
            count = gcp.accelerator_count or 1
            itype += f"+{gcp.accelerator_type}" if count == 1 else f"+{count}x{gcp.accelerator_type}"
        return "gcp", gcp.region, itype

    def __init__(self, client: Any = None, endpoint: str | None = None) -> None:
        try:
            from google.api_core import exceptions as api_exceptions
            from google.cloud import batch_v1
        except ImportError as exc:
            raise BackendError("the gcp backend needs google-cloud-batch: pip install 'spot-runner[gcp]'") from exc
        self._batch = batch_v1
        self._api = api_exceptions
        endpoint = endpoint or os.environ.get(ENDPOINT_ENV) or None
        if client is None:
            client = _make_client(batch_v1, endpoint)
        self.client = client
        self.endpoint = endpoint
        self._cancelled: set[str] = set()

    # ------------------------------------------------------------------ submit

    def submit(self, sub: Submission) -> str:
        """Create the attempt's Batch job; return its full name (the same one for the same key)."""
        return self._create([sub])[0]

    def submit_many(self, subs: Sequence[Submission]) -> list[str]:
        """Create ONE Batch job with a task per array child; return ``<job>/taskGroups/group0/tasks/<i>``."""
        return self._create(list(subs))

    def _create(self, subs: list[Submission]) -> list[str]:
        parent = _parent(subs[0].spec)
        if parent is None:
            raise SubmitError("the gcp backend needs gcp.project and gcp.region in the job spec")
        job_id = job_id_for(subs[0].key if len(subs) == 1 else f"{subs[0].key}-x{len(subs)}")
        job = build_job(subs)
        name = f"{parent}/jobs/{job_id}"
        try:
            created = self.client.create_job(parent=parent, job=job, job_id=job_id)
            name = created.name or name
            log.debug("created %s for %s (%d task(s)), env keys %s", name, subs[0].job_id, len(subs),
                      sorted(subs[0].env))  # keys only: values may be secrets
        except self._api.Conflict:  # 409 ALREADY_EXISTS: submitted before under this key
            log.info("adopted the existing Batch job %s", name)
        except self._api.GoogleAPICallError as exc:
            raise SubmitError(_one_line(f"cannot create the Batch job {job_id} in {parent}: {_explain(exc)}")) from exc
        except Exception as exc:  # transport errors: connection refused, DNS, TLS, auth
            raise SubmitError(_one_line(f"cannot reach Google Cloud Batch ({type(exc).__name__}: {exc}); "
                                        f"check the network and credentials")) from exc
        if len(subs) == 1:
            return [name]
        return [f"{name}/taskGroups/{GROUP}/tasks/{i}" for i in range(len(subs))]

    # ------------------------------------------------------------------ poll

    def poll(self, ids: Sequence[str]) -> dict[str, AttemptStatus]:
        """Return every id's status: one get_job per job, plus list_tasks when the tasks matter.

        GCP Batch has no batch-get: jobs are asked one by one (array children share one job).
        """
        by_job: dict[str, list[tuple[str, int | None]]] = {}
        result: dict[str, AttemptStatus] = {}
        for backend_id in dict.fromkeys(ids):
            try:
                job_name, index = split_id(backend_id)
            except BackendError as exc:
                result[backend_id] = AttemptStatus(AttemptState.UNKNOWN, str(exc))
                continue
            by_job.setdefault(job_name, []).append((backend_id, index))
        for job_name, wanted in by_job.items():
            try:
                statuses = self._poll_job(job_name, [index for _, index in wanted])
            except Exception as exc:  # any failure to ask is UNKNOWN, never FAILED
                unknown = AttemptStatus(AttemptState.UNKNOWN, _one_line(
                    f"cannot get {job_name.rsplit('/', 1)[-1]}: {type(exc).__name__}: {_explain(exc)}"))
                statuses = [unknown] * len(wanted)
            for (backend_id, _), status in zip(wanted, statuses):
                result[backend_id] = status
        return result

    def _poll_job(self, job_name: str, indexes: list[int | None]) -> list[AttemptStatus]:
        try:
            job = self.client.get_job(name=job_name)
        except self._api.NotFound:
            if job_name in self._cancelled:
                gone = AttemptStatus(AttemptState.CANCELLED, "cancelled (job deleted)")
            else:
                gone = AttemptStatus(AttemptState.FAILED, f"Batch job {job_name} not found (deleted outside "
                                                          "the runner?)")
            return [gone] * len(indexes)
        State = self._batch.JobStatus.State
        needs_tasks = any(i is not None for i in indexes) or State(job.status.state) in (
            State.SUCCEEDED, State.FAILED)
        tasks = self._tasks(job_name) if needs_tasks else []
        return [classify(job, tasks, index) for index in indexes]

    def _tasks(self, job_name: str) -> list[Any]:
        return list(self.client.list_tasks(parent=f"{job_name}/taskGroups/{GROUP}"))

    # ------------------------------------------------------------------ cancel, logs, find

    def cancel(self, backend_id: str) -> None:
        """Cancel the attempt's job (the whole job for an array child); idempotent."""
        job_name, _ = split_id(backend_id)
        self._cancelled.add(job_name)
        try:
            if hasattr(self.client, "cancel_job"):
                self.client.cancel_job(name=job_name)
            else:  # SDKs before cancel_job existed: deleting is the only way to stop a job
                self.client.delete_job(name=job_name)
        except (self._api.NotFound, self._api.FailedPrecondition):
            return  # gone or already ended
        except Exception as exc:
            raise BackendError(_one_line(f"cannot cancel {job_name}: {_explain(exc)}; try again or run "
                                         f"gcloud batch jobs delete {job_name}")) from exc

    def logs(self, backend_id: str, follow: bool = False) -> Iterator[str]:
        """Yield a Cloud Logging link for the job, then its and its tasks' status events."""
        job_name, index = split_id(backend_id)
        project = job_name.split("/")[1]
        try:
            job = self.client.get_job(name=job_name)
            tasks = self._tasks(job_name)
        except Exception as exc:
            raise BackendError(_one_line(f"cannot read {job_name}: {_explain(exc)}")) from exc
        query = quote(f'labels.job_uid="{job.uid}"' if job.uid else f'labels.job_id="{job_name}"', safe="")
        yield (f"task output is in Cloud Logging: https://console.cloud.google.com/logs/query;"
               f"query={query}?project={project}")
        for event in job.status.status_events:
            yield f"{_stamp(event.event_time)} job: {event.description}"
        for task in tasks:
            if index is not None and task.name.rsplit("/", 1)[-1] != str(index):
                continue
            for event in task.status.status_events:
                yield f"{_stamp(event.event_time)} task {task.name.rsplit('/', 1)[-1]}: {event.description}"

    def find(self, sub: Submission) -> str | None:
        """Return the job (or array task) created for ``sub``: list_jobs filtered by the job's label."""
        parent = _parent(sub.spec)
        if parent is None:
            return None
        label_filter = f'labels.{LABEL_JOB}="{label_value(sub.job_id)}"'
        try:
            request = self._batch.ListJobsRequest(parent=parent, filter=label_filter)
            for job in self.client.list_jobs(request=request):
                if job.labels.get(LABEL_KEY) == label_value(sub.key):
                    return str(job.name)
                for group in job.task_groups[:1]:
                    for i, env in enumerate(group.task_environments):
                        if env.variables.get(KEY_VARIABLE) == sub.key:
                            return f"{job.name}/taskGroups/{GROUP}/tasks/{i}"
        except Exception as exc:
            raise BackendError(_one_line(f"cannot list Batch jobs in {parent}: {_explain(exc)}")) from exc
        return None

    def close(self) -> None:
        transport = getattr(self.client, "transport", None)
        if transport is not None and hasattr(transport, "close"):
            try:
                transport.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


def _parent(spec: JobSpec) -> str | None:
    """Return ``projects/P/locations/R`` of a spec, or None when it lacks either."""
    gcp = gcp_settings(spec)
    if not gcp.project or not gcp.region:
        return None
    return f"projects/{gcp.project}/locations/{gcp.region}"


def _make_client(batch_v1: Any, endpoint: str | None) -> Any:
    try:
        if endpoint:
            from google.auth.credentials import AnonymousCredentials

            return batch_v1.BatchServiceClient(transport="rest", client_options={"api_endpoint": endpoint},
                                               credentials=AnonymousCredentials())
        return batch_v1.BatchServiceClient()
    except Exception as exc:  # DefaultCredentialsError and friends
        raise BackendError(_one_line(f"cannot create the Google Cloud Batch client: {exc}; run "
                                     "`gcloud auth application-default login` or set "
                                     "GOOGLE_APPLICATION_CREDENTIALS")) from exc


def _explain(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return str(message)


def _stamp(value: Any) -> str:
    t = _time(value)
    if t is None:
        return "-"
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_line(text: str) -> str:
    return " ".join(text.split())
