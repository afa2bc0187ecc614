"""A stand-in for Google Cloud Batch: the REST subset the gcp backend uses, tasks as local containers.

GCP Batch has no emulator, so tests run the real ``google-cloud-batch`` client (REST transport,
anonymous credentials) against this threaded ``http.server``:

    POST   /v1/projects/P/locations/L/jobs?jobId=J          create (409 ALREADY_EXISTS when taken)
    GET    /v1/projects/P/locations/L/jobs?filter=...        list; filter: labels.K="V" [AND ...]
    GET    /v1/projects/P/locations/L/jobs/J                 get
    GET    /v1/projects/P/locations/L/jobs/J/taskGroups/G/tasks   list tasks
    POST   /v1/projects/P/locations/L/jobs/J:cancel          cancel (a long-running operation)
    DELETE /v1/projects/P/locations/L/jobs/J                 delete (a long-running operation)

Bodies are JSON with enums as integers (``$alt=json;enum-encoding=int``, what the client sends);
names are also accepted. Each task runs as a container on the local engine (image, entrypoint,
commands, env, volumes; ``host.docker.internal`` maps to the host), sees ``BATCH_TASK_INDEX``,
``BATCH_TASK_COUNT`` and ``BATCH_TASK_RETRY_ATTEMPT``, and goes PENDING -> ASSIGNED -> RUNNING ->
SUCCEEDED | FAILED with status events worded like the service's.

Retries follow the task spec: a lifecycle policy RETRY_TASK retries only its exit codes, FAIL_TASK
retries every code but its own, no policy retries every failure; all share ``maxRetryCount``.
A retried task goes FAILED -> PENDING and runs again inside the same job, which stays RUNNING.

Test-only controls (not part of the GCP API):

    POST /_standin/preempt?job=NAME[&task=I]   SIGKILL the task's container and report what GCP
                                               reports for a spot preemption: exit 50001 and the
                                               event "... due to Spot Preemption with exit code 50001."
    GET  /_standin/logs?job=NAME               the task containers' output, for debugging

:meth:`GcpBatchStandIn.pause` closes the port while keeping every job running (the service is
unreachable for a while); :meth:`resume` opens it again on the same port.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

# Enum values of google.cloud.batch_v1 (checked against the SDK in tests/unit/test_gcp_golden.py).
JOB_STATES = {"STATE_UNSPECIFIED": 0, "QUEUED": 1, "SCHEDULED": 2, "RUNNING": 3, "SUCCEEDED": 4, "FAILED": 5,
              "DELETION_IN_PROGRESS": 6, "CANCELLATION_IN_PROGRESS": 7, "CANCELLED": 8}
TASK_STATES = {"STATE_UNSPECIFIED": 0, "PENDING": 1, "ASSIGNED": 2, "RUNNING": 3, "FAILED": 4, "SUCCEEDED": 5,
               "UNEXECUTED": 6}
ACTIONS = {"ACTION_UNSPECIFIED": 0, "RETRY_TASK": 1, "FAIL_TASK": 2}
EXIT_SPOT_PREEMPTION = 50001
ZONE = "us-central1-a"
_JOB_PATH = re.compile(r"^/v1/(?P<parent>projects/[^/]+/locations/[^/]+)/jobs/(?P<job>[^/:]+)"
                       r"(?P<rest>/taskGroups/[^/]+/tasks|:cancel)?$")
_JOBS_PATH = re.compile(r"^/v1/(?P<parent>projects/[^/]+/locations/[^/]+)/jobs$")
_JOB_ID = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_FILTER_TERM = re.compile(r'labels\.(?:"([^"]+)"|([A-Za-z0-9_-]+))\s*=\s*"?([^"\s]*)"?')


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _enum(value: Any, table: dict[str, int]) -> int:
    return table.get(value, 0) if isinstance(value, str) else int(value or 0)


@dataclass
class Task:
    index: int
    state: str = "PENDING"
    events: list[dict[str, Any]] = field(default_factory=list)
    failures: int = 0
    container: Any = None
    instance: str = ""
    preempting: bool = False
    output: list[str] = field(default_factory=list)


@dataclass
class Job:
    name: str
    body: dict[str, Any]
    uid: str
    state: str = "QUEUED"
    events: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    created: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)
    cancelling: bool = False
    deleted: bool = False


class GcpBatchStandIn:
    """The service: jobs in memory, tasks as containers, an HTTP front that can be paused."""

    def __init__(self, docker_client: Any, host: str = "127.0.0.1", port: int = 0,
                 container_labels: dict[str, str] | None = None, queue_delay: float = 0.3) -> None:
        self.docker = docker_client
        self.host, self.port = host, port
        self.container_labels = dict(container_labels or {})
        self.queue_delay = queue_delay
        self.jobs: dict[str, Job] = {}
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str]] = []  # (method, path) of every API call, for tests
        self._server: ThreadingHTTPServer | None = None
        self.down = False  # while paused, open keep-alive connections are dropped too
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> GcpBatchStandIn:
        self.resume()
        return self

    def resume(self) -> None:
        """Open the HTTP port (the same one after a pause)."""
        self.down = False
        handler = type("Handler", (_Handler,), {"standin": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="gcp-batch-standin", daemon=True).start()

    def pause(self) -> None:
        """Close the HTTP port and drop open connections; jobs keep running."""
        self.down = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def stop(self) -> None:
        """Close the port and remove every task container."""
        self.pause()
        with self.lock:
            for job in self.jobs.values():
                job.cancelling = True
                for task in job.tasks:
                    self._remove(task)

    # ------------------------------------------------------------------ the API

    def create(self, parent: str, job_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not _JOB_ID.match(job_id or ""):
            return 400, _error(400, "INVALID_ARGUMENT", f"job_id {job_id!r} must match {_JOB_ID.pattern}")
        groups = body.get("taskGroups") or []
        if len(groups) != 1:
            return 400, _error(400, "INVALID_ARGUMENT", "exactly one task group is supported")
        spec = groups[0].get("taskSpec") or {}
        if len(spec.get("lifecyclePolicies") or []) > 1:
            return 400, _error(400, "INVALID_ARGUMENT", "only one lifecycle policy is supported")
        if not 0 <= int(spec.get("maxRetryCount") or 0) <= 10:
            return 400, _error(400, "INVALID_ARGUMENT", "max_retry_count must be in 0..10")
        name = f"{parent}/jobs/{job_id}"
        with self.lock:
            if name in self.jobs and not self.jobs[name].deleted:
                return 409, _error(409, "ALREADY_EXISTS", f"Job {name} already exists")
            count = int(groups[0].get("taskCount") or 1)
            groups[0].setdefault("name", f"{name}/taskGroups/group0")
            job = Job(name=name, body=body, uid=f"{job_id[:40]}-{uuid.uuid4().hex[:8]}",
                      tasks=[Task(i) for i in range(count)])
            self.jobs[name] = job
        thread = threading.Thread(target=self._run_job, args=(job,), name=f"job-{job_id}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return 200, self.job_json(job)

    def job_json(self, job: Job) -> dict[str, Any]:
        with self.lock:
            counts: dict[str, str] = {}
            for task in job.tasks:
                counts[task.state] = str(int(counts.get(task.state, "0")) + 1)
            return {**job.body, "name": job.name, "uid": job.uid, "createTime": job.created,
                    "updateTime": job.updated,
                    "status": {"state": JOB_STATES[job.state], "statusEvents": list(job.events),
                               "taskGroups": {"group0": {"counts": counts}}}}

    def task_json(self, job: Job, task: Task) -> dict[str, Any]:
        with self.lock:
            return {"name": f"{job.name}/taskGroups/group0/tasks/{task.index}",
                    "status": {"state": TASK_STATES[task.state], "statusEvents": list(task.events)}}

    def list_jobs(self, parent: str, filter_text: str) -> list[dict[str, Any]]:
        wanted = {(a or b): c for a, b, c in _FILTER_TERM.findall(filter_text or "")}
        with self.lock:
            jobs = [j for j in self.jobs.values() if j.name.startswith(parent + "/jobs/") and not j.deleted]
        return [self.job_json(j) for j in jobs
                if all((j.body.get("labels") or {}).get(k) == v for k, v in wanted.items())]

    def cancel(self, job: Job) -> None:
        with self.lock:
            if job.state in ("SUCCEEDED", "FAILED", "CANCELLED") or job.cancelling:
                return
            job.cancelling = True
            self._job_state(job, "CANCELLATION_IN_PROGRESS")
            for task in job.tasks:
                self._kill(task)

    def delete(self, job: Job) -> None:
        with self.lock:
            job.cancelling = True
            job.deleted = True
            for task in job.tasks:
                self._kill(task)

    def preempt(self, job: Job, index: int = 0) -> bool:
        """Kill the task's container the way a spot preemption does; False when it is not running."""
        with self.lock:
            task = job.tasks[index]
            if task.state != "RUNNING" or task.container is None:
                return False
            task.preempting = True
            self._kill(task)
            return True

    # ------------------------------------------------------------------ running jobs

    def _run_job(self, job: Job) -> None:
        time.sleep(self.queue_delay)
        with self.lock:
            if job.cancelling:
                self._finish(job)
                return
            self._job_state(job, "SCHEDULED")
        group = job.body["taskGroups"][0]
        parallelism = int(group.get("parallelism") or len(job.tasks)) or 1
        sem = threading.Semaphore(parallelism)
        threads = [threading.Thread(target=self._run_task, args=(job, t, sem), daemon=True) for t in job.tasks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with self.lock:
            self._finish(job)

    def _run_task(self, job: Job, task: Task, sem: threading.Semaphore) -> None:
        with sem:
            while True:
                with self.lock:
                    if job.cancelling:
                        return
                    task.instance = f"{job.name.rsplit('/', 1)[-1][:40]}-{uuid.uuid4().hex[:4]}-group0-0-{random.randint(1000, 9999)}"
                    self._task_state(task, "ASSIGNED", f"Task state is updated from PENDING to ASSIGNED on "
                                                       f"zones/{ZONE}/instances/{task.instance}.")
                try:
                    container = self._start_container(job, task)
                except Exception as exc:  # noqa: BLE001 - image missing, engine down: the task fails
                    with self.lock:
                        task.output.append(f"cannot start the container: {exc}")
                        if self._fail(job, task, 127, f"Task state is updated from ASSIGNED to FAILED on zones/"
                                                      f"{ZONE}/instances/{task.instance} with exit code 127."):
                            continue
                    return
                with self.lock:
                    task.container = container
                    if job.state in ("QUEUED", "SCHEDULED"):
                        self._job_state(job, "RUNNING")
                    self._task_state(task, "RUNNING", f"Task state is updated from ASSIGNED to RUNNING on "
                                                      f"zones/{ZONE}/instances/{task.instance}.")
                    if job.cancelling:  # cancelled while starting
                        self._kill(task)
                try:
                    code = int(container.wait().get("StatusCode", 1))
                    task.output = container.logs().decode(errors="replace").splitlines()[-500:]
                except Exception:  # noqa: BLE001 - the container vanished
                    code = 137
                with self.lock:
                    self._remove(task)
                    if job.cancelling and not task.preempting:
                        self._task_state(task, "FAILED", f"Task state is updated from RUNNING to FAILED on zones/"
                                                         f"{ZONE}/instances/{task.instance}: the job was cancelled.")
                        return
                    if code == 0:
                        self._task_state(task, "SUCCEEDED", f"Task state is updated from RUNNING to SUCCEEDED on "
                                                            f"zones/{ZONE}/instances/{task.instance}.", exit_code=0)
                        return
                    if task.preempting:
                        task.preempting = False
                        code = EXIT_SPOT_PREEMPTION
                        text = (f"Task state is updated from RUNNING to FAILED on zones/{ZONE}/instances/"
                                f"{task.instance} due to Spot Preemption with exit code {EXIT_SPOT_PREEMPTION}.")
                    else:
                        text = (f"Task state is updated from RUNNING to FAILED on zones/{ZONE}/instances/"
                                f"{task.instance} with exit code {code}.")
                    if not self._fail(job, task, code, text):
                        return

    def _fail(self, job: Job, task: Task, code: int, text: str) -> bool:
        """Record a failure; return True when the lifecycle policy retries the task."""
        self._task_state(task, "FAILED", text, exit_code=code)
        spec = job.body["taskGroups"][0].get("taskSpec") or {}
        if task.failures >= int(spec.get("maxRetryCount") or 0) or job.cancelling or not _retries(spec, code):
            return False
        task.failures += 1
        self._task_state(task, "PENDING", f"Task state is updated from FAILED to PENDING: retry "
                                          f"{task.failures} of {spec.get('maxRetryCount')} (exit code {code}).")
        return True

    def _finish(self, job: Job) -> None:
        if job.state in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return
        if job.cancelling:
            self._job_state(job, "CANCELLED")
        elif all(t.state == "SUCCEEDED" for t in job.tasks):
            self._job_state(job, "SUCCEEDED")
        else:
            failed = next(t for t in job.tasks if t.state != "SUCCEEDED")
            cause = failed.events[-1]["description"] if failed.events else "a task failed"
            self._job_state(job, "FAILED", f" with task failure: task {failed.index}: {cause}")

    def _start_container(self, job: Job, task: Task) -> Any:
        group = job.body["taskGroups"][0]
        spec = group.get("taskSpec") or {}
        runnable = (spec.get("runnables") or [{}])[0]
        box = runnable.get("container") or {}
        env = dict(((spec.get("environment") or {}).get("variables")) or {})
        per_task = group.get("taskEnvironments") or []
        if task.index < len(per_task):
            env.update((per_task[task.index] or {}).get("variables") or {})
        env.update(BATCH_TASK_INDEX=str(task.index), BATCH_TASK_COUNT=str(len(job.tasks)),
                   BATCH_TASK_RETRY_ATTEMPT=str(task.failures), BATCH_JOB_UID=job.uid,
                   BATCH_HOSTS_FILE="")
        res = spec.get("computeResource") or {}
        options: dict[str, Any] = {
            "command": list(box.get("commands") or []) or None,
            "environment": env,
            "labels": {**self.container_labels, "gcp-batch-standin.job": job.name,
                       "gcp-batch-standin.task": str(task.index)},
            "extra_hosts": {"host.docker.internal": "host-gateway"},
            "detach": True,
        }
        if box.get("entrypoint"):
            options["entrypoint"] = [box["entrypoint"]]
        if res.get("cpuMilli"):
            options["nano_cpus"] = int(res["cpuMilli"]) * 1_000_000
        if res.get("memoryMib"):
            options["mem_limit"] = int(res["memoryMib"]) * 2**20
        volumes = {}
        for spec_text in box.get("volumes") or []:
            parts = spec_text.split(":")
            volumes[parts[0]] = {"bind": parts[1], "mode": parts[2] if len(parts) > 2 else "rw"}
        if volumes:
            options["volumes"] = volumes
        container = self.docker.containers.create(box["imageUri"], **options)
        container.start()
        return container

    # ------------------------------------------------------------------ state helpers (lock held)

    def _job_state(self, job: Job, state: str, suffix: str = "") -> None:
        self._event(job.events, f"Job state is set from {job.state} to {state} for job {job.name}{suffix}.")
        job.state = state
        job.updated = _now()

    def _task_state(self, task: Task, state: str, text: str, exit_code: int | None = None) -> None:
        self._event(task.events, text, TASK_STATES[state], exit_code)
        task.state = state

    @staticmethod
    def _event(events: list[dict[str, Any]], text: str, task_state: int | None = None,
               exit_code: int | None = None) -> None:
        event: dict[str, Any] = {"type": "STATUS_CHANGED", "description": text, "eventTime": _now()}
        if task_state is not None:
            event["taskState"] = task_state
        if exit_code is not None:
            event["taskExecution"] = {"exitCode": exit_code}
        events.append(event)

    def _kill(self, task: Task) -> None:
        if task.container is not None:
            try:
                task.container.kill()
            except Exception:  # noqa: BLE001 - it ended already
                pass

    def _remove(self, task: Task) -> None:
        container, task.container = task.container, None
        if container is not None:
            try:
                container.remove(force=True)
            except Exception:  # noqa: BLE001 - gone already
                pass


def _retries(spec: dict[str, Any], code: int) -> bool:
    """Return True when the task spec's lifecycle policy lets a task that exited ``code`` run again."""
    for policy in spec.get("lifecyclePolicies") or []:
        codes = [int(c) for c in ((policy.get("actionCondition") or {}).get("exitCodes") or [])]
        action = _enum(policy.get("action"), ACTIONS)
        if action == ACTIONS["RETRY_TASK"]:
            return code in codes
        if action == ACTIONS["FAIL_TASK"] and code in codes:
            return False
    return True


def _error(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


def _operation(job: Job) -> dict[str, Any]:
    parent = job.name.rsplit("/jobs/", 1)[0]
    return {"name": f"{parent}/operations/operation-{uuid.uuid4().hex[:12]}", "done": False,
            "metadata": {"@type": "type.googleapis.com/google.cloud.batch.v1.OperationMetadata",
                         "createTime": _now(), "target": job.name}}


class _Handler(BaseHTTPRequestHandler):
    standin: GcpBatchStandIn
    protocol_version = "HTTP/1.1"

    def parse_request(self) -> bool:
        if self.standin.down:  # the service is unreachable: drop the connection unanswered
            self.close_connection = True
            return False
        return super().parse_request()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def _reply(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}") if length else {}

    def _job(self, name: str) -> Job | None:
        with self.standin.lock:
            job = self.standin.jobs.get(name)
        return None if job is None or job.deleted else job

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.standin.requests.append(("GET", url.path))
        if url.path == "/_standin/logs":
            job = self._job(query.get("job", ""))
            if job is None:
                return self._reply(404, _error(404, "NOT_FOUND", "no such job"))
            return self._reply(200, {str(t.index): t.output for t in job.tasks})
        m = _JOBS_PATH.match(url.path)
        if m:
            return self._reply(200, {"jobs": self.standin.list_jobs(m["parent"], query.get("filter", ""))})
        m = _JOB_PATH.match(url.path)
        if not m or m["rest"] == ":cancel":
            return self._reply(404, _error(404, "NOT_FOUND", f"no route {url.path}"))
        job = self._job(f"{m['parent']}/jobs/{m['job']}")
        if job is None:
            return self._reply(404, _error(404, "NOT_FOUND", f"Job {m['parent']}/jobs/{m['job']} not found"))
        if m["rest"]:
            return self._reply(200, {"tasks": [self.standin.task_json(job, t) for t in job.tasks]})
        return self._reply(200, self.standin.job_json(job))

    def do_POST(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.standin.requests.append(("POST", url.path))
        body = self._body()
        if url.path == "/_standin/preempt":
            job = self._job(query.get("job", ""))
            if job is None:
                return self._reply(404, _error(404, "NOT_FOUND", "no such job"))
            done = self.standin.preempt(job, int(query.get("task", "0")))
            return self._reply(200 if done else 409, {"preempted": done})
        m = _JOBS_PATH.match(url.path)
        if m:
            job_id = query.get("jobId") or query.get("job_id") or ""
            code, reply = self.standin.create(m["parent"], job_id, body)
            return self._reply(code, reply)
        m = _JOB_PATH.match(url.path)
        if m and m["rest"] == ":cancel":
            job = self._job(f"{m['parent']}/jobs/{m['job']}")
            if job is None:
                return self._reply(404, _error(404, "NOT_FOUND", "job not found"))
            self.standin.cancel(job)
            return self._reply(200, _operation(job))
        return self._reply(404, _error(404, "NOT_FOUND", f"no route {url.path}"))

    def do_DELETE(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        self.standin.requests.append(("DELETE", url.path))
        m = _JOB_PATH.match(url.path)
        job = self._job(f"{m['parent']}/jobs/{m['job']}") if m and not m["rest"] else None
        if job is None:
            return self._reply(404, _error(404, "NOT_FOUND", "job not found"))
        self.standin.delete(job)
        return self._reply(200, _operation(job))
