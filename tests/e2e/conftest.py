"""Whole scenarios through the `runner` CLI, the watcher and the real Docker engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import docker_client, remove_labelled  # noqa: F401 - shared fixtures

ROOT = Path(__file__).resolve().parents[2]


def runner_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    return {**env, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}


def runner(*args: str, home: Path, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would; return the finished process."""
    proc = subprocess.run([sys.executable, "-m", "runner.cli", *args], capture_output=True, text=True,
                          env=runner_env(home), cwd=ROOT, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def status_json(job_id: str, home: Path) -> dict[str, Any]:
    proc = runner("status", job_id, "--json", home=home, check=True)
    return json.loads(proc.stdout)


def smoke_spec(tmp: Path, name: str = "smoke.yaml", epochs: int = 4, source: str = "cifar-smoke",
               **changes: Any) -> Path:
    """Write a copy of jobs/<source>.yaml with ``--epochs`` and top-level ``changes``."""
    data = yaml.safe_load((ROOT / "jobs" / f"{source}.yaml").read_text())
    args = list(data["args"])
    args[args.index("--epochs") + 1] = str(epochs)
    data["args"] = args
    data.update(changes)
    path = tmp / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="session")
def smoke_reference(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> dict[str, str]:
    """Final weights of uninterrupted smoke runs through `runner submit`, by epochs."""
    shas = {}
    for epochs in (4, 10):
        home = tmp_path_factory.mktemp(f"reference{epochs}")
        spec = smoke_spec(home, epochs=epochs)
        proc = runner("submit", str(spec), "--interval", "1", home=home)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        job_id = proc.stdout.split()[1]
        shas[str(epochs)] = status_json(job_id, home)["weights_sha256"]
    return shas
