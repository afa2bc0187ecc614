"""Issue 4 end to end on AWS Batch as moto serves it: `runner submit --backend aws`, S3 checkpoints,
two spot reclaims reported the AWS way (``Host EC2 (instance ...) terminated.``), exact final weights;
and a job started on the local engine with s3:// checkpoints and finished on AWS Batch.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import ROOT, runner, runner_env, status_json
from tests.integration.test_aws_batch import aws_settings, boto_client

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IMAGE = "localhost/runner-cifar:aws-e2e"
ARGS = ["--data", "synthetic", "--epochs", "8", "--train-size", "4000", "--test-size", "500",
        "--batch-size", "32", "--threads", "2", "--seed", "0"]
RECLAIM = "Host EC2 (instance i-0123) terminated."


@pytest.fixture(scope="module")
def image(docker_client: Any) -> str:
    """The CIFAR image with this tree's runner package (the S3 store included) on top.

    The S3 store needs tenacity, which the task image lacks so far: it is copied from this venv.
    """
    import tenacity

    site = Path(tenacity.__file__).parent
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dockerfile = (b"FROM localhost/runner-cifar:latest\n"
                      b"COPY runner/ /opt/venv/lib/python3.11/site-packages/runner/\n"
                      b"COPY tenacity/ /opt/venv/lib/python3.11/site-packages/tenacity/\n")
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        for folder, name in ((ROOT / "runner", "runner"), (site, "tenacity")):
            tar.add(folder, arcname=name, filter=lambda t: None if "__pycache__" in t.name else t)
    buf.seek(0)
    docker_client.images.build(fileobj=buf, custom_context=True, tag=IMAGE, pull=False, rm=True)
    return IMAGE


@pytest.fixture(scope="module")
def aws(moto_server: Any, image: str) -> dict[str, Any]:
    return aws_settings(moto_server)


@pytest.fixture(scope="module")
def bucket(moto_server: Any) -> str:
    name = f"ckpt-{uuid.uuid4().hex[:8]}"
    boto_client(moto_server, "s3").create_bucket(Bucket=name)
    return name


def write_spec(path: Path, moto_server: Any, aws: dict[str, Any], uri: str, backend: str) -> Path:
    data = {"name": "cifar-aws", "image": IMAGE, "args": ARGS, "backend": backend, "notice": "none",
            "env": {"PYTHONUNBUFFERED": "1", **moto_server.container_env},
            "resources": {"cpus": 2, "memory": "2Gi"}, "checkpoint": {"uri": uri, "every": 20, "keep": 3},
            "retries": {"preemptions": 10, "failures": 0}, "aws": aws, "timeout": "10m"}
    path.write_text(yaml.safe_dump(data))
    return path


def cli_env(home: Path, moto_server: Any) -> dict[str, str]:
    return {**runner_env(home), **moto_server.env}


def run_cli(*args: str, home: Path, moto_server: Any, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner.cli", *args], capture_output=True, text=True,
                          env=cli_env(home, moto_server), cwd=ROOT, timeout=timeout)


def steps(s3: Any, bucket: str, prefix: str) -> int:
    """Return the highest committed checkpoint step under the prefix (-1 when none)."""
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])]
    found = [int(k.split("/step-")[1].split("/")[0]) for k in keys if "/step-" in k and k.endswith("MANIFEST.json")]
    return max(found, default=-1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, moto_server: Any, aws: dict[str, Any]) -> str:
    """The uninterrupted run's final weights, on the local engine with a file:// store."""
    home = tmp_path_factory.mktemp("aws-reference")
    spec = write_spec(home / "ref.yaml", moto_server, aws, f"file://{home}/ck", "local")
    proc = runner("submit", str(spec), "--interval", "1", home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return str(status_json(proc.stdout.split()[1], home)["weights_sha256"])


def test_preempted_twice_on_aws_batch_finishes_exactly(tmp_path, moto_server, aws, bucket, reference):
    prefix = f"jobs/{uuid.uuid4().hex[:8]}"
    spec = write_spec(tmp_path / "aws.yaml", moto_server, aws, f"s3://{bucket}/{prefix}", "local")
    batch, s3 = boto_client(moto_server, "batch"), boto_client(moto_server, "s3")
    reclaimed: list[tuple[str, int]] = []
    stop = threading.Event()

    def reclaimer() -> None:
        last = -1
        while not stop.is_set() and len(reclaimed) < 2:
            # moto lists a terminated job as RUNNING until its thread notices (up to 0.5 s): skip those
            running = [j for j in batch.list_jobs(jobQueue=aws["job_queue"], jobStatus="RUNNING")["jobSummaryList"]
                       if j["jobId"] not in {job for job, _ in reclaimed}]
            step = steps(s3, bucket, prefix)
            if running and step > last:
                batch.terminate_job(jobId=running[0]["jobId"], reason=RECLAIM)
                reclaimed.append((running[0]["jobId"], step))
                last = step
            time.sleep(0.3)

    thread = threading.Thread(target=reclaimer, daemon=True)
    thread.start()
    try:
        proc = run_cli("submit", str(spec), "--backend", "aws", "--interval", "1", home=tmp_path,
                       moto_server=moto_server)
    finally:
        stop.set()
        thread.join()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(reclaimed) == 2, reclaimed
    status = status_json(proc.stdout.split()[1], tmp_path)
    preempted = [a for a in status["attempt_list"] if a["state"] == "PREEMPTED"]
    assert len(preempted) == 2 and all("Host EC2" in a["reason"] for a in preempted), status["attempt_list"]
    assert all(a["backend"] == "aws" and a["backend_id"].startswith("us-east-1/") for a in status["attempt_list"])
    assert status["weights_sha256"] == reference
    assert "final weights sha256 " + reference in proc.stdout
    logs = run_cli("logs", proc.stdout.split()[1], home=tmp_path, moto_server=moto_server)
    assert logs.returncode == 0 and logs.stdout.strip(), logs.stderr


def test_started_locally_finished_on_aws_batch(tmp_path, moto_server, aws, bucket, reference):
    """Local engine with s3:// checkpoints, cancelled mid-way; AWS Batch resumes from the same URI."""
    prefix = f"jobs/{uuid.uuid4().hex[:8]}"
    spec = write_spec(tmp_path / "cross.yaml", moto_server, aws, f"s3://{bucket}/{prefix}", "local")
    s3 = boto_client(moto_server, "s3")
    local = run_cli("submit", str(spec), "--detach", "--interval", "0.5", home=tmp_path, moto_server=moto_server)
    assert local.returncode == 0, local.stdout + local.stderr
    local_id = local.stdout.split()[1]
    deadline = time.monotonic() + 180
    while steps(s3, bucket, prefix) < 60:
        assert time.monotonic() < deadline, "the local attempt wrote no checkpoint to S3"
        time.sleep(0.5)
    assert run_cli("cancel", local_id, home=tmp_path, moto_server=moto_server).returncode == 0
    resumed_from = steps(s3, bucket, prefix)
    progress = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/progress.json")["Body"].read())
    assert progress["step"] < 1000, progress  # the local run did not finish
    proc = run_cli("submit", str(spec), "--backend", "aws", "--interval", "1", home=tmp_path,
                   moto_server=moto_server)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = status_json(proc.stdout.split()[1], tmp_path)
    assert [a["backend"] for a in status["attempt_list"]] == ["aws"]
    assert status["weights_sha256"] == reference, (resumed_from, status)
    assert status_json(local_id, tmp_path)["state"] == "CANCELLED"


def test_halt_and_resume_on_aws_batch(tmp_path, moto_server, aws, bucket, reference):
    """`runner halt` reaches an AWS Batch attempt through the HALT object in S3; it commits and exits 76
    (which Batch does not retry in place); the job is PAUSED with nothing running; `runner resume`
    starts the next Batch job from the checkpoint and the final weights are the uninterrupted run's."""
    prefix = f"jobs/{uuid.uuid4().hex[:8]}"
    spec = write_spec(tmp_path / "halt.yaml", moto_server, aws, f"s3://{bucket}/{prefix}", "aws")
    batch, s3 = boto_client(moto_server, "batch"), boto_client(moto_server, "s3")
    started = run_cli("submit", str(spec), "--detach", "--interval", "1", home=tmp_path, moto_server=moto_server)
    assert started.returncode == 0, started.stdout + started.stderr
    job_id = started.stdout.split()[1]
    deadline = time.monotonic() + 240
    while steps(s3, bucket, prefix) < 40:
        assert time.monotonic() < deadline, "the Batch attempt wrote no checkpoint"
        time.sleep(0.5)
    halted = run_cli("halt", job_id, home=tmp_path, moto_server=moto_server, timeout=300)
    assert halted.returncode == 0, halted.stdout + halted.stderr
    status = status_json(job_id, tmp_path)
    assert status["state"] == "PAUSED", status
    [attempt] = status["attempt_list"]
    batch_id = attempt["backend_id"].split("/", 1)[1]
    [described] = batch.describe_jobs(jobs=[batch_id])["jobs"]
    # moto's describe_jobs drops the exit code (76): the HALTED comes from the store's progress.json.
    assert attempt["state"] == "HALTED" and "halted by the user" in attempt["reason"], (attempt, described)
    assert (status["preemptions"], status["failures"]) == (0, 0)
    assert described["status"] in ("FAILED", "SUCCEEDED") and len(described.get("attempts") or [1]) == 1
    assert not batch.list_jobs(jobQueue=aws["job_queue"], jobStatus="RUNNING")["jobSummaryList"]
    assert run_cli("watch", "--once", home=tmp_path, moto_server=moto_server).returncode == 0
    assert status_json(job_id, tmp_path)["state"] == "PAUSED"
    resumed = run_cli("resume", job_id, "--interval", "1", home=tmp_path, moto_server=moto_server, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    final = status_json(job_id, tmp_path)
    assert [a["state"] for a in final["attempt_list"]] == ["HALTED", "SUCCEEDED"]
    assert final["weights_sha256"] == reference


def test_a_deadline_moves_the_job_to_the_on_demand_queue_runner_init_made(tmp_path, moto_server, bucket, reference):
    """Spot capacity that keeps being reclaimed (every spot job is terminated the AWS way as soon as it runs)
    eats the job's slack; its capacity policy moves it to the on-demand queue `runner init aws` created beside
    the spot one, where it finishes in time with the uninterrupted run's weights."""
    settings = aws_settings(moto_server)  # runs ensure_batch: the spot queue and its -ondemand sibling
    on_demand_queue = f"{settings['job_queue']}-ondemand"
    batch = boto_client(moto_server, "batch")
    assert batch.describe_job_queues(jobQueues=[on_demand_queue])["jobQueues"], "runner init made no on-demand queue"
    prefix = f"jobs/{uuid.uuid4().hex[:8]}"
    spec = write_spec(tmp_path / "deadline.yaml", moto_server, settings, f"s3://{bucket}/{prefix}", "aws")
    reclaimed: list[str] = []
    stop = threading.Event()

    def reclaimer() -> None:  # no spot machine lasts: each is taken away once it runs
        while not stop.is_set():
            for job in batch.list_jobs(jobQueue=settings["job_queue"], jobStatus="RUNNING")["jobSummaryList"]:
                if job["jobId"] not in reclaimed:
                    batch.terminate_job(jobId=job["jobId"], reason=RECLAIM)
                    reclaimed.append(job["jobId"])
            time.sleep(0.3)

    thread = threading.Thread(target=reclaimer, daemon=True)
    thread.start()
    try:
        # work: the job's compute time, until its progress says (the reclaims leave it none to measure);
        # the deadline leaves spot safe for the first few reclaims only.
        proc = run_cli("submit", str(spec), "--set", "work=60s", "--set", "deadline=215s", "--set", "policy=greedy",
                       "--interval", "1", home=tmp_path, moto_server=moto_server, timeout=900)
    finally:
        stop.set()
        thread.join()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = status_json(proc.stdout.split()[1], tmp_path)
    attempts = status["attempt_list"]
    assert [a["capacity"] for a in attempts][-1] == "on-demand", attempts
    assert any(a["capacity"] == "spot" and a["state"] == "PREEMPTED" for a in attempts), attempts
    last = attempts[-1]["backend_id"].split("/", 1)[1]
    [described] = batch.describe_jobs(jobs=[last])["jobs"]
    assert described["jobQueue"].endswith(f"/{on_demand_queue}"), described["jobQueue"]
    assert status["weights_sha256"] == reference
    assert attempts[-1]["ended_at"] - attempts[0]["submitted_at"] < 360
