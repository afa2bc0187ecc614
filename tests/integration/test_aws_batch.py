"""AWS Batch backend against moto_server: real HTTP, real containers on the local engine.

moto runs each Batch job as a container; ``terminate_job(reason="Host EC2 ...")`` kills it the way
a spot reclaim ends a Batch job, which is what the classifier must recognise.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from runner.backends.aws_batch import AwsBatchBackend, parse_id
from runner.backends.base import Submission
from runner.spec import spec_from_dict
from runner.states import AttemptState

pytestmark = [pytest.mark.docker]

BASE_IMAGE = "localhost/py311-base:bookworm"
TINY_IMAGE = "localhost/spot-runner-aws-tiny:test"
REGION = "us-east-1"


# ---------------------------------------------------------------------------- shared setup


def boto_client(emu: Any, service: str) -> Any:
    import boto3

    return boto3.client(service, region_name=REGION, endpoint_url=emu.url, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def prerequisites(emu: Any) -> dict[str, Any]:
    """Create in moto what a spot compute environment needs: roles, instance profile, subnet, group."""
    iam, ec2 = boto_client(emu, "iam"), boto_client(emu, "ec2")
    tag = uuid.uuid4().hex[:8]
    trust = '{"Version":"2012-10-17","Statement":[]}'
    service_role = iam.create_role(RoleName=f"batch-service-{tag}", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    iam.create_role(RoleName=f"ecs-instance-{tag}", AssumeRolePolicyDocument=trust)
    profile = iam.create_instance_profile(InstanceProfileName=f"ecs-instance-{tag}")["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName=f"ecs-instance-{tag}", RoleName=f"ecs-instance-{tag}")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=f"batch-{tag}", Description="batch", VpcId=vpc)["GroupId"]
    return {"region": REGION, "service_role": service_role, "instance_role": profile, "subnets": [subnet],
            "security_group_ids": [group], "instance_types": ["m5.large"], "max_vcpus": 16}


def aws_settings(emu: Any, queue: str | None = None) -> dict[str, Any]:
    """Create a spot compute environment and queue with `init`; return the spec's aws: section."""
    settings = {**prerequisites(emu), "job_queue": queue or f"q-{uuid.uuid4().hex[:8]}"}
    spec = spec_from_dict({"name": "setup", "image": BASE_IMAGE, "backend": "aws", "aws": settings})
    from runner.backends.aws_setup import ensure_batch

    ensure_batch(boto_client(emu, "batch"), spec, lambda line: None)
    return settings


@pytest.fixture(scope="module")
def aws(moto_server: Any, docker_client: Any) -> dict[str, Any]:
    return aws_settings(moto_server)


@pytest.fixture
def backend(moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsBatchBackend]:
    for key, value in moto_server.env.items():
        monkeypatch.setenv(key, value)
    b = AwsBatchBackend()
    yield b
    b.close()


def spec(aws_section: dict[str, Any], command: list[str], **extra: Any) -> Any:
    return spec_from_dict({"name": "aws-test", "image": BASE_IMAGE, "command": command, "backend": "aws",
                           "resources": {"cpus": 1, "memory": "256Mi"}, "aws": aws_section,
                           "checkpoint": {"uri": "s3://bucket/aws-test"}, **extra})


def submission(s: Any, key: str | None = None, index: int = 0, attempt: int = 1) -> Submission:
    key = key or f"job{uuid.uuid4().hex[:6]}-{index}-{attempt}"
    uri = s.checkpoint_uri_for(index, "job1")
    return Submission(spec=s, job_id="job1", key=key, attempt=attempt, array_index=index, checkpoint_uri=uri,
                      env=s.container_env("job1", attempt, uri))


def wait_state(b: AwsBatchBackend, backend_id: str, states: set[AttemptState], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status = b.poll([backend_id])[backend_id]
        if status.state in states:
            return status
        assert time.monotonic() < deadline, f"{backend_id} stuck in {status}"
        time.sleep(0.5)


# ---------------------------------------------------------------------------- tests


def test_submit_poll_logs_find(backend, aws):
    s = spec(aws, ["python3", "-c", "print('hello from batch')"])
    sub = submission(s)
    backend_id = backend.submit(sub)
    assert parse_id(backend_id)[0] == REGION
    status = wait_state(backend, backend_id, {AttemptState.SUCCEEDED, AttemptState.FAILED})
    assert status.state == AttemptState.SUCCEEDED, status
    assert status.started_at and status.ended_at
    assert backend.find(sub) == backend_id
    assert backend.find(dataclasses.replace(sub, key="never-submitted-1-1")) is None
    assert any("hello from batch" in line for line in backend.logs(backend_id))
    # the same spec reuses its job definition: one revision
    again = backend.submit(submission(s))
    defs = backend.client().describe_jobs(jobs=[parse_id(again)[1], parse_id(backend_id)[1]])["jobs"]
    assert len({d["jobDefinition"] for d in defs}) == 1


def test_failure_keeps_exit_code(backend, aws):
    backend_id = backend.submit(submission(spec(aws, ["python3", "-c", "raise SystemExit(3)"])))
    status = wait_state(backend, backend_id, {AttemptState.SUCCEEDED, AttemptState.FAILED})
    # moto's describe_jobs drops container.exitCode (its list_jobs keeps it); real AWS reports it
    assert status.state == AttemptState.FAILED and status.exit_code in (3, None), status


def test_spot_reclaim_is_preempted_and_cancel_is_cancelled(backend, aws):
    s = spec(aws, ["python3", "-c", "import time; time.sleep(60)"])
    reclaimed, cancelled = backend.submit(submission(s)), backend.submit(submission(s))
    for backend_id in (reclaimed, cancelled):
        wait_state(backend, backend_id, {AttemptState.RUNNING})
    backend.client().terminate_job(jobId=parse_id(reclaimed)[1], reason="Host EC2 (instance i-0123) terminated.")
    backend.cancel(cancelled)
    backend.cancel(cancelled)  # idempotent
    status = wait_state(backend, reclaimed, {AttemptState.PREEMPTED, AttemptState.FAILED})
    assert status.state == AttemptState.PREEMPTED and "Host EC2" in status.reason, status
    status = wait_state(backend, cancelled, {AttemptState.CANCELLED, AttemptState.FAILED})
    assert status.state == AttemptState.CANCELLED, status


class FlakyProxy:
    """A TCP proxy to moto that can play an unreachable service (connections reset)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.down = False
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.down:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_unreachable_service_is_unknown_and_the_watcher_catches_up(moto_server, aws, tmp_path, monkeypatch):
    from runner.ledger import Ledger
    from runner.watcher import Watcher

    for key, value in moto_server.env.items():
        monkeypatch.setenv(key, value)
    proxy = FlakyProxy(moto_server.port)
    from botocore.config import Config

    b = AwsBatchBackend(endpoint_url=proxy.url, config=Config(retries={"mode": "standard", "max_attempts": 1},
                                                               connect_timeout=2, read_timeout=5))
    s = spec(aws, ["python3", "-c", "import time; time.sleep(6)"])
    events: list[str] = []
    with Ledger(tmp_path / "ledger.db") as ledger:
        job_id = ledger.create_job(s)
        watcher = Watcher(ledger, [job_id], on_event=lambda e: events.append(e.text), backend_factory=lambda n: b)
        watcher.tick()
        assert len(ledger.attempts(job_id)) == 1
        proxy.down = True
        for _ in range(4):
            watcher.tick()
            time.sleep(2.5)  # the job ends while the service is unreachable
        [attempt] = ledger.attempts(job_id)
        assert attempt.state == AttemptState.UNKNOWN, attempt
        assert sum("state unknown" in t for t in events) == 1, events
        proxy.down = False
        deadline = time.monotonic() + 180  # bounded: a job that never ends fails here, never hangs the suite
        watcher.run(interval=0.5, should_stop=lambda: time.monotonic() > deadline)
        assert ledger.get_job(job_id).state.value == "SUCCEEDED"
        assert [a.state for a in ledger.attempts(job_id)] == [AttemptState.SUCCEEDED]


def test_init_is_idempotent(moto_server, docker_client):
    settings = {**prerequisites(moto_server), "job_queue": f"q-{uuid.uuid4().hex[:8]}"}
    s = spec_from_dict({"name": "setup", "image": BASE_IMAGE, "backend": "aws", "aws": settings})
    from runner.backends.aws_setup import ensure_batch

    batch = boto_client(moto_server, "batch")
    first: list[str] = []
    arns = ensure_batch(batch, s, first.append)
    # the spot compute environment and its queue, then the on-demand ones beside them
    assert [line.split()[0] for line in first] == ["created"] * 4, first
    assert "EC2, BEST_FIT_PROGRESSIVE" in first[2] and first[3].startswith(f"created job queue {settings['job_queue']}-ondemand")
    second: list[str] = []
    assert ensure_batch(batch, s, second.append) == arns
    assert [line.split()[0] for line in second] == ["found"] * 4, second
    ce = batch.describe_compute_environments(computeEnvironments=[arns["compute_environment"]])
    resources = ce["computeEnvironments"][0]["computeResources"]
    assert resources["type"] == "SPOT" and resources["allocationStrategy"] == "SPOT_PRICE_CAPACITY_OPTIMIZED"
    assert resources["minvCpus"] == 0 and resources["maxvCpus"] == 16
    od = batch.describe_compute_environments(computeEnvironments=[arns["on_demand_compute_environment"]])
    assert od["computeEnvironments"][0]["computeResources"]["type"] == "EC2"
    bigger = s.model_copy(update={"aws": s.section("aws").model_copy(update={"max_vcpus": 32})})
    third: list[str] = []
    ensure_batch(batch, bigger, third.append)
    assert third[0].startswith("updated compute environment") and "16 -> 32" in third[0], third


def test_init_cli_takes_flags(moto_server, tmp_path):
    """`runner init aws --set ...`: settings from flags override the spec's, and it says what it made."""
    import subprocess
    import sys

    import yaml

    settings = prerequisites(moto_server)
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({"name": "flags", "image": BASE_IMAGE, "backend": "aws",
                                    "aws": {k: v for k, v in settings.items() if k != "max_vcpus"}}))
    queue = f"q-{uuid.uuid4().hex[:8]}"
    proc = subprocess.run([sys.executable, "-m", "runner.cli", "init", "aws", "--spec", str(spec),
                           "--set", f"aws.job_queue={queue}", "--set", "aws.max_vcpus=48"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **moto_server.env, "RUNNER_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "created" in proc.stdout and queue in proc.stdout, proc.stdout
    batch = boto_client(moto_server, "batch")
    [q] = batch.describe_job_queues(jobQueues=[queue])["jobQueues"]
    ce = q["computeEnvironmentOrder"][0]["computeEnvironment"]
    [env] = batch.describe_compute_environments(computeEnvironments=[ce])["computeEnvironments"]
    assert env["computeResources"]["maxvCpus"] == 48


@pytest.fixture
def tiny_image(docker_client: Any) -> Iterator[str]:
    """An image whose container exits 0 at once; moto's exited containers are removed afterwards."""
    dockerfile = f"FROM {BASE_IMAGE}\nCMD [\"python3\", \"-c\", \"exit(0)\"]\n"
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=TINY_IMAGE, pull=False, rm=True)
    yield TINY_IMAGE
    for container in docker_client.containers.list(all=True, filters={"ancestor": TINY_IMAGE}):
        container.remove(force=True)


# The 1,000 children; moto starts them all at once as real containers (see tests/moto_launcher.py).
ARRAY_SIZE = int(os.environ.get("RUNNER_TEST_ARRAY_SIZE", "1000"))
ARRAY_DEADLINE_S = 900


def test_array_job_calls_per_poll(backend, aws, tiny_image, capsys):
    image = tiny_image
    s = spec_from_dict({"name": "aws-array", "image": image, "backend": "aws", "array": ARRAY_SIZE,
                        "resources": {"cpus": 1, "memory": "64Mi"}, "aws": aws,
                        "checkpoint": {"uri": "s3://bucket/aws-array"}})
    subs = [submission(s, key=f"arr-{i}-1", index=i) for i in range(ARRAY_SIZE)]
    ids = backend.submit_many(subs)
    assert ids[7] == f"{ids[0].rsplit(':', 1)[0]}:7"
    calls: Counter[str] = Counter()
    backend.client().meta.events.register("before-call.batch.*",
                                          lambda event_name, **kw: calls.update([event_name.split(".")[-1]]))
    open_ids, per_cycle, started = list(ids), [], time.monotonic()
    listing_checked = False
    while open_ids:
        if not listing_checked and len(open_ids) < ARRAY_SIZE:  # some done, some not: compare both plans
            listed, described = AwsBatchBackend(region=REGION), AwsBatchBackend(region=REGION)
            listed._lists = lambda parent, count: True  # type: ignore[method-assign]
            described._lists = lambda parent, count: False  # type: ignore[method-assign]
            by_list, by_describe = listed.poll(ids), described.poll(ids)
            moved = [i for i in ids if by_list[i].state != by_describe[i].state]
            assert len(moved) <= ARRAY_SIZE // 10, moved  # only children that moved between the two polls
            assert any(v.state == AttemptState.SUCCEEDED for v in by_list.values())
            listing_checked = True
        assert time.monotonic() - started < ARRAY_DEADLINE_S, f"{len(open_ids)} children still open"
        before = sum(calls.values())
        statuses = backend.poll(open_ids)
        per_cycle.append((len(open_ids), sum(calls.values()) - before))
        failed = {i: statuses[i] for i in open_ids if statuses[i].state == AttemptState.FAILED}
        assert not failed, failed
        open_ids = [i for i in open_ids if not statuses[i].is_terminal()]
        time.sleep(2)
    elapsed = time.monotonic() - started
    worst = max(c / max(1, n / 100) for n, c in per_cycle)
    with capsys.disabled():
        print(f"\n[aws array] {ARRAY_SIZE} children done in {elapsed:.0f} s, {len(per_cycle)} poll cycles; "
              f"calls per cycle (open children, calls): {per_cycle[:3]} ... {per_cycle[-3:]}; "
              f"worst {worst:.2f} calls per 100 open children; by operation {dict(calls)}")
    assert all(c <= math.ceil(n / 100) for n, c in per_cycle), per_cycle
    assert max(c for _, c in per_cycle) <= ARRAY_SIZE / 100, per_cycle
