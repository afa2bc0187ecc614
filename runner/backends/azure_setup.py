"""Azure Batch plumbing: the client, the request payloads, and the pool (``runner init azure``).

Every payload the backend sends is built here by a pure function from the job spec, so the
golden files in ``tests/golden/azure_*.json`` pin them and check their field names against
the SDK's own model classes (``azure-batch`` 15: ``BatchPoolCreateOptions``,
``BatchJobCreateOptions``, ``BatchTaskCreateOptions``, ``BatchTaskContainerSettings``).

Credentials: ``AZURE_BATCH_ACCOUNT`` and ``AZURE_BATCH_KEY`` (shared key) when both are set,
else ``DefaultAzureCredential`` (managed identity, ``az login``, environment). The endpoint is
``azure.account_url`` from the spec; it may be plain HTTP (the test stand-in).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from pydantic import Field, field_validator

from runner.backends.azure_records import message
from runner.backends.base import Submission
from runner.errors import BackendError, SubmitError
from runner.logs import quiet_azure_logs
from runner.spec.model import JobSpec, SpecModel

log = logging.getLogger("runner.backends.azure")


class AzureImageReference(SpecModel):
    """A marketplace image for the Batch pool's nodes."""

    publisher: str
    offer: str
    sku: str
    version: str = "latest"


class AzureSettings(SpecModel):
    """The ``azure:`` section."""

    account_url: str | None = None
    pool_id: str | None = None
    vm_size: str | None = None
    node_agent_sku_id: str | None = None
    image_reference: AzureImageReference | None = None
    low_priority_nodes: int | None = Field(default=None, ge=0, le=100_000)
    on_demand_pool_id: str | None = None       # dedicated nodes, for on-demand attempts
    dedicated_nodes: int | None = Field(default=None, ge=0, le=100_000)
    region: str | None = None  # for prices; default: the region in account_url

    @field_validator("account_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value[:80]!r} is not a URL; use https://<account>.<region>.batch.azure.com")
        return value


#: A marketplace image whose node agent runs Docker-compatible containers (Azure's container docs).
DEFAULT_IMAGE = AzureImageReference(publisher="microsoft-dsvm", offer="ubuntu-hpc", sku="2204")
DEFAULT_NODE_AGENT = "batch.node.ubuntu 22.04"
DEFAULT_VM_SIZE = "Standard_D2s_v3"
DEFAULT_NODES = 1
_ID_LIMIT = 64  # Azure job and task ids: at most 64 letters, digits, hyphens and underscores


def azure_id(text: str) -> str:
    """Return ``text`` as a valid Azure job or task id (shortened with a hash when too long)."""
    clean = "".join(c if c.isalnum() or c in "-_" else "-" for c in text)
    if len(clean) <= _ID_LIMIT:
        return clean
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{clean[:_ID_LIMIT - 9]}-{digest}"


def make_client(account_url: str) -> Any:
    """Return a ``BatchClient`` for ``account_url`` with quick retries (polls must not hang)."""
    try:
        from azure.batch import BatchClient
        from azure.core.credentials import AzureNamedKeyCredential
    except ImportError as exc:
        raise BackendError("the azure backend needs the package 'azure-batch': "
                           "pip install 'spot-runner[azure]'") from exc
    account, key = os.environ.get("AZURE_BATCH_ACCOUNT"), os.environ.get("AZURE_BATCH_KEY")
    credential: Any
    if account and key:
        credential = AzureNamedKeyCredential(account, key)
    else:
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError as exc:
            raise BackendError("set AZURE_BATCH_ACCOUNT and AZURE_BATCH_KEY, or pip install "
                               "azure-identity for Entra ID sign-in") from exc
        credential = DefaultAzureCredential()
    quiet_azure_logs()  # per-request lines, bare "Incomplete download." warnings, non-JSON 503 tracebacks
    return BatchClient(endpoint=account_url.rstrip("/"), credential=credential, retry_total=2,
                       retry_backoff_factor=0.3, connection_timeout=10, read_timeout=60)


def azure_settings(spec: JobSpec) -> AzureSettings:
    """Return the spec's ``azure:`` section (empty settings when it has none)."""
    section = spec.section("azure")
    return section if isinstance(section, AzureSettings) else AzureSettings()


def settings(spec: JobSpec) -> AzureSettings:
    """Return the spec's ``azure:`` section, or a one-line error naming what is missing."""
    azure = azure_settings(spec)
    if not azure.account_url or not azure.pool_id:
        raise BackendError("the azure backend needs azure.account_url and azure.pool_id in the job spec; "
                           "add them under azure:")
    return azure


# ---------------------------------------------------------------------------- payloads


def pool_for(spec: JobSpec, capacity: str) -> str:
    """The pool an attempt of ``capacity`` runs on: ``pool_id`` (low-priority nodes), or the dedicated one
    (``on_demand_pool_id``; ``<pool_id>-ondemand`` by default, ``pool_id`` itself when ``spot: false``)."""
    azure = settings(spec)
    if capacity == "spot":
        return str(azure.pool_id)
    return azure.on_demand_pool_id or (str(azure.pool_id) if not spec.spot else f"{azure.pool_id}-ondemand")


def job_for(job_id: str, capacity: str) -> str:
    """The Azure job of a runner job's attempts of ``capacity`` (an Azure job runs on one pool)."""
    return azure_id(job_id if capacity == "spot" else f"{job_id}-ondemand")


def pool_options(spec: JobSpec, capacity: str = "spot") -> Any:
    """Return the pool for ``spec``'s attempts of ``capacity``: low-priority (spot) or dedicated nodes,
    running Docker-compatible containers."""
    from azure.batch import models as m

    azure = settings(spec)
    image = azure.image_reference or DEFAULT_IMAGE
    default = azure.low_priority_nodes if azure.low_priority_nodes is not None else DEFAULT_NODES
    nodes = default if capacity == "spot" else (azure.dedicated_nodes if azure.dedicated_nodes is not None
                                                 else default)
    spot = capacity == "spot"
    return m.BatchPoolCreateOptions(
        id=pool_for(spec, capacity),
        vm_size=azure.vm_size or DEFAULT_VM_SIZE,
        virtual_machine_configuration=m.VirtualMachineConfiguration(
            image_reference=m.BatchVmImageReference(publisher=image.publisher, offer=image.offer,
                                                    sku=image.sku, version=image.version),
            node_agent_sku_id=azure.node_agent_sku_id or DEFAULT_NODE_AGENT,
            container_configuration=m.BatchContainerConfiguration(
                type="dockerCompatible", container_image_names=[spec.image]),
        ),
        target_low_priority_nodes=nodes if spot else 0,
        target_dedicated_nodes=0 if spot else nodes,
        task_slots_per_node=1,
    )


def job_options(job_id: str, spec: JobSpec, capacity: str = "spot") -> Any:
    """Return the Azure job for one runner job's attempts of ``capacity``: their tasks run on its pool."""
    from azure.batch import models as m

    return m.BatchJobCreateOptions(id=job_for(job_id, capacity), display_name=spec.name,
                                   pool_info=m.BatchPoolInfo(pool_id=pool_for(spec, capacity)))


def task_options(sub: Submission) -> Any:
    """Return the Azure task for one attempt.

    The task's command line is the container's CMD (the image's ENTRYPOINT stays), as with
    ``docker run IMAGE ARGS``; ``command`` in the spec replaces the entrypoint through
    ``--entrypoint`` in the container run options. Azure never retries the task itself
    (``max_task_retry_count: 0``): the watcher decides about every next attempt.
    """
    from azure.batch import models as m

    spec, res = sub.spec, sub.spec.resources
    command = list(spec.command or [])
    run_options = [f"--cpus={res.cpus:g}", f"--memory={res.memory_bytes}"]
    if res.gpus:
        run_options.append(f"--gpus={res.gpus}")
    if command:
        run_options.append(f"--entrypoint={command[0]}")
    words = command[1:] + list(spec.args)
    constraints = m.BatchTaskConstraints(max_task_retry_count=0)
    if spec.timeout_s is not None:
        constraints.max_wall_clock_time = timedelta(seconds=spec.timeout_s)
    return m.BatchTaskCreateOptions(
        id=azure_id(sub.key),
        display_name=sub.key,
        command_line=shlex.join(words),
        container_settings=m.BatchTaskContainerSettings(
            image_name=spec.image, container_run_options=" ".join(shlex.quote(o) for o in run_options)),
        environment_settings=[m.EnvironmentSetting(name=k, value=v) for k, v in sorted(sub.env.items())],
        constraints=constraints,
    )


# ---------------------------------------------------------------------------- runner init azure


def ensure_job(client: Any, url: str, job_id: str, spec: JobSpec, capacity: str) -> None:
    """Create the Azure job of a runner job on its pool, unless it exists; a missing pool is a SubmitError."""
    from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

    pool_id = pool_for(spec, capacity)
    try:
        client.get_pool(pool_id, select=["id", "state"])
    except ResourceNotFoundError:
        raise SubmitError(f"pool {pool_id} does not exist at {url}: create it with "
                          "`runner init azure --spec <job spec>`") from None
    try:
        client.create_job(job_options(job_id, spec, capacity))
        log.info("created Azure job %s on pool %s", job_for(job_id, capacity), pool_id)
    except ResourceExistsError:
        pass


def ensure_pool(spec: JobSpec, echo: Callable[[str], None], client: Any | None = None) -> bool:
    """Create the spec's pools unless they exist: low-priority nodes for spot attempts, and dedicated
    nodes when the spec's capacity policy may run attempts on demand; True if one was created."""
    azure = settings(spec)
    client = client or make_client(azure.account_url)
    capacities = (["spot"] if spec.spot else []) + (["on-demand"] if spec.capacity_policy != "spot-only" else [])
    created = False
    for capacity in capacities:
        created |= _ensure_one_pool(spec, capacity, client, echo)
    return created


def _ensure_one_pool(spec: JobSpec, capacity: str, client: Any, echo: Callable[[str], None]) -> bool:
    from azure.core.exceptions import (
        AzureError,
        ResourceExistsError,
        ResourceNotFoundError,
    )

    azure = settings(spec)
    wanted = pool_options(spec, capacity)
    try:
        try:
            pool = client.get_pool(wanted.id)
        except ResourceNotFoundError:
            pool = None
        if pool is None:
            try:
                client.create_pool(wanted)
            except ResourceExistsError:  # created meanwhile by someone else
                pool = client.get_pool(wanted.id)
            else:
                kind = "low-priority (spot)" if capacity == "spot" else "dedicated (on-demand)"
                count = wanted.target_low_priority_nodes or wanted.target_dedicated_nodes
                echo(f"created pool {wanted.id} at {azure.account_url}: {count} {kind} "
                     f"{wanted.vm_size} node(s), containers (dockerCompatible) with {spec.image} prefetched")
                return True
    except AzureError as exc:
        raise BackendError(f"cannot create or read pool {wanted.id} at {azure.account_url}: "
                           f"{message(exc)}; check azure.account_url and the Batch credentials") from exc
    _describe_existing(pool, spec, echo)
    return False


def _describe_existing(pool: Any, spec: JobSpec, echo: Callable[[str], None]) -> None:
    vm = pool.get("virtualMachineConfiguration") or {}
    containers = vm.get("containerConfiguration") or {}
    echo(f"found pool {pool.get('id')}: {pool.get('vmSize')}, "
         f"{pool.get('targetLowPriorityNodes') or 0} low-priority and "
         f"{pool.get('targetDedicatedNodes') or 0} dedicated node(s) wanted, state {pool.get('state')}")
    if not containers:
        echo(f"warning: pool {pool.get('id')} has no container configuration, so container tasks "
             "cannot run on it; delete it and run `runner init azure` again")
    elif spec.image not in (containers.get("containerImageNames") or []):
        echo(f"note: pool {pool.get('id')} does not prefetch {spec.image}; each node pulls it on first use")


__all__ = ["azure_id", "ensure_job", "ensure_pool", "job_options", "make_client", "pool_options", "task_options"]
