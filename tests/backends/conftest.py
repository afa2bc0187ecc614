"""Fixtures: each backend's service, started once per session, as a :class:`tests.backends.clouds.Cloud`.

``clouds[name]`` gives the Cloud of ``local``, ``aws`` (moto), ``gcp`` or ``azure`` (stand-ins),
starting it on first use; tests take ``cloud`` parametrized over the ones they need.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backends.clouds import (
    AZURE_BATCH_ENV,
    Cloud,
    UnixBridge,
    aws_cloud,
    azure_cloud,
    gcp_cloud,
    local_cloud,
)
from tests.integration.conftest import (  # noqa: F401
    CIFAR_IMAGE,
    SESSION_ID,
    TEST_LABEL,
    docker_client,
)

#: moto runs Batch jobs from this small image (tests/integration/test_aws_batch.py does too).
BASE_IMAGE = "localhost/py311-base:bookworm"
AZURE_POOL = "spot-runner-backends"
AZURE_NODES = 8  # trials run side by side; each node runs one task at a time


#: Machine types the GCP stand-in accepts here; GCP refuses others with 400 INVALID_ARGUMENT at create.
GCP_MACHINE_TYPES = ("e2-standard-2", "e2-standard-4", "n1-standard-4", "n2-standard-8")


def gcp_standin_class() -> Any:
    """The GCP stand-in, refusing an unknown machine type the way the service refuses an invalid request."""
    from tests.standins.gcp_batch import GcpBatchStandIn, _error

    class Checking(GcpBatchStandIn):  # type: ignore[misc, valid-type]
        def create(self, parent: str, job_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            for instance in (body.get("allocationPolicy") or {}).get("instances") or []:
                machine = (instance.get("policy") or {}).get("machineType")
                if machine and machine not in GCP_MACHINE_TYPES:
                    return 400, _error(400, "INVALID_ARGUMENT", f"Invalid value for field "
                                       f"'job.allocation_policy.instances[0].policy.machine_type': '{machine}'. "
                                       f"Machine type {machine} does not exist in {parent.rsplit('/', 1)[-1]}.")
            result: tuple[int, dict[str, Any]] = super().create(parent, job_id, body)
            return result

    return Checking


class Clouds:
    """Start each backend's service on first use; stop them all at the end of the session."""

    def __init__(self, request: pytest.FixtureRequest, docker: Any, basetemp: Path) -> None:
        self.request, self.docker, self.basetemp = request, docker, basetemp
        self.made: dict[str, Cloud] = {}
        self._stop: list[Any] = []

    def __getitem__(self, name: str) -> Cloud:
        if name not in self.made:
            self.made[name] = getattr(self, f"_{name}")()
        return self.made[name]

    def _local(self) -> Cloud:
        bridge = UnixBridge()
        self._stop.append(bridge.close)
        return local_cloud(self.docker, bridge, CIFAR_IMAGE, {TEST_LABEL: SESSION_ID})

    def _aws(self) -> Cloud:
        from tests.integration.test_aws_batch import aws_settings

        moto = self.request.getfixturevalue("moto_server")
        return aws_cloud(moto, aws_settings(moto, f"q-backends-{uuid.uuid4().hex[:6]}"), BASE_IMAGE)

    def _gcp(self) -> Cloud:
        gcs = self.request.getfixturevalue("gcs_emulator")  # gs:// without it waits for a metadata server
        standin = gcp_standin_class()(self.docker, container_labels={TEST_LABEL: SESSION_ID}, queue_delay=0.1).start()
        self._stop.append(standin.stop)
        cloud = gcp_cloud(standin, CIFAR_IMAGE)
        cloud.base_env.update(gcs.env)
        return cloud

    def _azure(self) -> Cloud:
        from azure.batch import BatchClient
        from azure.core.credentials import AzureNamedKeyCredential

        from runner.backends.azure_setup import ensure_pool
        from runner.spec import spec_from_dict
        from tests.standins.azure_batch import AzureBatchStandIn

        standin = AzureBatchStandIn(labels={TEST_LABEL: SESSION_ID}, recreate_s=1.0, client=self.docker).start()
        self._stop.append(standin.stop)
        spec = spec_from_dict({"name": "pool", "image": CIFAR_IMAGE, "backend": "azure",
                               "azure": {"account_url": standin.url, "pool_id": AZURE_POOL,
                                         "low_priority_nodes": AZURE_NODES}})
        client = BatchClient(endpoint=standin.url, credential=AzureNamedKeyCredential(
            AZURE_BATCH_ENV["AZURE_BATCH_ACCOUNT"], AZURE_BATCH_ENV["AZURE_BATCH_KEY"]))
        ensure_pool(spec, lambda line: None, client=client)
        client.close()
        return azure_cloud(standin, AZURE_POOL, CIFAR_IMAGE)

    def close(self) -> None:
        for stop in reversed(self._stop):
            stop()
        if "local" in self.made:
            self._remove_local_containers()

    def _remove_local_containers(self) -> None:
        """Remove the local backend's containers of this session: their checkpoint folder is in its temp dir.

        The runner keeps ended containers for `runner logs`; other sessions' are left alone.
        """
        from runner.backends.local import LABEL_MANAGED

        base = str(self.basetemp)
        for container in self.docker.containers.list(all=True, filters={"label": f"{LABEL_MANAGED}=1"}):
            mounts = [m.get("Source", "") for m in container.attrs.get("Mounts") or []]
            if any(m.startswith(base + "/") for m in mounts):
                container.remove(force=True)


@pytest.fixture(scope="session")
def clouds(request: pytest.FixtureRequest, docker_client: Any,  # noqa: F811
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clouds]:
    made = Clouds(request, docker_client, tmp_path_factory.getbasetemp())
    try:
        yield made
    finally:
        made.close()
