"""A local attempt's container, read and prepared: its state as an AttemptStatus, its options, its mounts.

:func:`run_options` builds the ``containers.create`` arguments of an attempt (labels, limits
capped to the engine's host, GPUs, mounts, user, network).

:func:`classify` maps a ``docker inspect`` State (plus the runner's own markers: the engine cannot
tell a preemption from any other SIGKILL) onto an :class:`AttemptStatus`, purely.
:func:`check_data_folder` refuses a ``data:`` folder the container's user cannot read, with one line
naming the field and the ``chmod`` that fixes it.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from runner import contract
from runner.backends.base import Submission
from runner.backends.cloud import EXIT_REASONS, exit_state
from runner.errors import SubmitError, one_line
from runner.states import AttemptState, AttemptStatus

EXIT_SIGKILL = 128 + signal.SIGKILL
LABEL_MANAGED = "spot-runner.managed"
LABEL_JOB = "spot-runner.job"
LABEL_KEY = "spot-runner.key"
LABEL_ATTEMPT = "spot-runner.attempt"
LABEL_INDEX = "spot-runner.index"
HOST_GATEWAY = {"host.docker.internal": "host-gateway"}
_ZERO_TIME = "0001-01-01"
_FRACTION = re.compile(r"(\.\d{1,6})\d*")


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
    if exit_state(exit_code) in EXIT_REASONS:
        state = exit_state(exit_code)
        assert state is not None
        return status_of(state, EXIT_REASONS[state])
    if preempted and exit_code == EXIT_SIGKILL:
        return status_of(AttemptState.PREEMPTED, "killed by the preemptor")
    if state.get("OOMKilled"):
        limit = f"limit {_size(memory_limit)}" if memory_limit else "no limit set"
        return status_of(AttemptState.FAILED, f"out of memory ({limit})")
    return status_of(AttemptState.FAILED, f"exit {exit_code}{_signal_name(exit_code)}")


def run_options(sub: Submission, host: dict[str, Any], image_user: str, warn: Callable[[str, str], None],
                simulator_url: str | None = None, network: str | None = None) -> dict[str, Any]:
    """The keyword arguments of ``containers.create`` for ``sub``; ``host``: the engine host's
    ``cpus``, ``memory`` and ``runtimes``; ``warn(topic, text)``: says once what was capped."""
    from docker.types import DeviceRequest

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
    if simulator_url:
        env["RUNNER_METADATA_URL"] = f"{simulator_url}/ns/{sub.key}"
        options["extra_hosts"] = dict(HOST_GATEWAY)
    cpus, memory = res.cpus, res.memory_bytes
    if host["cpus"] and cpus > host["cpus"]:
        warn("cpus", f"{res.cpus:g} CPUs asked but the engine's host has {host['cpus']}; capping to {host['cpus']}")
        cpus = host["cpus"]
    if host["memory"] and memory > host["memory"]:
        warn("memory", f"{res.memory} of memory asked but the engine's host has {_size(host['memory'])}; "
                       "capping to that")
        memory = host["memory"]
    # DataLoader workers pass batches through /dev/shm; Docker's 64 MB default is too small.
    options.update(nano_cpus=int(cpus * 1e9), mem_limit=memory, memswap_limit=memory,
                   shm_size=max(64 << 20, memory // 2))
    if res.gpus:
        if "nvidia" in host["runtimes"]:
            options["device_requests"] = [DeviceRequest(count=res.gpus, capabilities=[["gpu"]])]
        else:
            warn("gpus", f"{res.gpus} GPU(s) asked but the engine has no nvidia runtime; "
                         "running on CPU (install nvidia-container-toolkit for GPUs)")
    volumes, changed = mounts(sub, image_user, warn)
    env.update(changed)
    if volumes:
        options["volumes"] = volumes
    if os.geteuid() != 0:  # run as the invoking user: the files it writes stay theirs
        options["user"] = f"{os.geteuid()}:{os.getegid()}"
    options["environment"] = env
    if network:
        options["network"] = network
    return options


def mounts(sub: Submission, image_user: str, warn: Callable[[str, str], None]) -> tuple[dict[str, Any], dict[str, str]]:
    """Return the container's volumes and the environment they change: the checkpoint folder at
    ``/checkpoints`` (created, and handed to the image's uid by a root runner) and each ``data:``
    folder read-only at ``/data/<name>`` (checked readable by the container's user)."""
    volumes: dict[str, Any] = {}
    env: dict[str, str] = {}
    if sub.checkpoint_uri.startswith("file://"):
        folder = sub.checkpoint_uri[len("file://"):]
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SubmitError(f"cannot create the checkpoint folder {folder}: {exc.strerror}; "
                              "fix checkpoint.uri or the folder's permissions") from exc
        hand_over(folder, image_user, sub.spec.image, warn)
        volumes[folder] = {"bind": contract.CONTAINER_CHECKPOINT_DIR, "mode": "rw"}
        env[contract.CHECKPOINT_URI] = f"file://{contract.CONTAINER_CHECKPOINT_DIR}"
    for name, folder in sub.spec.local_data().items():
        check_data_folder(name, folder, container_user(image_user))
        volumes[folder] = {"bind": f"{contract.CONTAINER_DATA_DIR}/{name}", "mode": "ro"}
    return volumes, env


def container_user(image_user: str) -> tuple[int, int] | None:
    """Return the uid:gid a container runs as (None: a named user the runner cannot tell).

    A runner started by root runs the image's USER; one started by another user runs as that user.
    """
    if os.geteuid() != 0:
        return (os.geteuid(), os.getegid())
    return _numeric_user(image_user)


def hand_over(folder: str, image_user: str, image: str, warn: Callable[[str, str], None]) -> None:
    """Make a root runner's checkpoint folder (only it, not its parents) writable by the image's uid:gid."""
    if os.geteuid() != 0:
        return
    owner = _numeric_user(image_user)
    if owner is None:
        warn("user", f"{image} runs as user {image_user!r}: give its USER as uid:gid "
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
