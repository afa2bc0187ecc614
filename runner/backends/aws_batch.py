"""Run attempts on AWS Batch (spot compute) through boto3, on the shared cloud skeleton.

Ids carry their region, so a watcher with no settings can poll them: ``<region>/<jobId>`` for
a job and ``<region>/<parentJobId>:<index>`` for an array child. The endpoint comes from boto3's
own chain (``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_BATCH`` point it at moto). The requests
(job definition, submit, retry strategy) are built in :mod:`runner.backends.aws_setup`; the paged
reads (jobs by 100, array children, CloudWatch) are in :mod:`runner.backends.aws_reads`.

Batch retries spot reclaims (``Host EC2*``) and exit 75 itself, a few times; past that the job
FAILS with the reclaim's reason, :func:`classify` (:mod:`runner.backends.aws_records`, with the
ids) says PREEMPTED and the watcher submits the next attempt. Batch does not refuse a second job
of the same name, so :meth:`AwsBatchBackend.lookup` (the watcher's ``find`` before it submits an
attempt it may have submitted already) lists the queue's jobs by name.

Polling: ``describe_jobs`` in batches of 100. Array children are described the same way, or,
for big arrays, listed per status with ``list_jobs(arrayJobId=..., jobStatus=...)`` (1,000 a
page) after one ``describe_jobs`` of the parent, whose ``statusSummary`` tells which statuses are
worth listing: a 10,000-child array costs about a dozen calls a poll, not a hundred.

Unsupported, because: an entrypoint override (Batch has none: ``command`` replaces the image's
CMD only); multi-node jobs on spot (Batch refuses them).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from runner.backends.aws_reads import (
    describe_jobs,
    list_children,
    listing_pays,
    log_page,
)
from runner.backends.aws_records import (
    CANCEL_REASON,
    classify,
    field,
    log_stream,
    one_array,
    parse_id,
)
from runner.backends.aws_setup import (
    AwsSettings,
    aws_settings,
    definition_request,
    ensure_definition,
    job_name,
    queue_for,
    submit_request,
)
from runner.backends.base import Submission
from runner.backends.cloud import CloudBatchBackend, follow_lines
from runner.cost.table import PriceTable
from runner.errors import BackendError
from runner.spec.model import JobSpec
from runner.states import AttemptState, AttemptStatus

log = logging.getLogger("runner.backends.aws_batch")

MAX_ARRAY = 10_000            # children of one array job


class AwsBatchBackend(CloudBatchBackend):
    """Run each attempt as an AWS Batch job on a spot compute environment."""

    name = "aws"
    summary = "AWS Batch"
    capacities = ("spot", "on-demand")
    settings_model = AwsSettings
    required = ("job_queue",)
    uri_example = "s3://bucket/prefix"
    notice = "aws"
    extra = "aws"
    batch_size = None  # describe() batches by 100 itself and lists big arrays per status

    @classmethod
    def machine(cls, spec: JobSpec, table: PriceTable) -> tuple[str, str, str] | None:
        """The first of ``aws.instance_types`` in ``aws.region`` (None for ``optimal``)."""
        aws = aws_settings(spec)
        if not aws.instance_types or aws.instance_types[0] in ("optimal", "default"):
            return None
        region = aws.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        return "aws", region, aws.instance_types[0]

    @classmethod
    def init(cls, spec: JobSpec, echo: Any) -> None:
        """Create or update the spot compute environment and the job queue (``runner init aws``)."""
        from runner.backends.aws_setup import ensure_batch

        backend = cls(region=aws_settings(spec).region)
        ensure_batch(backend.client("batch", backend._region(spec)), spec, echo)

    def __init__(self, region: str | None = None, endpoint_url: str | None = None, config: Any = None) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise BackendError("the aws backend needs boto3: pip install 'spot-runner[aws]'") from exc
        self._session = boto3.session.Session()
        self.default_region = region or self._session.region_name or "us-east-1"
        self.endpoint_url = endpoint_url
        self._config = config or Config(retries={"mode": "standard", "max_attempts": 2},
                                        connect_timeout=5, read_timeout=10)  # control calls answer in well under 1 s
        self._clients: dict[tuple[str, str], Any] = {}
        self._definitions: dict[tuple[str, str], str] = {}
        self._queues: dict[str, set[str]] = {}     # region -> queues submitted to by this process
        self._sent: set[str] = set()               # keys whose SubmitJob this process has sent
        self._status_count: dict[str, int] = {}    # parent -> non-empty statuses at the last poll
        self._lock = threading.Lock()

    def client(self, service: str = "batch", region: str | None = None, retries: bool = True) -> Any:
        """Return (and keep) a boto3 client for ``service`` in ``region``; ``retries=False``: one try a call."""
        region = region or self.default_region
        with self._lock:
            key = (service if retries else f"{service}-once", region)
            if key not in self._clients:
                config = self._config
                if not retries:
                    from botocore.config import Config

                    config = config.merge(Config(retries={"mode": "standard", "total_max_attempts": 1}))
                kwargs: dict[str, Any] = {"region_name": region, "config": config}
                if self.endpoint_url:
                    kwargs["endpoint_url"] = self.endpoint_url
                self._clients[key] = self._session.client(service, **kwargs)
            return self._clients[key]

    # ------------------------------------------------------------------ the cloud's calls

    def create(self, subs: Sequence[Submission]) -> list[str]:
        """One job per attempt, or array children 0..n-1 of one attempt number as one array job."""
        first = subs[0]
        region = self._region(first.spec)
        batch = self.client("batch", region)
        definition = self._definition(batch, region, first.spec, first.env)
        queue = queue_for(first.spec, first.capacity)
        self._queues.setdefault(region, set()).add(queue)
        if len(subs) > 1 and one_array(subs, MAX_ARRAY):
            parent = self._submit_once(region, first, submit_request(first, definition, array_size=len(subs)))
            return [f"{parent}:{i}" for i in range(len(subs))]
        return [self._submit_once(region, sub, submit_request(sub, definition)) for sub in subs]

    def _submit_once(self, region: str, sub: Submission, request: dict[str, Any]) -> str:
        """SubmitJob for ``sub``, never twice: Batch accepts a second job of the same name.

        A key this backend sent before (its answer lost: a 5xx or a reset after the service acted)
        is looked up by name first, and the SDK does not resend SubmitJob on its own.
        """
        if sub.key in self._sent:
            found = self.lookup(sub)
            if found is not None:
                return found
        self._sent.add(sub.key)
        answer = self.client("batch", region, retries=False).submit_job(**request)
        return f"{region}/{field(answer, 'jobId', 'submit_job')}"

    def _definition(self, batch: Any, region: str, spec: JobSpec, env: dict[str, str]) -> str:
        """``name:revision`` of the spec's job definition (registered when missing), kept per region."""
        request = definition_request(spec, env)
        key = (region, request["jobDefinitionName"])
        if key not in self._definitions:
            self._definitions[key], registered = ensure_definition(batch, request)
            if registered:
                log.info("registered job definition %s for %s (%s)", self._definitions[key], spec.name, spec.image)
        return self._definitions[key]

    def split_id(self, backend_id: str) -> tuple[str, str]:
        region, job_id, index = parse_id(backend_id)
        return region, job_id if index is None else f"{job_id}:{index}"

    def describe(self, region: str, members: list[str]) -> dict[str, Any]:
        """describe_jobs by 100; the children of a big array listed per status instead."""
        batch = self.client("batch", region)
        arrays: dict[str, list[str]] = {}
        for member in members:
            if ":" in member:
                arrays.setdefault(member.split(":", 1)[0], []).append(member)
        listed = [p for p, kids in arrays.items() if self._lists(p, len(kids))]
        wanted = [m for m in members if ":" not in m or m.split(":", 1)[0] not in listed] + listed
        found = describe_jobs(batch, wanted)
        for parent in listed:
            children, self._status_count[parent] = list_children(batch, parent, found.get(parent))
            found.update(children)
        return found

    def _lists(self, parent: str, children: int) -> bool:
        """List ``parent``'s children per status (True) or describe them by 100 (False)?"""
        return listing_pays(self._status_count.get(parent, 3), children)

    def classify_record(self, region: str, member: str, record: Any) -> AttemptStatus:
        return classify(record)

    def missing(self, region: str, member: str) -> AttemptStatus:
        return AttemptStatus(AttemptState.FAILED, f"AWS Batch does not know job {member} "
                                                  "(ended more than a day ago, or deleted)")

    def stop(self, backend_id: str) -> None:
        """Terminate the job (queued or running); a job that has ended is left as it is."""
        region, target = self.split_id(backend_id)
        self.client("batch", region).terminate_job(jobId=target, reason=CANCEL_REASON)

    def lookup(self, sub: Submission) -> str | None:
        """Return the newest job named after ``sub``'s key in its region's queues, or None."""
        region = self._region(sub.spec)
        batch = self.client("batch", region)
        name = job_name(sub.key)
        queues = set(self._queues.get(region, set())) | {queue_for(sub.spec, sub.capacity)}
        found: list[dict[str, Any]] = []
        for queue in sorted(queues):  # with a JOB_NAME filter, list_jobs returns jobs of every status
            answer = batch.list_jobs(jobQueue=queue, filters=[{"name": "JOB_NAME", "values": [name]}])
            found += [j for j in field(answer, "jobSummaryList", "list_jobs") if j.get("jobName") == name]
        if not found:
            return None
        newest = max(found, key=lambda j: j.get("createdAt") or 0)
        return f"{region}/{newest['jobId']}"

    def logs(self, backend_id: str, follow: bool = False) -> Iterator[str]:
        """Yield the attempt's CloudWatch log lines (follow them while the job runs)."""
        region, target = self.split_id(backend_id)
        token: str | None = None

        def read() -> tuple[list[str], bool]:
            nonlocal token
            try:
                jobs = self.client("batch", region).describe_jobs(jobs=[target]).get("jobs", [])
            except Exception as exc:
                raise BackendError(f"cannot describe {backend_id}: {self.explain(exc)}") from exc
            if not jobs:
                raise BackendError(f"AWS Batch does not know {backend_id}: jobs are kept for about a day "
                                   "after they end")
            (group, stream), ended = log_stream(jobs[0]), jobs[0].get("status") in ("SUCCEEDED", "FAILED")
            if not stream:
                return ([f"(no CloudWatch log stream for {backend_id}, status {jobs[0].get('status')}: Batch "
                         "names one when the container starts; the emulator only after it ends)"]
                        if ended or not follow else []), ended
            lines: list[str] = []
            while True:  # every page written so far
                try:
                    token, page = log_page(self.client("logs", region), group, stream, token)
                except Exception as exc:
                    raise BackendError(f"cannot read the CloudWatch stream {group}/{stream}: "
                                       f"{self.explain(exc)}") from exc
                if not page:
                    return lines, ended
                lines += page

        return follow_lines(read, follow)

    def _region(self, spec: JobSpec) -> str:
        return aws_settings(spec).region or self.default_region

    def close(self) -> None:
        self._clients.clear()


__all__ = ["AwsBatchBackend", "AwsSettings", "classify", "parse_id"]
