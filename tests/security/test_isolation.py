"""Containers get only what they need: a non-root user, their checkpoint folder, no Docker socket.

The Docker socket is root on the host: only the control-plane services of compose.yaml (they start
task containers) mount it, and no image or task container has it. Task images run as uid 1000; a
runner started by root hands the checkpoint folder to that uid, so file:// checkpoints keep working.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.backends.base import Submission
from runner.backends.local import LocalBackend
from runner.backends.local_container import _numeric_user
from runner.spec import JobSpec, spec_from_dict
from runner.states import AttemptState
from tests.integration.conftest import CIFAR_IMAGE, docker_client  # noqa: F401 - shared fixture

ROOT = Path(__file__).resolve().parents[2]
SOCKET = "docker.sock"
TASK_DOCKERFILES = sorted([*ROOT.glob("images/*.Dockerfile"), *ROOT.glob("examples/*/Dockerfile")])
#: Images that sit on the torch base and run training: all must default to a non-root user.
TASK_IMAGES = ["localhost/runner-cifar:latest", "localhost/runner-imagenet:latest",
               "localhost/runner-bert:latest", "localhost/runner-example-plain-pytorch:latest",
               "localhost/runner-example-hf-trainer:latest"]


# ---------------------------------------------------------------------------- static checks


def _socket_mounts(service: dict[str, Any]) -> list[str]:
    found = []
    for volume in service.get("volumes") or []:
        text = volume if isinstance(volume, str) else f"{volume.get('source')}:{volume.get('target')}"
        if SOCKET in text:
            found.append(text)
    return found


def test_only_control_plane_services_mount_the_docker_socket() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    mounting = {name: svc for name, svc in compose["services"].items() if _socket_mounts(svc)}
    assert mounting, "the control plane needs the socket to start task containers"
    for name, svc in mounting.items():
        assert svc["image"].startswith("localhost/runner-control:"), f"{name} mounts the socket"
        command = svc.get("command") or ["watch"]
        # submit and watch start task containers; ui stops them (cancel) and reads their logs.
        assert command[0] in ("submit", "watch", "ui"), f"{name} mounts the socket but drives no containers"
        assert not svc.get("privileged") and "cap_add" not in svc, name
    others = {name for name in compose["services"] if name not in mounting}
    for name in others:
        assert not _socket_mounts(compose["services"][name])


@pytest.mark.parametrize("dockerfile", TASK_DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_dockerfile_touches_the_docker_socket(dockerfile: Path) -> None:
    assert SOCKET not in dockerfile.read_text()


@pytest.mark.parametrize("dockerfile", [p for p in TASK_DOCKERFILES
                                        if p.name not in ("base.Dockerfile", "control.Dockerfile")],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_task_dockerfiles_end_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    users = [line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith("USER ")]
    assert users, f"{dockerfile} has no USER line"
    assert _numeric_user(users[-1]) not in (None, (0, 0)), users[-1]


def test_readme_says_where_the_socket_is_mounted() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Security"):]
    assert "docker.sock" in section and "non-root" in section.lower()


def test_numeric_user() -> None:
    assert _numeric_user("") == (0, 0) and _numeric_user("root") == (0, 0)
    assert _numeric_user("1000:1000") == (1000, 1000) and _numeric_user("1001") == (1001, 1001)
    assert _numeric_user("runner") is None and _numeric_user("1000:runner") is None


# ---------------------------------------------------------------------------- on the engine


def _spec(command: list[str], **extra: Any) -> JobSpec:
    return spec_from_dict({"name": "isolation", "image": CIFAR_IMAGE, "command": command, "args": [],
                           "resources": {"cpus": 0.5, "memory": "256Mi"}, **extra})


def _submission(spec: JobSpec, folder: Path) -> Submission:
    job_id = f"isolation-{secrets.token_hex(3)}"
    uri = f"file://{folder}"
    return Submission(spec=spec, job_id=job_id, key=f"{job_id}-0-1", attempt=1, array_index=0,
                      checkpoint_uri=uri, env=spec.container_env(job_id, 1, uri))


@pytest.fixture
def backend(docker_client: Any, tmp_path: Path) -> Iterator[LocalBackend]:  # noqa: F811
    backend = LocalBackend(client=docker_client, home=tmp_path / "home")
    started: list[str] = []
    backend.started = started  # type: ignore[attr-defined]
    yield backend
    for backend_id in started:
        backend.remove(backend_id)


def _run(backend: LocalBackend, sub: Submission) -> tuple[str, dict[str, Any], str]:
    backend_id = backend.submit(sub)
    backend.started.append(backend_id)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while (status := backend.poll([backend_id])[backend_id]).state in (AttemptState.PENDING, AttemptState.RUNNING):
        assert time.monotonic() < deadline, "the container did not finish"
        time.sleep(0.3)
    info = backend.client.api.inspect_container(backend_id)
    output = "\n".join(backend.logs(backend_id))
    assert status.state is AttemptState.SUCCEEDED, output
    return backend_id, info, output


@pytest.mark.docker
@pytest.mark.parametrize("image", TASK_IMAGES)
def test_task_images_default_to_a_non_root_user(docker_client: Any, image: str) -> None:  # noqa: F811
    try:
        config = docker_client.api.inspect_image(image)["Config"]
    except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound
        if "example" in image and os.environ.get("RUNNER_REQUIRE_DOCKER") != "1":
            pytest.skip(f"{image} is not built")
        raise
    assert _numeric_user(config["User"]) == (1000, 1000)
    out = docker_client.containers.run(image, entrypoint=["sh", "-c", "id -u; stat -c %u /workspace; "
                                                          "touch /workspace/x && echo writable"], remove=True)
    assert out.decode().split() == ["1000", "1000", "writable"]


@pytest.mark.docker
def test_attempt_gets_only_its_checkpoint_folder_and_no_privileges(backend: LocalBackend, tmp_path: Path) -> None:
    folder = tmp_path / "ck" / "job"
    # A step left by an earlier root-run attempt: the non-root container must be able to prune it.
    (folder / "step-000001").mkdir(parents=True)
    (folder / "step-000001" / "state.pt").write_bytes(b"old")
    os.chown(folder.parent, 0, 0)
    script = ('id -u; id -g; touch "$CK_PATH/new" && rm -r "$CK_PATH/step-000001" '
              '&& echo wrote; test -e /var/run/docker.sock && echo SOCKET || echo no-socket')
    spec = _spec(["sh", "-c", script], env={"CK_PATH": "/checkpoints"})
    _, info, output = _run(backend, _submission(spec, folder))
    assert output.split() == ["1000", "1000", "wrote", "no-socket"]
    # The job's folder, at a fixed path inside: its host path (under a private home, say) never matters.
    assert [(m["Type"], m["Source"], m["Destination"], m["RW"]) for m in info["Mounts"]] == [
        ("bind", str(folder), "/checkpoints", True)]
    host = info["HostConfig"]
    assert info["Config"]["User"] == "" or _numeric_user(info["Config"]["User"]) != (0, 0)
    assert host["Privileged"] is False and not host["CapAdd"] and not host["Devices"]
    assert host["NetworkMode"] in ("default", "bridge") and host["PidMode"] == "" and host["IpcMode"] != "host"
    assert not any(SOCKET in b for b in host.get("Binds") or [])
    assert (folder / "new").stat().st_uid == 1000
    assert folder.parent.stat().st_uid == 0, "only the job's folder is handed over, not its parents"


@pytest.mark.docker
def test_host_network_only_when_the_spec_asks(backend: LocalBackend, tmp_path: Path) -> None:
    spec = _spec(["true"], local={"network": "host"})
    _, info, _ = _run(backend, _submission(spec, tmp_path / "ck"))
    assert info["HostConfig"]["NetworkMode"] == "host"


@pytest.mark.docker
def test_non_root_runner_runs_the_container_as_itself(backend: LocalBackend, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A runner started by uid 4321 (simulated) runs its attempt as 4321 and changes no ownership."""
    folder = tmp_path / "ck"
    folder.mkdir()
    os.chown(folder, 4321, 4321)
    monkeypatch.setattr(os, "geteuid", lambda: 4321)
    monkeypatch.setattr(os, "getegid", lambda: 4321)
    spec = _spec(["sh", "-c", 'id -u; touch /checkpoints/mine; touch /workspace/scratch && echo ok'])
    _, info, output = _run(backend, _submission(spec, folder))
    assert info["Config"]["User"] == "4321:4321"
    assert output.split() == ["4321", "ok"]
    assert (folder / "mine").stat().st_uid == 4321
