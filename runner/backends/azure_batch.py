"""Run attempts as container tasks on Azure Batch, on low-priority (spot) nodes.

One Azure job per runner job (created on first submit), one Azure task per attempt, with the
container settings, environment and ``max_task_retry_count: 0`` built in
:mod:`runner.backends.azure_setup`. An attempt's id is self-describing, because the watcher
builds backends with no arguments: ``"<account_url>|<azure job id>|<azure task id>"``.

Preemption, the Azure way, and how it maps onto attempts:

- Azure requeues a task whose low-priority node is preempted: the node shows state
  ``preempted`` (then is re-created with the same id) and the *same* task goes back to
  ``active`` and later runs again. No task field says "preempted".
- The runner wants an attempt to end before the next begins. So the backend reports the
  attempt PREEMPTED as soon as it sees either a task running on a node in state
  ``preempted``, or a task that ran and is back to ``active`` (``previousState: running``),
  or (within one watcher's life) a task running again with a new start time or node. Before
  returning PREEMPTED it terminates the requeued task, so the watcher's next attempt (a new
  task, new id) is the only one that runs: never two at once. If that terminate fails the
  attempt reads UNKNOWN and the next poll tries again.
- A task ended by the runner while requeued stays PREEMPTED on later polls (it completed from
  ``active`` after having started); one terminated while running reads CANCELLED.
- Exit code 75 (the task stopped after a notice, checkpoint committed) is PREEMPTED as well.

The mapping itself is :func:`classify` in :mod:`runner.backends.azure_records`, pure, with the ids.
A poll makes one ``list_tasks`` call per Azure job, plus one ``list_nodes`` per pool with a
task on a node; any failure reads UNKNOWN, never FAILED.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from runner.backends.azure_records import (
    SEP,
    check_collection,
    classify,
    message,
    parse_id,
    region_of,
)
from runner.backends.azure_setup import (
    AzureSettings,
    azure_id,
    azure_settings,
    ensure_job,
    ensure_pool,
    job_for,
    make_client,
    settings,
    task_options,
)
from runner.backends.base import Submission
from runner.backends.cloud import CloudBatchBackend, follow_lines
from runner.cost.table import PriceError, PriceTable
from runner.errors import BackendError
from runner.spec.model import JobSpec
from runner.states import AttemptState, AttemptStatus

log = logging.getLogger("runner.backends.azure")

CHUNK = 100  # create_task_collection takes at most 100 tasks


class AzureBatchBackend(CloudBatchBackend):
    """Run each attempt as one container task on an Azure Batch pool."""

    name = "azure"
    summary = "Azure Batch"
    batch_size = None  # one list_tasks answers for every task of a job
    capacities = ("spot", "on-demand")
    settings_model = AzureSettings
    required = ("account_url", "pool_id")
    uri_example = "az://container/prefix"
    notice = "azure"
    extra = "azure"

    @classmethod
    def machine(cls, spec: JobSpec, table: PriceTable) -> tuple[str, str, str] | None:
        """``azure.vm_size`` in ``azure.region`` (default: the region in the account URL)."""
        azure = azure_settings(spec)
        if not azure.vm_size:
            return None
        region = azure.region or region_of(azure.account_url)
        if region is None:
            raise PriceError(f"azure.vm_size {azure.vm_size} has no region to price it in; "
                             "add region: eastus (for example) under azure:")
        return "azure", region, azure.vm_size

    def __init__(self, client_factory: Any = None) -> None:
        self._factory = client_factory or make_client
        self._clients: dict[str, Any] = {}
        self._jobs: set[tuple[str, str]] = set()   # (account, job) known to exist
        self._seen: dict[str, tuple[Any, Any]] = {}  # backend id -> (startTime, nodeId) while running

    def client(self, account_url: str) -> Any:
        """Return the (cached) BatchClient for an account URL."""
        account_url = account_url.rstrip("/")
        if account_url not in self._clients:
            self._clients[account_url] = self._factory(account_url)
        return self._clients[account_url]

    # ------------------------------------------------------------------ the cloud's calls

    def create(self, subs: Sequence[Submission]) -> list[str]:
        """Create the tasks of one job (``create_task_collection``, 100 at a time); an existing task is adopted."""
        from azure.batch import models as m
        from azure.core.exceptions import ResourceExistsError

        spec, capacity = subs[0].spec, subs[0].capacity
        url, job = settings(spec).account_url.rstrip("/"), job_for(subs[0].job_id, capacity)
        client = self.client(url)
        if (url, job) not in self._jobs:
            ensure_job(client, url, subs[0].job_id, spec, capacity)
            self._jobs.add((url, job))
        tasks = [task_options(sub) for sub in subs]
        if len(tasks) == 1:
            try:
                client.create_task(job, tasks[0])
            except ResourceExistsError:
                log.info("task %s exists: adopting it", tasks[0].id)
        else:
            for start in range(0, len(tasks), CHUNK):
                result = client.create_task_collection(job, m.BatchTaskGroup(task_values=tasks[start:start + CHUNK]))
                check_collection(result)
        return [SEP.join((url, job, t.id)) for t in tasks]

    def split_id(self, backend_id: str) -> tuple[tuple[str, str], str]:
        url, job, task = parse_id(backend_id)
        return (url, job), task

    def poll(self, ids: Sequence[str]) -> dict[str, AttemptStatus]:
        self._nodes: dict[tuple[str, str], dict[str, str]] = {}  # one node listing per pool per poll
        return super().poll(ids)

    def describe(self, group: tuple[str, str], members: list[str]) -> dict[str, Any]:
        """One task listing for the job, plus the states of the nodes its live tasks sit on."""
        url, job = group
        listed = {str(t["id"]): t for t in self.client(url).list_tasks(job)}
        found = {m: listed[m] for m in members if m in listed}
        return {m: (task, self._node_state(url, task)) for m, task in found.items()}

    def _node_state(self, url: str, task: Mapping[str, Any]) -> str | None:
        from azure.core.exceptions import AzureError

        node_info = task.get("nodeInfo") or {}
        pool, node = node_info.get("poolId"), node_info.get("nodeId")
        if str(task.get("state")) == "completed" or not pool:
            return None
        if (url, str(pool)) not in self._nodes:
            try:
                self._nodes[(url, str(pool))] = {str(n["id"]): str(n.get("state") or "")
                                                 for n in self.client(url).list_nodes(pool, select=["id", "state"])}
            except AzureError as exc:  # node states unknown: classify from the task alone
                log.warning("cannot list the nodes of pool %s: %s", pool, message(exc))
                self._nodes[(url, str(pool))] = {}
        return self._nodes[(url, str(pool))].get(str(node))

    def classify_record(self, group: tuple[str, str], member: str, record: Any) -> AttemptStatus:
        """Classify, and end a requeued task first: the watcher's next attempt must run alone."""
        task, node_state = record
        url, job = group
        backend_id = SEP.join((url, job, member))
        status = classify(task, node_state, self._seen.get(backend_id))
        info, node_info = task.get("executionInfo") or {}, task.get("nodeInfo") or {}
        if status.state is AttemptState.RUNNING:
            self._seen.setdefault(backend_id, (info.get("startTime"), node_info.get("nodeId")))
        if status.state is AttemptState.PREEMPTED and str(task.get("state")) != "completed":
            try:
                self.cancel(backend_id)
            except BackendError as exc:
                return AttemptStatus(AttemptState.UNKNOWN, f"{status.reason}, but {exc}; will retry")
        if status.is_terminal():
            self._seen.pop(backend_id, None)
        return status

    def missing(self, group: tuple[str, str], member: str) -> AttemptStatus:
        return AttemptStatus(AttemptState.FAILED, "task not found (deleted outside the runner)")

    # ------------------------------------------------------------------ cancel, logs, find

    def stop(self, backend_id: str) -> None:
        """Terminate the task; a task already completed or gone is fine."""
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        url, job, task_id = parse_id(backend_id)
        try:
            self.client(url).terminate_task(job, task_id)
        except (ResourceNotFoundError, ResourceExistsError):
            return  # gone, or completed already (409)

    def logs(self, backend_id: str, follow: bool = False) -> Iterator[str]:
        """Yield the task's stdout.txt then stderr.txt lines; with ``follow``, stdout as it grows."""
        url, job, task_id = parse_id(backend_id)
        client = self.client(url)
        for name in ("stdout.txt", "stderr.txt"):
            yield from self._task_file(client, job, task_id, name, tail=follow and name == "stdout.txt")

    def _task_file(self, client: Any, job: str, task_id: str, name: str, tail: bool) -> Iterator[str]:
        """Yield one task file's lines; with ``tail``, what it gains until the task completes."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        offset, pending, told = 0, b"", False

        def read() -> tuple[list[str], bool]:
            nonlocal offset, pending, told
            lines: list[str] = []
            try:
                data = b"".join(client.download_task_file(job, task_id, name, ocp_range=f"bytes={offset}-"))
                offset += len(data)
                *done, pending = (pending + data).split(b"\n")
                lines = [line.decode("utf-8", "replace").rstrip("\r") for line in done]
            except ResourceNotFoundError:
                if name == "stdout.txt" and not told:
                    lines, told = [f"(no {name} for task {task_id} yet: Azure keeps task files on the node while "
                                   "it lives; the task may not have started, or its node is gone)"], True
            except AzureError as exc:
                raise BackendError(f"cannot read {name} of Azure task {task_id}: {message(exc)}") from exc
            return lines, not tail or self._completed(client, job, task_id)

        yield from follow_lines(read, tail)
        if pending:
            yield pending.decode("utf-8", "replace").rstrip("\r")

    def _completed(self, client: Any, job: str, task_id: str) -> bool:
        from azure.core.exceptions import AzureError

        try:
            return str(client.get_task(job, task_id, select=["state"]).get("state")) == "completed"
        except AzureError:
            return True

    def lookup(self, sub: Submission) -> str | None:
        """Return the id of the task created for ``sub``, looked up in its spec's Batch account."""
        from azure.core.exceptions import ResourceNotFoundError

        url = azure_settings(sub.spec).account_url
        if not url:
            return None
        url = url.rstrip("/")
        job, task_id = job_for(sub.job_id, sub.capacity), azure_id(sub.key)
        try:
            self.client(url).get_task(job, task_id, select=["id"])
        except ResourceNotFoundError:
            return None
        return SEP.join((url, job, task_id))

    def explain(self, exc: BaseException) -> str:
        return message(exc)

    @classmethod
    def init(cls, spec: JobSpec, echo: Any) -> None:
        """Create the spec's pool of spot nodes with a container configuration, unless it exists."""
        ensure_pool(spec, echo)

    def close(self) -> None:
        """Close the clients."""
        for client in self._clients.values():
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self._clients.clear()


__all__ = ["AzureBatchBackend", "classify", "parse_id"]
