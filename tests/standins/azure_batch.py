"""A small HTTP stand-in for Azure Batch: the REST subset the azure backend uses, for tests.

It speaks the service's JSON (api-version 2025-06-01 paths, camelCase fields, OData error
bodies), so the real ``azure.batch.BatchClient`` talks to it over plain HTTP, and it runs each
task as a container on the local Docker engine (never pulling an image).

    POST /pools                GET /pools/{pool}            GET /pools/{pool}/nodes
    POST /jobs                 GET /jobs/{job}
    POST /jobs/{job}/tasks     POST /jobs/{job}/addtaskcollection   GET /jobs/{job}/tasks
    GET  /jobs/{job}/tasks/{task}     POST /jobs/{job}/tasks/{task}/terminate
    GET  /jobs/{job}/tasks/{task}/files/stdout.txt | stderr.txt   (ocp-range: bytes=N-)

Every path needs ``?api-version=``; any Authorization header is accepted. A pool has one node
per wanted node, each running one task at a time. Preemption as Azure does it, from the test
hook ``POST /_standin/preempt?job=J&task=T``: the task's node goes ``preempted``, its
container is killed, the *same* task returns to ``active`` (``previousState: running``), and
after ``recreate_s`` the node is re-created under the same id and the task runs again.
"""

from __future__ import annotations

import json
import logging
import shlex
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import docker
from docker.errors import DockerException, ImageNotFound, NotFound

log = logging.getLogger("tests.standins.azure_batch")
NAME_PREFIX = "azure-standin-"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class ServiceError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class AzureBatchStandIn:
    """The service's state, its scheduler thread, and an HTTP server in front of it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, labels: dict[str, str] | None = None,
                 recreate_s: float = 3.0, client: Any = None) -> None:
        self.host, self.port = host, port
        self.labels = dict(labels or {})
        self.recreate_s = recreate_s
        self.docker = client or docker.from_env(timeout=120)
        self.lock = threading.RLock()
        self.pools: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, dict[str, Any]]] = {}   # pool -> node id -> node
        self.jobs: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, dict[str, dict[str, Any]]] = {}   # job -> task id -> task
        self.containers: dict[tuple[str, str], str] = {}        # (job, task) -> latest container id
        self.runs: dict[tuple[str, str], int] = {}              # (job, task) -> times started
        self.requests: list[tuple[str, str, Any]] = []          # (method, path, body) as received
        self._server: ThreadingHTTPServer | None = None
        self._stop = threading.Event()
        self.down = threading.Event()  # set while paused: kept-alive connections are dropped too
        self._scheduler: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AzureBatchStandIn:
        self.resume()
        self._scheduler = threading.Thread(target=self._schedule_loop, name="standin-scheduler", daemon=True)
        self._scheduler.start()
        return self

    def pause(self) -> None:
        """Stop answering HTTP (connections are refused); tasks go on running."""
        self.down.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def resume(self) -> None:
        """Answer HTTP again, on the same port."""
        standin = self

        class Handler(_Handler):
            service = standin

        self.down.clear()
        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="standin-http", daemon=True).start()

    def stop(self) -> None:
        self.pause()
        self._stop.set()
        if self._scheduler is not None:
            self._scheduler.join(timeout=10)
        for container_id in set(self.containers.values()):
            try:
                self.docker.api.remove_container(container_id, force=True)
            except DockerException:
                pass

    # ------------------------------------------------------------------ REST operations

    def create_pool(self, body: dict[str, Any]) -> None:
        pool_id = _require(body, "id")
        _require(body, "vmSize")
        with self.lock:
            if pool_id in self.pools:
                raise ServiceError(409, "PoolExists", "The specified pool already exists.")
            count = int(body.get("targetLowPriorityNodes") or 0) + int(body.get("targetDedicatedNodes") or 0)
            dedicated = int(body.get("targetDedicatedNodes") or 0)
            self.pools[pool_id] = {**body, "url": f"{self.url}/pools/{pool_id}", "state": "active",
                                   "allocationState": "steady", "creationTime": now(),
                                   "currentLowPriorityNodes": count - dedicated, "currentDedicatedNodes": dedicated}
            self.nodes[pool_id] = {}
            for i in range(count):
                node_id = f"tvmps_{uuid.uuid4().hex[:16]}_{'d' if i < dedicated else 'p'}"
                self.nodes[pool_id][node_id] = {"id": node_id, "state": "idle", "schedulingState": "enabled",
                                                "stateTransitionTime": now(), "isDedicated": i < dedicated,
                                                "vmSize": body["vmSize"], "runningTasksCount": 0,
                                                "totalTasksRun": 0, "url": f"{self.url}/pools/{pool_id}/nodes/{node_id}"}

    def get_pool(self, pool_id: str) -> dict[str, Any]:
        with self.lock:
            if pool_id not in self.pools:
                raise ServiceError(404, "PoolNotFound", "The specified pool does not exist.")
            return dict(self.pools[pool_id])

    def list_nodes(self, pool_id: str) -> list[dict[str, Any]]:
        with self.lock:
            if pool_id not in self.pools:
                raise ServiceError(404, "PoolNotFound", "The specified pool does not exist.")
            return [dict(n) for n in self.nodes[pool_id].values()]

    def create_job(self, body: dict[str, Any]) -> None:
        job_id = _require(body, "id")
        if not (body.get("poolInfo") or {}).get("poolId"):
            raise ServiceError(400, "MissingRequiredProperty", "poolInfo.poolId is required")
        with self.lock:
            if job_id in self.jobs:
                raise ServiceError(409, "JobExists", "The specified job already exists.")
            self.jobs[job_id] = {**body, "url": f"{self.url}/jobs/{job_id}", "state": "active",
                                 "creationTime": now()}
            self.tasks[job_id] = {}

    def get_job(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            return dict(self._job(job_id))

    def create_task(self, job_id: str, body: dict[str, Any]) -> None:
        task_id = _require(body, "id")
        with self.lock:
            job = self._job(job_id)
            if task_id in self.tasks[job_id]:
                raise ServiceError(409, "TaskExists", "The specified task already exists.")
            pool = self.pools.get(job["poolInfo"]["poolId"])
            needs_container = bool(((pool or {}).get("virtualMachineConfiguration") or {})
                                   .get("containerConfiguration"))
            if needs_container and not (body.get("containerSettings") or {}).get("imageName"):
                raise ServiceError(400, "InvalidPropertyValue",
                                   "A task on a pool with a container configuration needs containerSettings.")
            stamp = now()
            self.tasks[job_id][task_id] = {
                **body, "url": f"{self.url}/jobs/{job_id}/tasks/{task_id}", "eTag": uuid.uuid4().hex,
                "creationTime": stamp, "lastModified": stamp, "state": "active", "stateTransitionTime": stamp,
                "executionInfo": {"retryCount": 0, "requeueCount": 0}}

    def create_tasks(self, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
        values = body.get("value") or []
        if len(values) > 100:
            raise ServiceError(400, "TooManyTasks", "A task collection holds at most 100 tasks.")
        self._job(job_id)
        results = []
        for task in values:
            try:
                self.create_task(job_id, task)
                results.append({"status": "success", "taskId": task.get("id"), "lastModified": now(),
                                "location": f"{self.url}/jobs/{job_id}/tasks/{task.get('id')}"})
            except ServiceError as exc:
                results.append({"status": "clienterror", "taskId": task.get("id"),
                                "error": {"code": exc.code, "message": {"lang": "en-US", "value": exc.message}}})
        return {"value": results}

    def list_tasks(self, job_id: str) -> list[dict[str, Any]]:
        with self.lock:
            self._job(job_id)
            return [json.loads(json.dumps(t)) for t in self.tasks[job_id].values()]

    def get_task(self, job_id: str, task_id: str) -> dict[str, Any]:
        with self.lock:
            return json.loads(json.dumps(self._task(job_id, task_id)))

    def terminate_task(self, job_id: str, task_id: str) -> None:
        with self.lock:
            task = self._task(job_id, task_id)
            if task["state"] == "completed":
                raise ServiceError(409, "TaskCompleted", "The specified task is already completed.")
            self._kill(job_id, task_id)
            self._free_node(task)
            info = task["executionInfo"]
            info.update(endTime=now(), result="failure", failureInfo={
                "category": "usererror", "code": "TaskEnded", "message": "Task Was Ended by User Request"})
            self._transition(task, "completed")

    def task_file(self, job_id: str, task_id: str, name: str) -> bytes:
        with self.lock:
            self._task(job_id, task_id)
            container_id = self.containers.get((job_id, task_id))
        if name not in ("stdout.txt", "stderr.txt") or container_id is None:
            raise ServiceError(404, "FileNotFound", f"The specified file {name} does not exist.")
        try:
            data: bytes = self.docker.api.logs(container_id, stdout=name == "stdout.txt",
                                               stderr=name == "stderr.txt")
            return data
        except NotFound:
            raise ServiceError(404, "FileNotFound", f"The node holding {name} is gone.") from None

    # ------------------------------------------------------------------ test hooks

    def preempt(self, job_id: str, task_id: str) -> dict[str, Any]:
        """Preempt the node running the task, the Azure way; return {node, task}."""
        with self.lock:
            task = self._task(job_id, task_id)
            if task["state"] not in ("running", "preparing"):
                raise ServiceError(409, "TaskNotRunning", f"task {task_id} is {task['state']}, not running")
            node_info = task["nodeInfo"]
            node = self.nodes[node_info["poolId"]][node_info["nodeId"]]
            node.update(state="preempted", stateTransitionTime=now(), runningTasksCount=0)
            self._kill(job_id, task_id)
            self._transition(task, "active")  # requeued: the same task, waiting for a node
            recreate_at = time.monotonic() + self.recreate_s
            node["_recreate_at"] = recreate_at
            return {"node": node["id"], "task": task_id, "job": job_id}

    def running_containers(self) -> list[str]:
        """Names of the containers that run now, as the engine sees them."""
        with self.lock:
            ids = set(self.containers.values())
        running = []
        for container_id in ids:
            try:
                info = self.docker.api.inspect_container(container_id)
            except NotFound:
                continue
            if info["State"]["Running"]:
                running.append(info["Name"].lstrip("/"))
        return running

    # ------------------------------------------------------------------ scheduler

    def _schedule_loop(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self._schedule_once()
            except Exception:  # noqa: BLE001 - keep the service alive; the test sees the log
                log.exception("stand-in scheduler pass failed")

    def _schedule_once(self) -> None:
        with self.lock:
            clock = time.monotonic()
            for nodes in self.nodes.values():
                for node in nodes.values():
                    if node["state"] == "preempted" and node.get("_recreate_at", 0) <= clock:
                        node.pop("_recreate_at", None)  # re-created under the same id
                        node.update(state="idle", stateTransitionTime=now(), lastBootTime=now())
            for job_id, tasks in self.tasks.items():
                for task_id, task in tasks.items():
                    if task["state"] == "running":
                        self._check_exit(job_id, task_id, task)
                    elif task["state"] == "active":
                        self._try_start(job_id, task_id, task)

    def _try_start(self, job_id: str, task_id: str, task: dict[str, Any]) -> None:
        pool_id = self.jobs[job_id]["poolInfo"]["poolId"]
        idle = [n for n in self.nodes.get(pool_id, {}).values() if n["state"] == "idle"]
        if not idle:
            return
        node = idle[0]
        node.update(state="running", stateTransitionTime=now(), runningTasksCount=1)
        node["totalTasksRun"] += 1
        task["nodeInfo"] = {"affinityId": f"TVM:{node['id']}", "nodeUrl": node["url"], "poolId": pool_id,
                            "nodeId": node["id"], "taskRootDirectory": f"workitems/{job_id}/job-1/{task_id}"}
        self._transition(task, "preparing")
        try:
            container_id = self._run(job_id, task_id, task, node)
        except (DockerException, ValueError) as exc:
            node.update(state="idle", runningTasksCount=0)
            task["executionInfo"].update(startTime=now(), endTime=now(), result="failure", failureInfo={
                "category": "usererror", "code": "ContainerStartFailed", "message": " ".join(str(exc).split())})
            self._transition(task, "completed")
            return
        self.containers[(job_id, task_id)] = container_id
        self.runs[(job_id, task_id)] = self.runs.get((job_id, task_id), 0) + 1
        task["executionInfo"].update(startTime=now(), containerInfo={"containerId": container_id,
                                                                     "state": "running"})
        task["executionInfo"].pop("endTime", None)
        self._transition(task, "running")

    def _run(self, job_id: str, task_id: str, task: dict[str, Any], node: dict[str, Any]) -> str:
        settings = task.get("containerSettings") or {}
        image = settings.get("imageName")
        try:
            self.docker.api.inspect_image(image)
        except ImageNotFound:
            raise ValueError(f"image {image} is not on the node and the stand-in never pulls") from None
        options: dict[str, Any] = {"extra_hosts": {"host.docker.internal": "host-gateway"}}
        entrypoint = None
        for word in shlex.split(settings.get("containerRunOptions") or ""):
            flag, _, value = word.partition("=")
            if flag == "--cpus":
                options["nano_cpus"] = int(float(value) * 1e9)
            elif flag == "--memory":
                options["mem_limit"] = int(value)
            elif flag == "--entrypoint":
                entrypoint = [value]
            elif flag == "--rm" or flag == "--gpus":
                pass  # --rm: the stand-in keeps containers for the task files; no GPUs here
            else:
                raise ValueError(f"container run option {word!r} is not supported by the stand-in")
        env = {e["name"]: e.get("value") or "" for e in task.get("environmentSettings") or []}
        env.update(AZ_BATCH_JOB_ID=job_id, AZ_BATCH_TASK_ID=task_id, AZ_BATCH_NODE_ID=node["id"],
                   AZ_BATCH_NODE_IS_DEDICATED=str(node["isDedicated"]).lower(),
                   AZ_BATCH_POOL_ID=self.jobs[job_id]["poolInfo"]["poolId"])
        run = self.runs.get((job_id, task_id), 0) + 1
        command = shlex.split(task.get("commandLine") or "")
        container = self.docker.api.create_container(
            image, command=command or None, entrypoint=entrypoint, environment=env,
            name=f"{NAME_PREFIX}{job_id}-{task_id}-{run}"[:250],
            labels={**self.labels, "azure-standin.job": job_id, "azure-standin.task": task_id},
            host_config=self.docker.api.create_host_config(**options))
        self.docker.api.start(container["Id"])
        return str(container["Id"])

    def _check_exit(self, job_id: str, task_id: str, task: dict[str, Any]) -> None:
        container_id = self.containers.get((job_id, task_id))
        try:
            state = self.docker.api.inspect_container(container_id)["State"] if container_id else None
        except NotFound:
            state = None
        if state is not None and state.get("Running"):
            return
        code = int(state["ExitCode"]) if state else 137
        info = task["executionInfo"]
        info.update(endTime=now(), exitCode=code, result="success" if code == 0 else "failure")
        info["containerInfo"] = {**info.get("containerInfo", {}), "state": "exited"}
        if code != 0:
            info["failureInfo"] = {"category": "usererror", "code": "FailureExitCode",
                                   "message": "The task process exited with an unexpected exit code",
                                   "details": [{"name": "Message", "value": "The task exited with an exit "
                                                "code representing a failure"}]}
        self._free_node(task)
        self._transition(task, "completed")

    # ------------------------------------------------------------------ helpers

    def _kill(self, job_id: str, task_id: str) -> None:
        container_id = self.containers.get((job_id, task_id))
        if container_id:
            try:
                self.docker.api.kill(container_id, signal="SIGKILL")
            except DockerException:
                pass  # already stopped

    def _free_node(self, task: dict[str, Any]) -> None:
        node_info = task.get("nodeInfo") or {}
        node = self.nodes.get(node_info.get("poolId"), {}).get(node_info.get("nodeId"))
        if node is not None and node["state"] == "running":
            node.update(state="idle", stateTransitionTime=now(), runningTasksCount=0)

    @staticmethod
    def _transition(task: dict[str, Any], state: str) -> None:
        stamp = now()
        task.update(previousState=task["state"], previousStateTransitionTime=task["stateTransitionTime"],
                    state=state, stateTransitionTime=stamp, lastModified=stamp, eTag=uuid.uuid4().hex)

    def _job(self, job_id: str) -> dict[str, Any]:
        if job_id not in self.jobs:
            raise ServiceError(404, "JobNotFound", "The specified job does not exist.")
        return self.jobs[job_id]

    def _task(self, job_id: str, task_id: str) -> dict[str, Any]:
        self._job(job_id)
        if task_id not in self.tasks[job_id]:
            raise ServiceError(404, "TaskNotFound", "The specified task does not exist.")
        return self.tasks[job_id][task_id]


def _require(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not value:
        raise ServiceError(400, "MissingRequiredProperty", f"The property {field} is required.")
    return str(value)


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if not k.startswith("_")}


class _Handler(BaseHTTPRequestHandler):
    service: AzureBatchStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        if self.service.down.is_set():  # paused: drop the connection without an answer
            self.close_connection = True
            self.connection.shutdown(2)
            return
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
            if parts[:1] != ["_standin"]:
                if "api-version" not in query:
                    raise ServiceError(400, "MissingRequiredQueryParameter", "api-version is required")
                with self.service.lock:
                    self.service.requests.append((method, "/" + "/".join(parts), body))
            self._route(method, parts, query, body)
        except ServiceError as exc:
            self._json(exc.status, {"odata.metadata": f"{self.service.url}/$metadata#Microsoft.Azure.Batch"
                                                      ".Protocol.Entities.Container.errors/@Element",
                                    "code": exc.code,
                                    "message": {"lang": "en-US", "value": f"{exc.message}\nRequestId:"
                                                f"{uuid.uuid4()}\nTime:{now()}"}})
        except (ValueError, KeyError, IndexError) as exc:
            self._json(400, {"code": "InvalidRequestBody", "message": {"lang": "en-US", "value": str(exc)}})

    def _route(self, method: str, p: list[str], query: dict[str, str], body: Any) -> None:
        s = self.service
        n = len(p)
        if method == "POST" and p == ["_standin", "preempt"]:
            self._json(202, s.preempt(query["job"], query["task"]))
        elif method == "POST" and p == ["pools"]:
            s.create_pool(body)
            self._empty(201)
        elif method == "GET" and n == 2 and p[0] == "pools":
            self._json(200, _public(s.get_pool(p[1])))
        elif method == "GET" and n == 3 and p[0] == "pools" and p[2] == "nodes":
            self._json(200, {"value": [_public(node) for node in s.list_nodes(p[1])]})
        elif method == "POST" and p == ["jobs"]:
            s.create_job(body)
            self._empty(201)
        elif method == "GET" and n == 2 and p[0] == "jobs":
            self._json(200, s.get_job(p[1]))
        elif method == "POST" and n == 3 and p[0] == "jobs" and p[2] == "tasks":
            s.create_task(p[1], body)
            self._empty(201)
        elif method == "POST" and n == 3 and p[0] == "jobs" and p[2] == "addtaskcollection":
            self._json(200, s.create_tasks(p[1], body))
        elif method == "GET" and n == 3 and p[0] == "jobs" and p[2] == "tasks":
            self._json(200, {"value": s.list_tasks(p[1])})
        elif method == "GET" and n == 4 and p[0] == "jobs" and p[2] == "tasks":
            self._json(200, s.get_task(p[1], p[3]))
        elif method == "POST" and n == 5 and p[0] == "jobs" and p[2] == "tasks" and p[4] == "terminate":
            s.terminate_task(p[1], p[3])
            self._empty(204)
        elif method == "GET" and n >= 6 and p[0] == "jobs" and p[2] == "tasks" and p[4] == "files":
            data = s.task_file(p[1], p[3], "/".join(p[5:]))
            start = _range_start(self.headers.get("ocp-range"))
            self._bytes(200, data[start:])
        else:
            raise ServiceError(404, "ResourceNotFound", f"the stand-in does not serve {method} /{'/'.join(p)}")

    def _json(self, status: int, payload: Any) -> None:
        self._bytes(status, json.dumps(payload).encode(), "application/json;odata=minimalmetadata")

    def _empty(self, status: int) -> None:
        self._bytes(status, b"")

    def _bytes(self, status: int, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(data)


def _range_start(header: str | None) -> int:
    if header and header.startswith("bytes="):
        first = header[len("bytes="):].split("-", 1)[0]
        return int(first) if first.isdigit() else 0
    return 0


def main() -> None:
    """Run the stand-in in the foreground: ``python -m tests.standins.azure_batch [PORT]``."""
    import sys

    standin = AzureBatchStandIn(host="0.0.0.0", port=int(sys.argv[1]) if len(sys.argv) > 1 else 0).start()
    print(f"Azure Batch stand-in at {standin.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        standin.stop()


if __name__ == "__main__":
    main()
