"""Each backend as the tests in tests/backends see it: a service to point the real SDK at, and a way to count.

A :class:`Cloud` says, for one backend (``local``, ``aws`` via moto, ``gcp`` and ``azure`` via
their stand-ins):

- how a job spec reaches it (its spec section) and which environment points the SDK at a URL
  (the service itself, or a :class:`tests.faults.proxy.FaultProxy` in front of it);
- which HTTP requests are the submit, the poll and the stop, for ``fault_match``/``delay_match``;
- what the service holds, asked directly (never through the proxy): how many jobs, tasks or
  containers were created for an attempt key, and which of them still run.

The local backend talks to the engine through ``DOCKER_HOST=tcp://...``: :class:`UnixBridge`
carries TCP to the engine's Unix socket, so a FaultProxy can sit in front of the engine too.
"""

from __future__ import annotations

import re
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.conftest import runner_env

Match = Callable[[str, str], bool]
TINY = "print('hello from a tiny job', flush=True)"
#: A task that ends at once on SIGTERM (a container's PID 1 ignores SIGTERM unless it says otherwise).
SLEEPER = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(143)); "
           "print('sleeping', flush=True); time.sleep(600)")


class UnixBridge:
    """A TCP port on 127.0.0.1 that carries every connection to a Unix socket (the engine's)."""

    def __init__(self, path: str = "/var/run/docker.sock") -> None:
        self.path = path
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, name="unix-bridge", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.socket(socket.AF_UNIX)
                upstream.connect(self.path)
            except OSError:
                conn.close()
                continue
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self.sock.close()


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


@dataclass
class Cloud:
    """One backend under test; see the module's docstring."""

    name: str
    upstream: str                                   # the service's own URL
    image: str
    section: Callable[[str], dict[str, Any]]        # endpoint -> the spec's <name>: section (may be {})
    sdk_env: Callable[[str], dict[str, str]]        # endpoint -> environment that points the SDK there
    submit_match: Match
    poll_match: Match
    stop_match: Match
    count: Callable[[str], int]                     # attempt key -> jobs/tasks/containers created for it
    running: Callable[[list[str]], list[str]]       # attempt keys -> what still runs for them
    checkpoint_uri: str = ""
    base_env: dict[str, str] = field(default_factory=dict)
    requests_per_call: int = 1                      # HTTP requests one SDK call makes when each answers 503

    def spec(self, name: str, code: str, endpoint: str | None = None, **extra: Any) -> dict[str, Any]:
        """A job spec that runs ``python -c code`` here."""
        spec: dict[str, Any] = {
            "name": name, "image": self.image, "command": ["python3", "-c", code], "backend": self.name,
            "resources": {"cpus": 0.5, "memory": "256Mi"}, **extra}
        section = self.section(endpoint or self.upstream)
        if section:
            spec[self.name] = section
        if self.checkpoint_uri:
            spec.setdefault("checkpoint", {"uri": f"{self.checkpoint_uri}/{name}-{uuid.uuid4().hex[:6]}"})
        return spec

    def env(self, home: Path, endpoint: str | None = None, **extra: str) -> dict[str, str]:
        """The environment of a `runner` process whose SDK talks to ``endpoint`` (default: the service)."""
        return {**runner_env(home), **self.base_env, **self.sdk_env(endpoint or self.upstream), **extra}


def path_of(path: str) -> str:
    """The path without its query string."""
    return path.split("?", 1)[0]


# ---------------------------------------------------------------------------- local (the Docker engine)


def local_cloud(docker_client: Any, bridge: UnixBridge, image: str, labels: dict[str, str]) -> Cloud:
    from runner.backends.local import LABEL_KEY, LABEL_MANAGED

    def count(key: str) -> int:
        return len(docker_client.containers.list(all=True, filters={"label": [f"{LABEL_MANAGED}=1",
                                                                              f"{LABEL_KEY}={key}"]}))

    def running(keys: list[str]) -> list[str]:
        found = docker_client.containers.list(filters={"label": f"{LABEL_MANAGED}=1", "status": "running"})
        return [c.name for c in found if c.labels.get(LABEL_KEY) in keys]

    return Cloud(
        name="local", upstream=bridge.url, image=image, section=lambda _url: {},
        sdk_env=lambda url: {"DOCKER_HOST": "tcp://" + url.split("://", 1)[1]},
        submit_match=lambda m, p: m == "POST" and path_of(p).endswith("/containers/create"),
        poll_match=lambda m, p: m == "GET",  # containers/json, inspect, info
        stop_match=lambda m, p: m == "POST" and path_of(p).endswith("/stop"),
        count=count, running=running, requests_per_call=1)


# ---------------------------------------------------------------------------- aws (moto)


def aws_cloud(moto: Any, settings: dict[str, Any], image: str) -> Cloud:
    from runner.backends.aws_setup import job_name
    from tests.integration.test_aws_batch import boto_client

    batch = boto_client(moto, "batch")

    def jobs(key: str) -> list[dict[str, Any]]:
        name = job_name(key)
        answer = batch.list_jobs(jobQueue=settings["job_queue"], filters=[{"name": "JOB_NAME", "values": [name]}])
        return [j for j in answer.get("jobSummaryList", []) if j.get("jobName") == name]

    def running(keys: list[str]) -> list[str]:
        return [f"{key}: {j['jobId']} {j['status']}" for key in keys for j in jobs(key)
                if j.get("status") not in ("SUCCEEDED", "FAILED")]

    return Cloud(
        name="aws", upstream=moto.url, image=image, section=lambda _url: dict(settings),
        # Batch calls go to the endpoint given; S3 (checkpoints) and the rest straight to moto.
        sdk_env=lambda url: {**moto.env, "AWS_ENDPOINT_URL_BATCH": url},
        submit_match=lambda m, p: m == "POST" and path_of(p) == "/v1/submitjob",
        poll_match=lambda m, p: m == "POST" and path_of(p) in ("/v1/describejobs", "/v1/listjobs"),
        stop_match=lambda m, p: m == "POST" and path_of(p) in ("/v1/terminatejob", "/v1/canceljob"),
        count=lambda key: len(jobs(key)), running=running, checkpoint_uri="s3://spot-runner-backends",
        requests_per_call=3)  # botocore's standard mode: the call and 2 retries (measured)


# ---------------------------------------------------------------------------- gcp (the stand-in)


def gcp_cloud(standin: Any, image: str) -> Cloud:
    from runner.backends.gcp_setup import LABEL_KEY, label_value

    def jobs(key: str) -> list[Any]:
        with standin.lock:
            return [j for j in standin.jobs.values()
                    if (j.body.get("labels") or {}).get(LABEL_KEY) == label_value(key)]

    def running(keys: list[str]) -> list[str]:
        return [f"{j.name} {j.state}" for key in keys for j in jobs(key)
                if j.state not in ("SUCCEEDED", "FAILED", "CANCELLED")
                or any(t.container is not None for t in j.tasks)]

    return Cloud(
        name="gcp", upstream=standin.url, image=image,
        section=lambda _url: {"project": "test-project", "region": "us-central1"},
        sdk_env=lambda url: {"RUNNER_GCP_BATCH_ENDPOINT": url},
        submit_match=lambda m, p: m == "POST" and path_of(p).endswith("/jobs"),
        poll_match=lambda m, p: m == "GET",  # get_job, list_tasks, list_jobs (find)
        stop_match=lambda m, p: (m == "POST" and path_of(p).endswith(":cancel")) or m == "DELETE",
        count=lambda key: len(jobs(key)), running=running, checkpoint_uri="gs://spot-runner-backends")


# ---------------------------------------------------------------------------- azure (the stand-in)


AZURE_BATCH_ENV = {"AZURE_BATCH_ACCOUNT": "standin", "AZURE_BATCH_KEY": "c3RhbmQtaW4ta2V5"}
_AZ_TASKS = re.compile(r"^/jobs/([^/]+)/tasks$")


def azure_cloud(standin: Any, pool: str, image: str) -> Cloud:
    from runner.backends.azure_setup import azure_id

    def tasks(key: str) -> list[tuple[str, dict[str, Any]]]:
        task_id = azure_id(key)
        with standin.lock:
            return [(job, t) for job, found in standin.tasks.items() for tid, t in found.items() if tid == task_id]

    def running(keys: list[str]) -> list[str]:
        live = set(standin.running_containers())
        out = [f"{job}/{t['id']} {t['state']}" for key in keys for job, t in tasks(key) if t["state"] != "completed"]
        with standin.lock:
            containers = {k: v for k, v in standin.containers.items() if k[1] in {azure_id(x) for x in keys}}
        for (job, task_id), container_id in containers.items():
            try:
                name = standin.docker.api.inspect_container(container_id)["Name"].lstrip("/")
            except Exception:  # noqa: BLE001 - removed: not running
                continue
            if name in live:
                out.append(f"container {name} of {job}/{task_id}")
        return out

    return Cloud(
        name="azure", upstream=standin.url, image=image,
        section=lambda url: {"account_url": url, "pool_id": pool, "low_priority_nodes": 1},
        sdk_env=lambda _url: dict(AZURE_BATCH_ENV),
        submit_match=lambda m, p: m == "POST" and bool(_AZ_TASKS.match(path_of(p))),
        poll_match=lambda m, p: m == "GET",  # list_tasks, list_nodes, get_task (find), get_pool
        stop_match=lambda m, p: m == "POST" and path_of(p).endswith("/terminate"),
        count=lambda key: len(tasks(key)), running=running, checkpoint_uri="az://spot-runner-backends",
        requests_per_call=3)  # azure-core's retry policy, retry_total 2 (runner/backends/azure_setup.py)


def settle(cloud: Cloud, keys: list[str], timeout: float = 60, every: float = 0.5) -> list[str]:
    """Wait until nothing of ``keys`` runs on ``cloud``; return what still runs at the end."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        left = cloud.running(keys)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(every)


def engine_running(docker_client: Any, job_ids: list[str]) -> list[str]:
    """Containers running on this engine for any of ``job_ids`` (by RUNNER_JOB_ID), whoever started them.

    Every backend here runs attempts as containers on the local engine (moto and the stand-ins
    too), with the contract's environment: this asks the engine itself, not the service.
    """
    from runner.contract import JOB_ID

    wanted = {f"{JOB_ID}={job_id}" for job_id in job_ids}
    found = []
    for container in docker_client.containers.list(filters={"status": "running"}):
        try:
            env = set(container.attrs.get("Config", {}).get("Env") or [])
        except Exception:  # noqa: BLE001 - gone meanwhile
            continue
        if env & wanted:
            found.append(container.name)
    return found
