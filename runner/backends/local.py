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
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, NotFound

from runner.backends.base import Backend, Submission
from runner.backends.local_container import (
    LABEL_ATTEMPT,
    LABEL_INDEX,
    LABEL_JOB,
    LABEL_KEY,
    LABEL_MANAGED,
    check_data_folder,
    classify,
    run_options,
)
from runner.backends.local_setup import (
    ENGINE_ERRORS,
    LocalSettings,
    check_image_and_data,
    engine_error,
    explain,
    imitated_machine,
    refused,
    unreachable,
)
from runner.cost.table import PriceTable
from runner.errors import BackendError, BackendUnavailable, SubmitError, one_line
from runner.spec.model import JobSpec
from runner.states import AttemptState, AttemptStatus

log = logging.getLogger("runner.backends.local")

NAME_PREFIX = "spot-runner-"
STOP_TIMEOUT = 10


class LocalBackend(Backend):
    """Run each attempt as one container on the Docker engine of this machine."""

    name = "local"
    summary = "the Docker engine on this machine"
    capacities = ("spot", "on-demand")
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
        """The image is on this engine and every ``data:`` folder can be read by the task's user."""
        check_image_and_data(spec)

    @classmethod
    def machine(cls, spec: JobSpec, table: PriceTable) -> tuple[str, str, str] | None:
        """The machine ``local.imitates`` names (cloud and region filled in from the table)."""
        local = cls.settings(spec)
        return imitated_machine(local.imitates, table) if isinstance(local, LocalSettings) else None

    def __init__(self, client: docker.DockerClient | None = None, simulator_url: str | None = None,
                 home: Path | None = None) -> None:
        if client is None:
            try:
                client = docker.from_env()
            except ENGINE_ERRORS as exc:
                raise BackendError(unreachable(exc)) from exc
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
        #: Set by the preemption simulator: True for a submission that must wait (no spot capacity).
        self.hold: Callable[[Submission], bool] | None = None

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
            raise refused(exc, engine_error(exc, f"cannot inspect the image {spec.image}")) from exc
        except ENGINE_ERRORS as exc:
            raise BackendUnavailable(unreachable(exc)) from exc
        options = self._run_options(sub, str((image.get("Config") or {}).get("User") or ""))
        try:
            container = self.client.containers.create(spec.image, name=name, **options)
        except APIError as exc:
            if exc.status_code == 409:  # submitted before under this key: adopt it
                return self._adopt(name)
            raise refused(exc, one_line(f"cannot create container {name}: {explain(exc)}; "
                                         "check the job spec's image, command and resources")) from exc
        except ENGINE_ERRORS as exc:
            raise BackendUnavailable(unreachable(exc)) from exc
        if self.hold is not None and self.hold(sub):  # simulated spot capacity is gone: wait, created
            log.debug("holding %s (%s): no simulated spot capacity", name, container.id[:12])
            return str(container.id)
        try:
            container.start()
        except ENGINE_ERRORS as exc:
            reason = explain(exc) if isinstance(exc, APIError) else str(exc)
            self._discard(container.id)
            raise refused(exc, one_line(f"cannot start container {name}: {reason}; "
                                         "check the image's entrypoint and the job's command")) from exc
        log.debug("started %s (%s) from %s", name, container.id[:12], spec.image)
        return str(container.id)

    def _run_options(self, sub: Submission, image_user: str = "") -> dict[str, Any]:
        """Return the keyword arguments for ``containers.create`` (``image_user``: the image's USER)."""
        local = self.settings(sub.spec)
        return run_options(sub, self._host_info(), image_user, self._warn_once, simulator_url=self.simulator_url,
                           network=local.network if isinstance(local, LocalSettings) else None)

    def _host_info(self) -> dict[str, Any]:
        """Return the engine host's CPUs, memory and runtimes (asked once)."""
        if self._host is None:
            try:
                info = self.client.info()
            except APIError as exc:
                raise refused(exc, engine_error(exc, "cannot ask the engine about its host")) from exc
            except ENGINE_ERRORS as exc:
                raise BackendUnavailable(unreachable(exc)) from exc
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
        except NotFound as exc:  # removed since the engine said it exists: the next try creates it
            raise BackendUnavailable(one_line(f"container {name} went away while it was adopted; "
                                              "submitting again")) from exc
        except APIError as exc:  # a refusal fails the attempt; a busy engine is waited out
            raise refused(exc, one_line(f"container {name} exists but cannot be adopted: {explain(exc)}; "
                                        f"remove it with docker rm -f {name}")) from exc
        except ENGINE_ERRORS as exc:  # a reset or a timeout on the way: transient, never charged
            raise BackendUnavailable(unreachable(exc)) from exc
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
        except ENGINE_ERRORS as exc:
            unknown = AttemptStatus(AttemptState.UNKNOWN, engine_error(exc, "cannot list containers"))
            return {backend_id: unknown for backend_id in wanted}
        listed = {str(row.get("Id")): str(row.get("State") or "") for row in rows}
        result: dict[str, AttemptStatus] = {}
        for backend_id in wanted:
            try:
                result[backend_id] = self._status(backend_id, listed.get(backend_id))
            except ENGINE_ERRORS as exc:
                result[backend_id] = AttemptStatus(
                    AttemptState.UNKNOWN, engine_error(exc, f"cannot inspect {backend_id[:12]}"))
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

    def start(self, backend_id: str) -> bool:
        """Start a container created but held (simulated capacity came back); False if it cannot start."""
        try:
            self.client.api.start(backend_id)
        except NotFound:
            return False
        except APIError as exc:
            raise BackendError(one_line(f"cannot start {backend_id[:12]}: {explain(exc)}")) from exc
        except ENGINE_ERRORS as exc:
            raise BackendError(unreachable(exc)) from exc
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
            raise BackendError(one_line(f"cannot send {name} to {backend_id[:12]}: {explain(exc)}")) from exc
        except ENGINE_ERRORS as exc:
            raise BackendError(unreachable(exc)) from exc
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
            raise BackendError(one_line(f"cannot stop {backend_id[:12]}: {explain(exc)}")) from exc
        except ENGINE_ERRORS as exc:
            raise BackendError(unreachable(exc)) from exc

    def remove(self, backend_id: str) -> None:
        """Remove the container (forcibly) and its markers; a missing container is fine."""
        try:
            self.client.api.remove_container(backend_id, force=True)
        except NotFound:
            pass
        except APIError as exc:
            raise BackendError(one_line(f"cannot remove {backend_id[:12]}: {explain(exc)}")) from exc
        except ENGINE_ERRORS as exc:
            raise BackendError(unreachable(exc)) from exc
        for kind in ("preempted", "cancelled"):
            self._marker(kind, backend_id).unlink(missing_ok=True)
        self._started_at.pop(backend_id, None)

    def _discard(self, backend_id: str) -> None:
        try:
            self.client.api.remove_container(backend_id, force=True)
        except ENGINE_ERRORS:
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
        except ENGINE_ERRORS as exc:
            raise BackendError(engine_error(exc, f"cannot read the logs of {backend_id[:12]}")) from exc
        pending = b""
        for chunk in stream:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode("utf-8", "replace").rstrip("\r")
        if pending:
            yield pending.decode("utf-8", "replace").rstrip("\r")

    def find(self, sub: Submission) -> str | None:
        """Return the id of the container labelled with ``sub``'s key, or None.

        A container created but never started (its watcher was killed between the two) is started,
        unless the preemption simulator holds it, as a second submit of the key would (``_adopt``).
        """
        try:
            rows = self.client.api.containers(all=True, filters={"label": f"{LABEL_KEY}={sub.key}"})
        except ENGINE_ERRORS as exc:
            raise BackendError(engine_error(exc, "cannot list containers")) from exc
        if not rows:
            return None
        if rows[0].get("State") == "created" and not (self.hold is not None and self.hold(sub)):
            return self._adopt(str(rows[0]["Id"]))
        return str(rows[0]["Id"])

    def close(self) -> None:
        """Close the Docker client if this backend created it."""
        if self._owns_client:
            self.client.close()

    def _warn_once(self, topic: str, message: str) -> None:
        if topic not in self._warned:
            self._warned.add(topic)
            log.warning("%s", message)


__all__ = ["LABEL_ATTEMPT", "LABEL_INDEX", "LABEL_JOB", "LABEL_KEY", "LABEL_MANAGED", "LocalBackend", "LocalSettings",
           "check_data_folder", "classify"]
