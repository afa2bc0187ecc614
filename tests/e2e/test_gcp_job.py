"""Issue 4 end to end on GCP Batch (the stand-in): `runner submit --backend gcp`, gs:// checkpoints.

The CIFAR smoke job runs through the real google-cloud-batch client against the stand-in, which
runs the task containers on the local engine; checkpoints go to gcp-storage-emulator. A thread
preempts the task three times through the stand-in's control endpoint, the way GCP reports it
(exit 50001, "... due to Spot Preemption with exit code 50001."). With retries.preemptions = 1
the job's max_retry_count is 1, so:

- preemption 1: GCP retries the task in place; the watcher sees the attempt RUNNING throughout;
- preemption 2: GCP's retry is spent, the job FAILS, attempt 1 is PREEMPTED, the watcher submits
  attempt 2 (a new Batch job) on the same gs:// checkpoint;
- preemption 3: GCP retries attempt 2's task in place; it completes.

The final weights equal those of an uninterrupted local run of the same arguments and image.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("google.cloud.batch_v1")
pytest.importorskip("google.cloud.storage")

from tests.e2e.conftest import ROOT, runner_env, smoke_spec  # noqa: E402
from tests.integration.conftest import CIFAR_IMAGE, SESSION_ID, TEST_LABEL  # noqa: E402
from tests.standins.gcp_batch import GcpBatchStandIn  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.slow]
BUCKET = "spot-runner-e2e"
OVERLAY = "localhost/runner-cifar:gcp-e2e"
SITE = "/opt/venv/lib/python3.11/site-packages/runner"


@pytest.fixture(scope="module")
def task_image(docker_client: Any) -> Iterator[str]:
    """The CIFAR image, able to use gs:// checkpoints.

    An image built before runner/stores/gcs.py existed gets a thin test-only layer with this
    checkout's ``runner/`` package, plus the pure-Python ``tenacity`` from this interpreter when
    the image lacks it (runner/stores/cloud.py imports it); no registry is needed. The reference
    run uses the same image, so the comparison stays like for like.
    """
    import docker

    def probe(image: str, code: str) -> bool:
        try:
            docker_client.containers.run(image, ["-c", code], entrypoint=["python"], remove=True,
                                         labels={TEST_LABEL: SESSION_ID})
            return True
        except docker.errors.ContainerError:
            return False

    if probe(CIFAR_IMAGE, "import runner.stores.gcs, tenacity"):
        yield CIFAR_IMAGE
        return
    if not probe(CIFAR_IMAGE, "import google.cloud.storage"):
        pytest.skip(f"{CIFAR_IMAGE} has no google-cloud-storage: rebuild it with scripts/build-images.sh")
    context = Path(tempfile.mkdtemp(prefix="gcp-e2e-image-"))
    try:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(ROOT / "runner", context / "runner", ignore=ignore)
        lines = [f"FROM {CIFAR_IMAGE}", f"RUN rm -rf {SITE}", f"COPY runner/ {SITE}/"]
        if not probe(CIFAR_IMAGE, "import tenacity"):
            import tenacity

            shutil.copytree(Path(tenacity.__file__).parent, context / "tenacity", ignore=ignore)
            lines.append(f"COPY tenacity/ {SITE.rsplit('/', 1)[0]}/tenacity/")
        (context / "Dockerfile").write_text("\n".join(lines) + "\n")
        docker_client.images.build(path=str(context), tag=OVERLAY, rm=True)
    finally:
        shutil.rmtree(context, ignore_errors=True)
    try:
        yield OVERLAY
    finally:
        try:
            docker_client.images.remove(OVERLAY, force=True)
        except docker.errors.APIError:
            pass


@pytest.fixture(scope="module")
def standin(docker_client: Any) -> Iterator[GcpBatchStandIn]:
    server = GcpBatchStandIn(docker_client, container_labels={TEST_LABEL: SESSION_ID}).start()
    try:
        yield server
    finally:
        server.stop()


def run_cli(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner.cli", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=timeout)


def read_step(gcs: Any, prefix: str) -> int:
    blob = gcs.bucket(BUCKET).blob(f"{prefix}/progress.json")
    try:
        return int(json.loads(blob.download_as_bytes()).get("step") or 0)
    except Exception:  # noqa: BLE001 - not written yet
        return -1


class Preemptor(threading.Thread):
    """Preempt the running task through the stand-in's control endpoint when progress reaches each step."""

    def __init__(self, standin: GcpBatchStandIn, gcs: Any, prefix: str, at_steps: list[int]) -> None:
        super().__init__(daemon=True)
        self.standin, self.gcs, self.prefix, self.at_steps = standin, gcs, prefix, list(at_steps)
        self.done: list[tuple[str, int]] = []
        self.stop = threading.Event()

    def running_job(self) -> str | None:
        with self.standin.lock:
            for job in self.standin.jobs.values():
                if job.tasks and job.tasks[0].state == "RUNNING" and job.tasks[0].container is not None:
                    return job.name
        return None

    def run(self) -> None:
        while self.at_steps and not self.stop.is_set():
            name = self.running_job()
            step = read_step(self.gcs, self.prefix)
            if name is not None and step >= self.at_steps[0]:
                url = f"{self.standin.url}/_standin/preempt?job={name}"
                try:
                    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10) as r:
                        ok = json.loads(r.read())["preempted"]
                except urllib.error.HTTPError:
                    ok = False
                if ok:
                    self.done.append((name, step))
                    self.at_steps.pop(0)
                    time.sleep(1.0)  # the task's new container starts from the checkpoint
            time.sleep(0.2)


def test_cifar_smoke_on_gcp_survives_three_spot_preemptions(tmp_path, docker_client, gcs_emulator, standin,
                                                             task_image, monkeypatch, request):
    from google.cloud import storage

    for key, value in gcs_emulator.env.items():
        monkeypatch.setenv(key, value)
    gcs = storage.Client()
    try:
        gcs.create_bucket(BUCKET)
    except Exception:  # noqa: BLE001 - created by an earlier test of this session
        pass

    # the uninterrupted reference: the same arguments and image on the local engine
    if task_image == CIFAR_IMAGE:
        reference_sha = request.getfixturevalue("smoke_reference")["4"]
    else:
        ref_home = tmp_path / "reference"
        ref_home.mkdir()
        env_ref = runner_env(ref_home)
        ref = run_cli(["submit", str(smoke_spec(ref_home, epochs=4, image=task_image)), "--interval", "1"], env_ref)
        assert ref.returncode == 0, ref.stdout + ref.stderr
        reference_sha = json.loads(run_cli(["status", ref.stdout.split()[1], "--json"], env_ref).stdout)[
            "weights_sha256"]
    assert reference_sha

    home = tmp_path / "gcp"
    home.mkdir()
    prefix = f"cifar-smoke-{uuid.uuid4().hex[:8]}"
    spec = smoke_spec(home, epochs=4, image=task_image,
                      checkpoint={"uri": f"gs://{BUCKET}/{prefix}", "every": 20, "keep": 3},
                      retries={"preemptions": 1, "failures": 0},
                      env={"PYTHONUNBUFFERED": "1", **gcs_emulator.container_env},
                      gcp={"project": "test-project", "region": "us-central1", "machine_type": "e2-standard-2"})
    env = {**runner_env(home), **gcs_emulator.env, "RUNNER_GCP_BATCH_ENDPOINT": standin.url}
    preemptor = Preemptor(standin, gcs, prefix, at_steps=[40, 100, 170])
    preemptor.start()
    started = time.monotonic()
    try:
        proc = run_cli(["submit", str(spec), "--backend", "gcp", "--interval", "1"], env)
    finally:
        preemptor.stop.set()
        preemptor.join(timeout=5)
    took = time.monotonic() - started
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert len(preemptor.done) == 3, (preemptor.done, out)
    job_id = proc.stdout.split()[1]
    status = json.loads(run_cli(["status", job_id, "--json"], env).stdout)

    # what GCP reported: three spot preemptions, in two Batch jobs
    spot_events = [e["description"] for job in standin.jobs.values() for t in job.tasks for e in t.events
                   if "due to Spot Preemption with exit code 50001" in e["description"]]
    assert len(spot_events) == 3, spot_events
    # what the watcher saw: attempt 1 preempted once GCP's retry was spent; attempt 2 succeeded
    attempts = status["attempt_list"]
    assert [a["state"] for a in attempts] == ["PREEMPTED", "SUCCEEDED"], attempts
    assert attempts[0]["exit_code"] == 50001 and "due to Spot Preemption" in attempts[0]["reason"]
    assert "retried it in place after 1 failure" in attempts[1]["reason"]
    assert all(a["backend_id"].startswith("projects/test-project/locations/us-central1/jobs/") for a in attempts)
    assert status["state"] == "SUCCEEDED" and status["preemptions"] == 1
    assert status["weights_sha256"] == reference_sha, (status, out)
    assert f"final weights sha256 {reference_sha}" in proc.stdout
    print(f"gcp run took {took:.1f} s with preemptions at steps {[s for _, s in preemptor.done]}; image {task_image}")
