"""Issue 4, Azure: `runner submit --backend azure` of the CIFAR smoke job through the stand-in.

Checkpoints go to Azurite (az://). A background thread preempts the running task twice through
the stand-in's control endpoint, the Azure way (node `preempted`, task requeued); the job
completes and its final weights equal those of an uninterrupted local run of the same image.

The task image is the CIFAR image with this checkout's `runner/` copied over it (built here in
seconds, never pulled), so the containers run the az:// store under test; when the image lacks
``tenacity`` (the cloud stores' retry library) the host's copy goes in too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ROOT, runner_env, smoke_spec
from tests.integration.conftest import CIFAR_IMAGE, SESSION_ID, TEST_LABEL

pytest.importorskip("azure.batch")
pytest.importorskip("azure.storage.blob")
pytestmark = [pytest.mark.docker, pytest.mark.slow]

IMAGE = "localhost/runner-cifar:azure-e2e"
BATCH_ENV = {"AZURE_BATCH_ACCOUNT": "standin", "AZURE_BATCH_KEY": "c3RhbmQtaW4ta2V5"}


@pytest.fixture(scope="module")
def task_image(docker_client: Any) -> str:
    with tempfile.TemporaryDirectory() as context:
        shutil.copytree(ROOT / "runner", Path(context) / "runner",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        site = docker_client.containers.run(CIFAR_IMAGE, ["-c", "import runner, os; print(os.path.dirname(os.path.dirname(runner.__file__)))"],
                                            entrypoint="python", remove=True).decode().strip()
        lines = [f"FROM {CIFAR_IMAGE}", f"COPY runner/ {site}/runner/"]
        has = docker_client.containers.run(CIFAR_IMAGE, ["-c", "import importlib.util as u; "
                                           "print(u.find_spec('tenacity') is not None)"],
                                           entrypoint="python", remove=True).decode().strip()
        if has != "True":  # the cloud stores need tenacity; an older image may lack it
            import tenacity

            shutil.copytree(Path(tenacity.__file__).parent, Path(context) / "tenacity",
                            ignore=shutil.ignore_patterns("__pycache__"))
            lines.append(f"COPY tenacity/ {site}/tenacity/")
        (Path(context) / "Dockerfile").write_text("\n".join(lines) + "\n")
        docker_client.images.build(path=context, tag=IMAGE, rm=True, pull=False)
    probe = docker_client.containers.run(IMAGE, ["-c", "import azure.storage.blob, runner.stores.azure_blob"],
                                         entrypoint="python", remove=True, stderr=True)
    assert probe is not None
    return IMAGE


@pytest.fixture(scope="module")
def standin(docker_client: Any) -> Any:
    from tests.standins.azure_batch import AzureBatchStandIn

    service = AzureBatchStandIn(labels={TEST_LABEL: SESSION_ID}, recreate_s=2.0, client=docker_client).start()
    yield service
    service.stop()


def cli(*args: str, home: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner.cli", *args], capture_output=True, text=True,
                          env={**runner_env(home), **env}, cwd=ROOT, timeout=timeout)


def status_json(job_id: str, home: Path, env: dict[str, str]) -> dict[str, Any]:
    proc = cli("status", job_id, "--json", home=home, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def step_of(logs: bytes) -> int:
    steps = [int(s) for s in re.findall(rb"step (\d+)/", logs)]
    return max(steps) if steps else -1


class Preemptor(threading.Thread):
    """Preempt the running task after it has passed ``after`` steps, ``times`` times."""

    def __init__(self, standin: Any, docker_client: Any, times: int = 2, after: int = 45) -> None:
        super().__init__(daemon=True)
        self.standin, self.docker, self.times, self.after = standin, docker_client, times, after
        self.done: list[dict[str, Any]] = []
        self.concurrent: list[list[str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        preempted: set[tuple[str, str]] = set()
        while not self.stop.wait(0.3):
            running = self.standin.running_containers()
            if len(running) > 1:
                self.concurrent.append(running)
            if len(self.done) >= self.times:
                continue
            with self.standin.lock:
                live = [(job, tid) for job, tasks in self.standin.tasks.items() for tid, t in tasks.items()
                        if t["state"] == "running" and (job, tid) not in preempted]
                containers = {key: self.standin.containers.get(key) for key in live}
            for key, container_id in containers.items():
                if not container_id:
                    continue
                logs = self.docker.api.logs(container_id, stdout=True, stderr=True)
                first = re.search(rb"resuming \S+ from step (\d+)", logs)
                base = int(first.group(1)) if first else 0
                if step_of(logs) >= base + self.after:
                    url = f"{self.standin.url}/_standin/preempt?job={key[0]}&task={key[1]}"
                    answer = urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10)
                    self.done.append({**json.loads(answer.read()), "step": step_of(logs)})
                    preempted.add(key)


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory: pytest.TempPathFactory, task_image: str) -> str:
    home = tmp_path_factory.mktemp("azure-reference")
    spec = smoke_spec(home, epochs=4, image=task_image)
    proc = cli("submit", str(spec), "--interval", "1", home=home, env={})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = proc.stdout.split()[1]
    return str(status_json(job_id, home, {})["weights_sha256"])


def test_azure_job_survives_two_preemptions(tmp_path, docker_client, azurite, standin, task_image,
                                            local_reference):
    from azure.storage.blob import BlobServiceClient

    prefix = f"cifar-{SESSION_ID}"
    service = BlobServiceClient.from_connection_string(azurite.env["AZURE_STORAGE_CONNECTION_STRING"])
    try:
        service.create_container("checkpoints")
    except Exception as exc:  # noqa: BLE001 - exists from an earlier test in this session
        assert "ContainerAlreadyExists" in str(exc)
    spec = smoke_spec(tmp_path, epochs=4, image=task_image,
                      checkpoint={"uri": f"az://checkpoints/{prefix}", "every": 20, "keep": 3},
                      env={"PYTHONUNBUFFERED": "1",
                           "AZURE_STORAGE_CONNECTION_STRING": azurite.container_env["AZURE_STORAGE_CONNECTION_STRING"]},
                      azure={"account_url": standin.url, "pool_id": "spot-runner-e2e", "low_priority_nodes": 1})
    env = {**BATCH_ENV, **azurite.env}
    started = time.monotonic()
    init = cli("init", "azure", "--spec", str(spec), home=tmp_path, env=env)
    assert init.returncode == 0 and init.stdout.startswith("created pool spot-runner-e2e"), init.stdout + init.stderr
    again = cli("init", "azure", "--spec", str(spec), home=tmp_path, env=env)
    assert again.stdout.startswith("found pool spot-runner-e2e"), again.stdout + again.stderr

    preemptor = Preemptor(standin, docker_client, times=2, after=45)
    preemptor.start()
    try:
        proc = cli("submit", str(spec), "--backend", "azure", "--interval", "1", home=tmp_path, env=env)
    finally:
        preemptor.stop.set()
        preemptor.join()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = proc.stdout.split()[1]
    status = status_json(job_id, tmp_path, env)

    assert len(preemptor.done) == 2, preemptor.done
    preempted = [a for a in status["attempt_list"] if a["state"] == "PREEMPTED"]
    assert len(preempted) == 2 and all("preempted" in a["reason"] for a in preempted), status["attempt_list"]
    assert [a["state"] for a in status["attempt_list"]][-1] == "SUCCEEDED"
    ids = [a["backend_id"] for a in status["attempt_list"]]
    assert len(set(ids)) == len(ids) and all(i.startswith(standin.url + "|") for i in ids)
    # Each requeued task was ended before the next attempt began: one run each, never two at once.
    assert all(standin.runs[tuple(i.split("|")[1:])] == 1 for i in ids), standin.runs
    assert not preemptor.concurrent, preemptor.concurrent
    # Resumed from az:// checkpoints in Azurite, and ended with the uninterrupted run's weights.
    blobs = [b.name for b in service.get_container_client("checkpoints").list_blobs(name_starts_with=prefix)]
    assert f"{prefix}/final/MANIFEST.json" in blobs and any("/step-" in b for b in blobs), blobs[:20]
    assert status["weights_sha256"] == local_reference
    assert "final weights sha256 " + local_reference in proc.stdout
    print(f"azure e2e: {time.monotonic() - started:.0f} s, preempted at steps "
          f"{[d['step'] for d in preemptor.done]}, attempts {len(ids)}")
