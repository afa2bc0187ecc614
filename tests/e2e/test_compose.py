"""`docker compose up` runs the CIFAR smoke job under the runner through simulated preemptions."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid

import pytest

from tests.e2e.conftest import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
    if probe.returncode == 0:
        return ["docker", "compose"]
    if os.environ.get("RUNNER_REQUIRE_DOCKER") == "1":
        pytest.fail("neither docker-compose nor the docker compose plugin is installed")
    pytest.skip("neither docker-compose nor the docker compose plugin is installed")


def test_compose_up_survives_three_preemptions(tmp_path, docker_client):
    try:
        docker_client.images.get("localhost/runner-control:latest")
    except Exception:  # noqa: BLE001
        pytest.fail("localhost/runner-control:latest is missing: run `make image`")
    compose = compose_command()
    project = f"spotrunnertest{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "RUNNER_HOME_HOST": str(tmp_path), "RUNNER_SIM_PORT": "18170"}
    try:
        proc = subprocess.run([*compose, "-p", project, "up", "--exit-code-from", "runner"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=600)
    finally:
        subprocess.run([*compose, "-p", project, "down"], cwd=ROOT, env=env, capture_output=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    preempted = re.findall(r"attempt \d+ preempted: (.*)", out)
    assert len(preempted) >= 3, out[-4000:]
    assert "preemption notice" in out and "without notice (bus)" in out, out[-4000:]
    assert "SUCCEEDED" in out and "final weights sha256" in out
