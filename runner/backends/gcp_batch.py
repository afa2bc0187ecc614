"""Run attempts as Google Cloud Batch jobs on SPOT VMs, on the shared cloud skeleton.

Backend ids are the full job names, ``projects/P/locations/R/jobs/J``, so a backend built with no
arguments polls and cancels them; an array child submitted with its siblings is
``<job name>/taskGroups/group0/tasks/<i>``. The job itself (names, labels, the retry policy) is
built in :mod:`runner.backends.gcp_setup`; a key submitted twice meets ALREADY_EXISTS and adopts
the first job, so an attempt never runs twice.

How the watcher sees a task that GCP retried itself: not at all while it happens. The job stays
RUNNING (a retried task goes FAILED -> PENDING -> RUNNING inside the same job), so the attempt
stays RUNNING and nothing is resubmitted; the number of in-place retries shows in the final
reason. Only when GCP's retries are spent does the job end FAILED with exit 50001 (or 75): that
attempt is PREEMPTED and the watcher starts the next one on the same checkpoint URI, charged once
to the preemption budget. Exit 76 (``runner halt``) is not retried in place: HALTED.

:func:`classify` (:mod:`runner.backends.gcp_records`) maps a Job plus its Tasks onto an
AttemptStatus, purely. GCP Batch has no batch-get: a poll makes one ``get_job`` per job (array
children share one), plus ``list_tasks`` when the tasks matter. The client is
``google.cloud.batch_v1.BatchServiceClient``, imported here only; with
``RUNNER_GCP_BATCH_ENDPOINT`` set it talks REST to that endpoint with anonymous credentials (the
test stand-in), else it uses the default endpoint and credential chain.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

from runner.backends.base import Submission
from runner.backends.cloud import CloudBatchBackend
from runner.backends.gcp_records import classify, stamp
from runner.backends.gcp_setup import (
    _GCP_BUNDLED_GPU,
    GROUP,
    KEY_VARIABLE,
    LABEL_JOB,
    LABEL_KEY,
    GcpSettings,
    build_job,
    gcp_settings,
    job_id_for,
    label_value,
    parent_of,
    split_id,
)
from runner.cost.table import PriceTable
from runner.errors import BackendError, SubmitError, one_line
from runner.spec.model import JobSpec
from runner.states import AttemptState, AttemptStatus

log = logging.getLogger("runner.backends.gcp_batch")

ENDPOINT_ENV = "RUNNER_GCP_BATCH_ENDPOINT"
CALL_DEADLINE_S = 8.0       # the client's own retries of one call, all told
REQUEST_TIMEOUT_S = 30.0    # one request


class GcpBatchBackend(CloudBatchBackend):
    """Run each attempt as a Google Cloud Batch job on SPOT VMs."""

    name = "gcp"
    summary = "Google Cloud Batch"
    capacities = ("spot", "on-demand")
    settings_model = GcpSettings
    required = ("project", "region")
    uri_example = "gs://bucket/prefix"
    notice = "gcp"
    extra = "gcp"
    batch_size = None  # one get_job answers for every member (array child) of a job

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
        self.client = client if client is not None else _make_client(batch_v1, endpoint)
        # Reads retry with a short deadline: the client's defaults retry a 503 for about a minute, which
        # would hold every poll and find() of a watcher that long during an outage (the watcher's next pass
        # is the next try). Writes keep the client's default of one request (the watcher retries them after
        # a lookup, see find()). Every request has its own timeout.
        from google.api_core.retry import Retry, if_transient_error

        self._write: dict[str, Any] = {"timeout": REQUEST_TIMEOUT_S}
        self._read: dict[str, Any] = {"retry": Retry(predicate=if_transient_error, initial=0.25, maximum=2.0,
                                                     multiplier=2.0, timeout=CALL_DEADLINE_S), **self._write}
        self.endpoint = endpoint
        self._cancelled: set[str] = set()

    # ------------------------------------------------------------------ the cloud's calls

    def create(self, subs: Sequence[Submission]) -> list[str]:
        """Create ONE Batch job for the attempts (a task per array child); the same key twice adopts."""
        parent = parent_of(subs[0].spec)
        if parent is None:
            raise SubmitError("the gcp backend needs gcp.project and gcp.region in the job spec")
        job_id = job_id_for(subs[0].key if len(subs) == 1 else f"{subs[0].key}-x{len(subs)}")
        name = f"{parent}/jobs/{job_id}"
        try:
            created = self.client.create_job(parent=parent, job=build_job(subs), job_id=job_id, **self._write)
            name = created.name or name
            log.debug("created %s for %s (%d task(s)), env keys %s", name, subs[0].job_id, len(subs),
                      sorted(subs[0].env))  # keys only: values may be secrets
        except self._api.Conflict:  # 409 ALREADY_EXISTS: submitted before under this key
            log.info("adopted the existing Batch job %s", name)
        if len(subs) == 1:
            return [name]
        return [f"{name}/taskGroups/{GROUP}/tasks/{i}" for i in range(len(subs))]

    def split_id(self, backend_id: str) -> tuple[str, str]:
        job_name, index = split_id(backend_id)
        return job_name, "" if index is None else str(index)

    def describe(self, job_name: str, members: list[str]) -> dict[str, Any]:
        """One get_job (plus list_tasks when a child or the job's end is asked about); {} when gone."""
        try:
            job = self.client.get_job(name=job_name, **self._read)
        except self._api.NotFound:
            return {}
        State = self._batch.JobStatus.State
        needs_tasks = any(members) or State(job.status.state) in (State.SUCCEEDED, State.FAILED)
        tasks = self._tasks(job_name) if needs_tasks else []
        return {m: (job, tasks, int(m) if m else None) for m in members}

    def classify_record(self, job_name: str, member: str, record: Any) -> AttemptStatus:
        job, tasks, index = record
        return classify(job, tasks, index)

    def missing(self, job_name: str, member: str) -> AttemptStatus:
        if job_name in self._cancelled:
            return AttemptStatus(AttemptState.CANCELLED, "cancelled (job deleted)")
        return AttemptStatus(AttemptState.FAILED, f"Batch job {job_name} not found (deleted outside the runner?)")

    def _tasks(self, job_name: str) -> list[Any]:
        return list(self.client.list_tasks(parent=f"{job_name}/taskGroups/{GROUP}", **self._read))

    def stop(self, backend_id: str) -> None:
        """Cancel the attempt's job (the whole job for an array child); one gone or ended is fine."""
        job_name, _ = split_id(backend_id)
        self._cancelled.add(job_name)
        try:
            if hasattr(self.client, "cancel_job"):
                self.client.cancel_job(name=job_name, **self._write)
            else:  # SDKs before cancel_job existed: deleting is the only way to stop a job
                self.client.delete_job(name=job_name, **self._write)
        except (self._api.NotFound, self._api.FailedPrecondition):
            return

    def lookup(self, sub: Submission) -> str | None:
        """Return the job (or array task) created for ``sub``: list_jobs filtered by the job's label."""
        parent = parent_of(sub.spec)
        if parent is None:
            return None
        request = self._batch.ListJobsRequest(parent=parent, filter=f'labels.{LABEL_JOB}="{label_value(sub.job_id)}"')
        for job in self.client.list_jobs(request=request, **self._read):
            if job.labels.get(LABEL_KEY) == label_value(sub.key):
                return str(job.name)
            for group in job.task_groups[:1]:
                for i, env in enumerate(group.task_environments):
                    if env.variables.get(KEY_VARIABLE) == sub.key:
                        return f"{job.name}/taskGroups/{GROUP}/tasks/{i}"
        return None

    def explain(self, exc: BaseException) -> str:
        # A RetryError (our short deadline ran out) says only "Timeout of 8.0s exceeded": name the last cause.
        cause = getattr(exc, "cause", None)
        text = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
        if cause is not None and cause is not exc:
            text += f" (last error: {type(cause).__name__}: {getattr(cause, 'message', None) or cause})"
        return one_line(text, 300)

    def logs(self, backend_id: str, follow: bool = False) -> Iterator[str]:
        """Yield a Cloud Logging link for the job, then its and its tasks' status events."""
        job_name, index = split_id(backend_id)
        project = job_name.split("/")[1]
        try:
            job = self.client.get_job(name=job_name, **self._read)
            tasks = self._tasks(job_name)
        except Exception as exc:
            raise BackendError(one_line(f"cannot read {job_name}: {self.explain(exc)}")) from exc
        query = quote(f'labels.job_uid="{job.uid}"' if job.uid else f'labels.job_id="{job_name}"', safe="")
        yield (f"task output is in Cloud Logging: https://console.cloud.google.com/logs/query;"
               f"query={query}?project={project}")
        for event in job.status.status_events:
            yield f"{stamp(event.event_time)} job: {event.description}"
        for task in tasks:
            if index is not None and task.name.rsplit("/", 1)[-1] != str(index):
                continue
            for event in task.status.status_events:
                yield f"{stamp(event.event_time)} task {task.name.rsplit('/', 1)[-1]}: {event.description}"

    def close(self) -> None:
        transport = getattr(self.client, "transport", None)
        if transport is not None and hasattr(transport, "close"):
            try:
                transport.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


def _make_client(batch_v1: Any, endpoint: str | None) -> Any:
    try:
        if endpoint:
            from google.auth.credentials import AnonymousCredentials

            return batch_v1.BatchServiceClient(transport="rest", client_options={"api_endpoint": endpoint},
                                               credentials=AnonymousCredentials())
        return batch_v1.BatchServiceClient()
    except Exception as exc:  # DefaultCredentialsError and friends
        raise BackendError(one_line(f"cannot create the Google Cloud Batch client: {exc}; run "
                                    "`gcloud auth application-default login` or set "
                                    "GOOGLE_APPLICATION_CREDENTIALS")) from exc


__all__ = ["GcpBatchBackend", "GcpSettings", "classify"]
