"""Run attempts as containers on the local Docker engine.

Every container is named ``spot-runner-<key>`` and labelled (``spot-runner.managed``, ``.job``,
``.key``, ``.attempt``, ``.index``), so a restarted watcher finds and adopts what it started.
A ``file://`` checkpoint folder is bind-mounted at the fixed path ``/checkpoints`` inside the
container and the task is told ``RUNNER_CHECKPOINT_URI=file:///checkpoints``: the host's path
never matters inside (a folder under a home of mode 700, which the image's user could not walk
through, included). The spec's ``data:`` folders on this machine are mounted read-only at
``/data/<name>``. Images are never pulled: a missing image is an error.

A container gets only what its attempt needs: its checkpoint folder and its data folders
(nothing else is mounted; never the Docker socket), no extra privileges, the default network
unless the spec's ``local.network`` names one. It runs as the image's user (the task images run
as uid 1000): a runner started by root hands the checkpoint folder over to that uid:gid
(``chown``, the folder only, not its parents) and checks that the data can be read by it; a
runner started by another user runs the container as that user's uid:gid instead, so the files
it writes stay the user's.

One pure function, :func:`classify`, maps a ``docker inspect`` State onto :class:`AttemptState`.
The engine cannot tell a preemption from any other SIGKILL, so :meth:`LocalBackend.preempt` and
:meth:`LocalBackend.cancel` leave a marker file under ``<home>/local/`` before acting; the
markers outlive the watcher, so a restarted one still classifies those containers correctly.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, NotFound
from docker.types import DeviceRequest
from pydantic import Field, field_validator
from requests.exceptions import RequestException

from runner import contract
from runner.backends.base import Backend, Submission
from runner.cost.table import DEFAULT_REGIONS, PriceError, PriceTable, parse_machine
from runner.errors import BackendError, BackendUnavailable, SpecError, SubmitError, one_line
from runner.spec.model import JobSpec, SpecModel
from runner.states import AttemptState, AttemptStatus

log = logging.getLogger("runner.backends.local")

NAME_PREFIX = "spot-runner-"
LABEL_MANAGED = "spot-runner.managed"
LABEL_JOB = "spot-runner.job"
LABEL_KEY = "spot-runner.key"
LABEL_ATTEMPT = "spot-runner.attempt"
LABEL_INDEX = "spot-runner.index"
EXIT_PREEMPTED = contract.EXIT_PREEMPTED
EXIT_SIGKILL = 128 + signal.SIGKILL
STOP_TIMEOUT = 10
HOST_GATEWAY = {"host.docker.internal": "host-gateway"}
_ENGINE_ERRORS = (DockerException, RequestException, OSError)
_ZERO_TIME = "0001-01-01"
_FRACTION = re.compile(r"(\.\d{1,6})\d*")


class LocalSettings(SpecModel):
    """The ``local:`` section; ``price_per_hour`` and ``imitates`` price a run as a cloud machine."""

    price_per_hour: float | None = Field(default=None, gt=0, le=1e6)
    imitates: str | None = None  # [cloud:[region:]]type, e.g. aws:us-east-1:g4dn.xlarge
    network: str | None = None

    @field_validator("imitates")
    @classmethod
    def _check_imitates(cls, value: str | None) -> str | None:
        if value is not None:
            parse_machine(value)
        return value


def classify(state: dict[str, Any], preempted: bool = False, cancelled: bool = False,
             memory_limit: int | None = None) -> AttemptStatus:
    """Map a ``docker inspect`` State (plus the runner's own markers) onto an AttemptStatus.

    Precedence for a container that has ended: exit 0 wins (the work is done), then a cancel,
    then exit 75, then a SIGKILL sent by the preemptor, then the kernel's OOM killer.
    """
    status = str(state.get("Status") or "").lower()
    code = state.get("ExitCode")
    exit_code = int(code) if isinstance(code, int) else None
    error = one_line(str(state.get("Error") or ""))
    started, ended = _epoch(state.get("StartedAt")), _epoch(state.get("FinishedAt"))

    def status_of(kind: AttemptState, reason: str, with_code: bool = True) -> AttemptStatus:
        return AttemptStatus(kind, reason, exit_code if with_code else None, started, ended)

    if status == "created":
        if error or exit_code:
            return status_of(AttemptState.FAILED, f"could not start: {error or f'exit {exit_code}'}")
        if cancelled:
            return status_of(AttemptState.CANCELLED, "cancelled before it started", False)
        return status_of(AttemptState.PENDING, "created, not started yet", False)
    if status in ("running", "restarting", "paused"):
        return AttemptStatus(AttemptState.RUNNING, status, None, started, None)
    if status == "dead":
        return status_of(AttemptState.FAILED, "container is dead" + (f": {error}" if error else ""))
    if status not in ("exited", "removing"):
        return AttemptStatus(AttemptState.UNKNOWN, f"unrecognised container status {status!r}",
                             exit_code, started, ended)
    exit_code = exit_code or 0
    if exit_code == 0:
        return status_of(AttemptState.SUCCEEDED, "exit 0")
    if cancelled:
        return status_of(AttemptState.CANCELLED, f"cancelled (exit {exit_code})")
    if exit_code == EXIT_PREEMPTED:
        return status_of(AttemptState.PREEMPTED, "exit 75: stopped after a preemption notice")
    if preempted and exit_code == EXIT_SIGKILL:
        return status_of(AttemptState.PREEMPTED, "killed by the preemptor")
    if state.get("OOMKilled"):
        limit = f"limit {_size(memory_limit)}" if memory_limit else "no limit set"
        return status_of(AttemptState.FAILED, f"out of memory ({limit})")
    return status_of(AttemptState.FAILED, f"exit {exit_code}{_signal_name(exit_code)}")


class LocalBackend(Backend):
    """Run each attempt as one container on the Docker engine of this machine."""

    name = "local"
    summary = "the Docker engine on this machine"
    settings_model = LocalSettings
    schemes = ("file", "s3", "gs", "az")
    uri_example = "file:///absolute/folder"
    simulates_preemption = True

    @classmethod
    def check_spec(cls, spec: JobSpec, chosen: bool) -> tuple[str, str] | None:
        """Also: ``local.price_per_hour`` needs a machine (``imitates``) for the on-demand side."""
        local = cls.settings(spec)
        if isinstance(local, LocalSettings) and local.price_per_hour is not None and not local.imitates \
                and not (spec.cost and spec.cost.on_demand_per_hour):
            return ("local.imitates", "is needed with local.price_per_hour to know the on-demand price; "
                                      "name the machine, such as imitates: aws:us-east-1:g4dn.xlarge")
        return super().check_spec(spec, chosen)

    @classmethod
    def preflight(cls, spec: JobSpec) -> None:
        """The image is on this engine and every ``data:`` folder can be read by the task's user.

        An engine that does not answer is not the spec's fault: the watcher waits for it.
        """
        try:
            client = docker.from_env()
        except _ENGINE_ERRORS:
            return
        try:
            image = client.api.inspect_image(spec.image)
        except NotFound:
            raise SpecError(f"field 'image': {spec.image} is not on this machine's Docker engine; build it "
                            f"(make image) or pull it (docker pull {spec.image})") from None
        except _ENGINE_ERRORS:
            return
        finally:
            client.close()
        user = cls._container_user(str((image.get("Config") or {}).get("User") or ""))
        for name, folder in spec.local_data().items():
            try:
                check_data_folder(name, folder, user)
            except SubmitError as exc:
                raise SpecError(str(exc)) from None

    @classmethod
    def machine(cls, spec: JobSpec, table: PriceTable) -> tuple[str, str, str] | None:
        """The machine ``local.imitates`` names (cloud and region filled in from the table)."""
        local = cls.settings(spec)
        if not isinstance(local, LocalSettings) or not local.imitates:
            return None
        cloud, region, itype = parse_machine(local.imitates)
        if cloud is None:
            clouds = sorted({p.cloud for p in table.select(instance_type=itype)})
            if len(clouds) > 1:
                raise PriceError(f"local.imitates {itype!r} is priced on {', '.join(clouds)}; "
                                 f"write cloud:region:type, such as {clouds[0]}:{DEFAULT_REGIONS[clouds[0]]}:{itype}")
            if not clouds:
                raise PriceError(f"local.imitates {itype!r} is in no price table; write cloud:region:type and add "
                                 "it to a prices file (see docs/prices.md), or set cost.on_demand_per_hour")
            cloud = clouds[0]
        if region is None:
            regions = [p.region for p in table.select(cloud, instance_type=itype)]
            region = DEFAULT_REGIONS[cloud] if DEFAULT_REGIONS[cloud] in regions or not regions else regions[0]
        return cloud, region, itype

    def __init__(self, client: docker.DockerClient | None = None, simulator_url: str | None = None,
                 home: Path | None = None) -> None:
        if client is None:
            try:
                client = docker.from_env()
            except _ENGINE_ERRORS as exc:
                raise BackendError(_unreachable(exc)) from exc
            self._owns_client = True
        else:
            self._owns_client = False
        if home is None:
            from runner.paths import data_dir

            home = data_dir()
        self.client = client
        self.simulator_url = simulator_url.rstrip("/") if simulator_url else None
        self.home = Path(home)
        self._host: dict[str, Any] | None = None
        self._warned: set[str] = set()
        self._started_at: dict[str, float] = {}  # container id -> StartedAt, while running

    # ------------------------------------------------------------------ submit

    def submit(self, sub: Submission) -> str:
        """Create and start the attempt's container; return its id (the same id for the same key)."""
        spec = sub.spec
        name = NAME_PREFIX + sub.key
        try:
            image = self.client.api.inspect_image(spec.image)
        except NotFound:
            raise SubmitError(f"image {spec.image} not found locally: run `make image` "
                              f"or docker pull {spec.image}") from None
        except APIError as exc:
            raise SubmitError(_engine_error(exc, f"cannot inspect the image {spec.image}")) from exc
        except _ENGINE_ERRORS as exc:
            raise BackendUnavailable(_unreachable(exc)) from exc
        options = self._run_options(sub, str((image.get("Config") or {}).get("User") or ""))
        try:
            container = self.client.containers.create(spec.image, name=name, **options)
        except APIError as exc:
            if exc.status_code == 409:  # submitted before under this key: adopt it
                return self._adopt(name)
            raise SubmitError(one_line(f"cannot create container {name}: {_explain(exc)}; "
                                        "check the job spec's image, command and resources")) from exc
        except _ENGINE_ERRORS as exc:
            raise BackendUnavailable(_unreachable(exc)) from exc
        try:
            container.start()
        except _ENGINE_ERRORS as exc:
            reason = _explain(exc) if isinstance(exc, APIError) else str(exc)
            self._discard(container.id)
            raise SubmitError(one_line(f"cannot start container {name}: {reason}; "
                                        "check the image's entrypoint and the job's command")) from exc
        log.debug("started %s (%s) from %s", name, container.id[:12], spec.image)
        return str(container.id)

    def _run_options(self, sub: Submission, image_user: str = "") -> dict[str, Any]:
        """Return the keyword arguments for ``containers.create`` (``image_user``: the image's USER)."""
        spec, res = sub.spec, sub.spec.resources
        env = dict(sub.env)
        options: dict[str, Any] = {
            "command": list(spec.args) or None,
            "labels": {LABEL_MANAGED: "1", LABEL_JOB: sub.job_id, LABEL_KEY: sub.key,
                       LABEL_ATTEMPT: str(sub.attempt), LABEL_INDEX: str(sub.array_index)},
            "detach": True,
        }
        if spec.command:
            options["entrypoint"] = list(spec.command)
        if self.simulator_url:
            env["RUNNER_METADATA_URL"] = f"{self.simulator_url}/ns/{sub.key}"
            options["extra_hosts"] = dict(HOST_GATEWAY)
        host = self._host_info()
        cpus, memory = res.cpus, res.memory_bytes
        if host["cpus"] and cpus > host["cpus"]:
            self._warn_once("cpus", f"{res.cpus:g} CPUs asked but the engine's host has {host['cpus']}; "
                                    f"capping to {host['cpus']}")
            cpus = host["cpus"]
        if host["memory"] and memory > host["memory"]:
            self._warn_once("memory", f"{res.memory} of memory asked but the engine's host has "
                                      f"{_size(host['memory'])}; capping to that")
            memory = host["memory"]
        # DataLoader workers pass batches through /dev/shm; Docker's 64 MB default is too small.
        options.update(nano_cpus=int(cpus * 1e9), mem_limit=memory, memswap_limit=memory,
                       shm_size=max(64 << 20, memory // 2))
        if res.gpus:
            if "nvidia" in host["runtimes"]:
                options["device_requests"] = [DeviceRequest(count=res.gpus, capabilities=[["gpu"]])]
            else:
                self._warn_once("gpus", f"{res.gpus} GPU(s) asked but the engine has no nvidia runtime; "
                                        "running on CPU (install nvidia-container-toolkit for GPUs)")
        volumes: dict[str, dict[str, str]] = {}
        if sub.checkpoint_uri.startswith("file://"):
            folder = sub.checkpoint_uri[len("file://"):]
            try:
                Path(folder).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SubmitError(f"cannot create the checkpoint folder {folder}: {exc.strerror}; "
                                  "fix checkpoint.uri or the folder's permissions") from exc
            self._hand_over(folder, image_user, spec.image)
            volumes[folder] = {"bind": contract.CONTAINER_CHECKPOINT_DIR, "mode": "rw"}
            env[contract.CHECKPOINT_URI] = f"file://{contract.CONTAINER_CHECKPOINT_DIR}"
        for name, folder in spec.local_data().items():
            check_data_folder(name, folder, self._container_user(image_user))
            volumes[folder] = {"bind": f"{contract.CONTAINER_DATA_DIR}/{name}", "mode": "ro"}
        if volumes:
            options["volumes"] = volumes
        if os.geteuid() != 0:  # run as the invoking user: the files it writes stay theirs
            options["user"] = f"{os.geteuid()}:{os.getegid()}"
        options["environment"] = env
        local = self.settings(spec)
        if isinstance(local, LocalSettings) and local.network:
            options["network"] = local.network
        return options

    @staticmethod
    def _container_user(image_user: str) -> tuple[int, int] | None:
        """Return the uid:gid the container runs as (None: a named user the runner cannot tell)."""
        if os.geteuid() != 0:
            return (os.geteuid(), os.getegid())
        return _numeric_user(image_user)

    def _hand_over(self, folder: str, image_user: str, image: str) -> None:
        """Make a root runner's checkpoint folder writable by the image's non-root uid:gid."""
        if os.geteuid() != 0:
            return
        owner = _numeric_user(image_user)
        if owner is None:
            self._warn_once("user", f"{image} runs as user {image_user!r}: give its USER as uid:gid "
                                    "so the runner can hand it the checkpoint folder")
            return
        if owner == (0, 0):
            return
        try:
            for path in _tree(Path(folder)):
                st = path.lstat()
                if (st.st_uid, st.st_gid) != owner:
                    os.lchown(path, *owner)
        except OSError as exc:
            raise SubmitError(f"cannot hand the checkpoint folder {folder} to uid:gid "
                              f"{owner[0]}:{owner[1]} of {image}: {exc.strerror}") from exc

    def _host_info(self) -> dict[str, Any]:
        """Return the engine host's CPUs, memory and runtimes (asked once)."""
        if self._host is None:
            try:
                info = self.client.info()
            except APIError as exc:
                raise SubmitError(_engine_error(exc, "cannot ask the engine about its host")) from exc
            except _ENGINE_ERRORS as exc:
                raise BackendUnavailable(_unreachable(exc)) from exc
            self._host = {"cpus": int(info.get("NCPU") or 0), "memory": int(info.get("MemTotal") or 0),
                          "runtimes": set(info.get("Runtimes") or {})}
        return self._host

    def _adopt(self, name: str) -> str:
        """Return the id of the existing container ``name``, starting it if it never started."""
        try:
            info = self.client.api.inspect_container(name)
            state = info.get("State") or {}
            if state.get("Status") == "created" and not state.get("Error") and not state.get("ExitCode"):
                self.client.api.start(info["Id"])
        except _ENGINE_ERRORS as exc:
            raise SubmitError(one_line(f"container {name} exists but cannot be adopted: {exc}; "
                                        f"remove it with docker rm -f {name}")) from exc
        if (info.get("Config") or {}).get("Labels", {}).get(LABEL_MANAGED) != "1":
            raise SubmitError(f"a container named {name} exists but was not started by the runner; "
                              f"remove it with docker rm -f {name}")
        log.info("adopted the existing container %s (%s)", name, info["Id"][:12])
        return str(info["Id"])

    # ------------------------------------------------------------------ poll

    def poll(self, ids: Sequence[str]) -> dict[str, AttemptStatus]:
        """Return every id's status: one listing, plus an inspect for each container not running."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        try:
            # Only the asked ids (the engine ORs repeated id filters): finished containers are kept
            # for `runner logs`, so listing every managed one would grow without bound.
            rows = self.client.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}=1", "id": wanted})
        except _ENGINE_ERRORS as exc:
            unknown = AttemptStatus(AttemptState.UNKNOWN, _engine_error(exc, "cannot list containers"))
            return {backend_id: unknown for backend_id in wanted}
        listed = {str(row.get("Id")): str(row.get("State") or "") for row in rows}
        result: dict[str, AttemptStatus] = {}
        for backend_id in wanted:
            try:
                result[backend_id] = self._status(backend_id, listed.get(backend_id))
            except _ENGINE_ERRORS as exc:
                result[backend_id] = AttemptStatus(
                    AttemptState.UNKNOWN, _engine_error(exc, f"cannot inspect {backend_id[:12]}"))
        return result

    def _status(self, backend_id: str, listed_state: str | None) -> AttemptStatus:
        if listed_state == "running" and backend_id in self._started_at:
            return AttemptStatus(AttemptState.RUNNING, "running", started_at=self._started_at[backend_id])
        self._started_at.pop(backend_id, None)
        if listed_state is None:
            return self._missing(backend_id)
        try:
            info = self.client.api.inspect_container(backend_id)
        except NotFound:
            return self._missing(backend_id)
        memory = (info.get("HostConfig") or {}).get("Memory") or None
        status = classify(info.get("State") or {}, self._marked("preempted", backend_id),
                          self._marked("cancelled", backend_id), memory)
        if status.state is AttemptState.RUNNING and status.started_at and listed_state == "running":
            self._started_at[backend_id] = status.started_at
        return status

    def _missing(self, backend_id: str) -> AttemptStatus:
        if self._marked("cancelled", backend_id):
            return AttemptStatus(AttemptState.CANCELLED, "cancelled (container removed)")
        if self._marked("preempted", backend_id):
            return AttemptStatus(AttemptState.PREEMPTED, "killed by the preemptor (container removed)")
        return AttemptStatus(AttemptState.FAILED, "container not found (removed outside the runner)")

    # ------------------------------------------------------------------ preempt, cancel, remove

    def preempt(self, backend_id: str, mode: str) -> bool:
        """Record a preemption marker, then SIGKILL the container; return False if it had ended."""
        marker = self._marker("preempted", backend_id)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"mode": mode, "at": time.time()}) + "\n", encoding="utf-8")
        if not self._signal(backend_id, "SIGKILL"):
            marker.unlink(missing_ok=True)  # it ended on its own: not the preemptor's doing
            return False
        return True

    def notify(self, backend_id: str) -> bool:
        """Send SIGTERM (a preemption notice by signal); return False if the container had ended."""
        return self._signal(backend_id, "SIGTERM")

    def _signal(self, backend_id: str, name: str) -> bool:
        try:
            self.client.api.kill(backend_id, signal=name)
        except NotFound:
            return False
        except APIError as exc:
            if exc.status_code == 409:  # not running
                return False
            raise BackendError(one_line(f"cannot send {name} to {backend_id[:12]}: {_explain(exc)}")) from exc
        except _ENGINE_ERRORS as exc:
            raise BackendError(_unreachable(exc)) from exc
        return True

    def cancel(self, backend_id: str) -> None:
        """Record a cancel marker, then stop the container (SIGTERM, SIGKILL after 10 s)."""
        marker = self._marker("cancelled", backend_id)
        marker.parent.mkdir(parents=True, exist_ok=True)
        if not marker.exists():
            marker.write_text(json.dumps({"at": time.time()}) + "\n", encoding="utf-8")
        try:
            self.client.api.stop(backend_id, timeout=STOP_TIMEOUT)
        except NotFound:
            return
        except APIError as exc:
            raise BackendError(one_line(f"cannot stop {backend_id[:12]}: {_explain(exc)}")) from exc
        except _ENGINE_ERRORS as exc:
            raise BackendError(_unreachable(exc)) from exc

    def remove(self, backend_id: str) -> None:
        """Remove the container (forcibly) and its markers; a missing container is fine."""
        try:
            self.client.api.remove_container(backend_id, force=True)
        except NotFound:
            pass
        except APIError as exc:
            raise BackendError(one_line(f"cannot remove {backend_id[:12]}: {_explain(exc)}")) from exc
        except _ENGINE_ERRORS as exc:
            raise BackendError(_unreachable(exc)) from exc
        for kind in ("preempted", "cancelled"):
            self._marker(kind, backend_id).unlink(missing_ok=True)
        self._started_at.pop(backend_id, None)

    def _discard(self, backend_id: str) -> None:
        try:
            self.client.api.remove_container(backend_id, force=True)
        except _ENGINE_ERRORS:
            log.warning("could not remove the container %s that failed to start", backend_id[:12])

    def _marker(self, kind: str, backend_id: str) -> Path:
        if not backend_id or "/" in backend_id or backend_id.startswith("."):
            raise BackendError(f"{backend_id!r} is not a container id; pass the id submit() returned")
        return self.home / "local" / kind / backend_id

    def _marked(self, kind: str, backend_id: str) -> bool:
        return self._marker(kind, backend_id).exists()

    # ------------------------------------------------------------------ logs, find, close

    def logs(self, backend_id: str, follow: bool = False) -> Iterator[str]:
        """Yield the container's stdout and stderr lines, decoded; follow them while it runs."""
        try:
            stream = self.client.api.logs(backend_id, stdout=True, stderr=True, stream=True, follow=follow)
        except NotFound:
            raise BackendError(f"no container {backend_id[:12]}: it was removed; "
                               "its logs are gone with it") from None
        except _ENGINE_ERRORS as exc:
            raise BackendError(_engine_error(exc, f"cannot read the logs of {backend_id[:12]}")) from exc
        pending = b""
        for chunk in stream:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode("utf-8", "replace").rstrip("\r")
        if pending:
            yield pending.decode("utf-8", "replace").rstrip("\r")

    def find(self, sub: Submission) -> str | None:
        """Return the id of the container labelled with ``sub``'s key, or None."""
        try:
            rows = self.client.api.containers(all=True, filters={"label": f"{LABEL_KEY}={sub.key}"})
        except _ENGINE_ERRORS as exc:
            raise BackendError(_engine_error(exc, "cannot list containers")) from exc
        return str(rows[0]["Id"]) if rows else None

    def close(self) -> None:
        """Close the Docker client if this backend created it."""
        if self._owns_client:
            self.client.close()

    def _warn_once(self, topic: str, message: str) -> None:
        if topic not in self._warned:
            self._warned.add(topic)
            log.warning("%s", message)


# ---------------------------------------------------------------------------- helpers


def check_data_folder(name: str, folder: str, user: tuple[int, int] | None, sample: int = 200) -> None:
    """Refuse a ``data:`` folder the container cannot read: missing, not a folder, or unreadable.

    The container runs as ``user`` (uid, gid); the folder and up to ``sample`` entries below it
    are checked with the permission bits, so a million-file dataset costs a few hundred stats.
    """
    field = f"data.{name}"
    path = Path(folder)
    try:
        path.stat()
    except FileNotFoundError:
        raise SubmitError(f"field {field!r}: {folder} does not exist; put the data there or fix the path") from None
    except OSError as exc:
        raise SubmitError(f"field {field!r}: cannot look at {folder} ({exc.strerror}); fix its permissions") from None
    if not path.is_dir():
        raise SubmitError(f"field {field!r}: {folder} is not a folder; give the folder that holds the data")
    checked = 0
    for dirpath, dirs, files in os.walk(folder, followlinks=False):
        for entry in [dirpath, *(os.path.join(dirpath, f) for f in files)]:
            try:
                st = os.stat(entry)
            except OSError as exc:
                raise SubmitError(f"field {field!r}: cannot read {entry} ({exc.strerror}); "
                                  "fix its permissions") from None
            if not _readable_by(st, user, is_dir=entry == dirpath):
                who = "the task's user" if user is None else f"uid {user[0]} (the task's user)"
                fix = "chmod -R a+rX " + folder
                raise SubmitError(one_line(f"field {field!r}: {entry} cannot be read by {who}; "
                                           f"make the data readable: {fix}"))
            checked += 1
            if checked >= sample:
                return
        dirs.sort()


def _readable_by(st: os.stat_result, user: tuple[int, int] | None, is_dir: bool) -> bool:
    """Whether uid:gid ``user`` may read (and, for a folder, enter) what ``st`` describes."""
    need = 0o5 if is_dir else 0o4
    if user is None or user[0] == 0:
        return True
    if st.st_uid == user[0]:
        return (st.st_mode >> 6) & need == need
    if st.st_gid == user[1]:
        return (st.st_mode >> 3) & need == need
    return st.st_mode & need == need


def _numeric_user(user: str) -> tuple[int, int] | None:
    """Return (uid, gid) of a Docker USER value: '' is root, 'uid' is uid:uid; None for names."""
    if user in ("", "root", "root:root"):
        return (0, 0)
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        return None
    return (int(uid), int(gid or uid))


def _tree(folder: Path) -> Iterator[Path]:
    """Yield a folder and everything under it, without following symbolic links."""
    yield folder
    for dirpath, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            yield Path(dirpath) / name


def _epoch(text: Any) -> float | None:
    """Parse Docker's RFC 3339 time (nanoseconds, ``Z``) to epoch seconds; None for the zero time."""
    if not isinstance(text, str) or not text or text.startswith(_ZERO_TIME):
        return None
    try:
        return datetime.fromisoformat(_FRACTION.sub(r"\1", text, count=1)).timestamp()
    except ValueError:
        return None


def _size(n: int | None) -> str:
    if not n:
        return "0"
    for unit, power in (("Gi", 30), ("Mi", 20), ("Ki", 10)):
        if n >= 1 << power:
            value = n / (1 << power)
            return f"{value:.0f}{unit}" if value.is_integer() else f"{value:.1f}{unit}"
    return f"{n}B"


def _signal_name(code: int) -> str:
    if 128 < code < 128 + 65:
        try:
            return f" ({signal.Signals(code - 128).name})"
        except ValueError:
            return ""
    return ""


def _explain(exc: APIError) -> str:
    return str(exc.explanation or exc)


def _engine_error(exc: BaseException, what: str) -> str:
    """Return one line for an engine error: the engine's answer, or that it cannot be reached."""
    if isinstance(exc, APIError):
        return one_line(f"{what}: {_explain(exc)}")
    return _unreachable(exc)


def _unreachable(exc: BaseException) -> str:
    return one_line(f"cannot reach the Docker engine ({exc}): start dockerd or set DOCKER_HOST")


__all__ = ["LocalBackend", "LocalSettings", "check_data_folder", "classify"]
