"""A folder sync SIGKILLed at random points never leaves a snapshot the next attempt takes for complete.

A writer process commits version after version of a folder (files added, changed, removed,
one unchanged; a few MB each time) with ``FolderSync`` and is SIGKILLed at a random moment.
Then, as the next attempt would, a fresh ``FolderSync`` restores the folder and the test checks
that it holds exactly one whole version, at least the newest one the writer saw committed, and
that every step with a manifest in the store is complete. The store carries over from trial to
trial, so leftovers of earlier kills are in the way each time. Real stores: file:// and S3 (moto).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from runner.exec.sync import BLOBS, INDEX, FolderSync, parse_index
from runner.stores import open_store
from runner.task import manifest as mf
from tests.emulators import moto_server  # noqa: F401 - fixture
from tests.integration.conftest import docker_client, docker_containers  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[2]
TRIALS = 30

# The writer: version v of the folder is a pure function of v, so the test can rebuild it.
WRITER = r'''
import hashlib, json, os, random, shutil, sys
from pathlib import Path
from runner.exec.sync import FolderSync
from runner.stores import open_store

def content(v, name):
    rng = random.Random(f"{v}:{name}")
    size = rng.randint(1, 900_000) if name != "const.bin" else 300_000
    seed = 0 if name == "const.bin" else v
    return hashlib.sha256(f"{seed}:{name}".encode()).digest() * (size // 32) + f"{seed}".encode()

def names(v):
    return ["const.bin", "model.bin", "opt/state.bin", f"ckpt-{v}/data.bin", f"ckpt-{v}/extra.bin"][: 3 + v % 3]

def write_version(folder, v):
    for child in folder.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    listing = {}
    for name in names(v):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content(v, name)
        path.write_bytes(data)
        listing[name] = hashlib.sha256(data).hexdigest()
    (folder / "version.json").write_text(json.dumps({"v": v, "files": listing}))

uri, folder, first = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
sync = FolderSync(open_store(uri), folder, keep=2, settle=0.0)
sync.restore()
print("ready", flush=True)
v = first
while True:
    write_version(folder, v)
    result = sync.sync(final=True)
    assert result.status == "committed", result
    print("committed", v, flush=True)
    v += 1
'''


def check_store(store: Any) -> None:
    """Every step with a manifest must be whole: its index and every blob it names, sha256 included."""
    listing = mf.list_steps(store)
    for step, keys in listing.steps.items():
        if not any(k.endswith("/" + mf.MANIFEST) for k in keys):
            continue
        prefix = mf.step_prefix(step)
        manifest = mf.read_manifest(store, prefix)
        entries = parse_index(mf.read_verified(store, prefix, manifest, INDEX), prefix)
        for rel, entry in entries.items():
            data = store.read_bytes(BLOBS + entry.sha256)
            assert hashlib.sha256(data).hexdigest() == entry.sha256, f"{prefix}: {rel} is damaged"


def check_restored(folder: Path, newest_committed: int | None) -> int:
    """The folder holds exactly one whole version, at least the newest one committed; return it."""
    doc = json.loads((folder / "version.json").read_text())
    v = doc["v"]
    found = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert found == set(doc["files"]) | {"version.json"}, f"version {v}: files {sorted(found)}"
    for name, sha in doc["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == sha, f"version {v}: {name} differs"
    if newest_committed is not None:
        assert v >= newest_committed, f"restored version {v}, but {newest_committed} was committed"
    return v


def run_trials(uri: str, tmp: Path, env: dict[str, str]) -> list[tuple[str, int]]:
    rng = random.Random(7)
    store = open_store(uri)
    outcomes = []
    for trial in range(TRIALS):
        folder = tmp / f"writer-{trial}"
        folder.mkdir()
        proc = subprocess.Popen([sys.executable, "-c", WRITER, uri, str(folder), str(1000 * (trial + 1))],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                env={**os.environ, **env, "PYTHONPATH": str(ROOT)})
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", line + (proc.stderr.read() if proc.stderr else "")
        time.sleep(rng.uniform(0.0, 1.2))
        proc.kill()
        rest, errors = proc.communicate()
        assert proc.returncode == -9, errors
        committed = [int(x.split()[1]) for x in rest.splitlines() if x.startswith("committed ")]
        check_store(store)
        restored = tmp / f"restored-{trial}"
        step = FolderSync(open_store(uri), restored, keep=2).restore()
        if step is None:  # killed before any commit of the first trial
            assert trial == 0 and not committed
            outcomes.append(("nothing yet", 0))
            continue
        v = check_restored(restored, committed[-1] if committed else None)
        outcomes.append(("newest" if committed and v == committed[-1] else "in flight" if committed else "older", v))
    return outcomes


def summary(outcomes: list[tuple[str, int]]) -> str:
    kinds: dict[str, int] = {}
    for kind, _ in outcomes:
        kinds[kind] = kinds.get(kind, 0) + 1
    return ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items()))


def test_sigkill_during_sync_to_file_store(tmp_path):
    uri = f"file://{tmp_path / 'store'}"
    outcomes = run_trials(uri, tmp_path, {})
    print(f"file:// {TRIALS} trials: {summary(outcomes)}")
    assert len(outcomes) == TRIALS
    # Kills landed at different points: some mid-sync (restores an earlier version than the one
    # being written) and at least a few after many commits.
    assert sum(v > 0 for _, v in outcomes) >= TRIALS - 1
    leftovers = [k for k in open_store(uri).list(BLOBS)]
    assert len(leftovers) < 40, f"blobs are not collected: {len(leftovers)}"


def test_sigkill_during_sync_to_s3(tmp_path, moto_server, monkeypatch):  # noqa: F811
    import boto3

    for key, value in moto_server.env.items():
        monkeypatch.setenv(key, value)
    bucket = f"exec-sync-{os.getpid()}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    outcomes = run_trials(f"s3://{bucket}/job", tmp_path, moto_server.env)
    print(f"s3:// {TRIALS} trials: {summary(outcomes)}")
    assert len(outcomes) == TRIALS
    assert sum(v > 0 for _, v in outcomes) >= TRIALS - 1


NONROOT_IMAGE = "localhost/runner-test-exec-nonroot:latest"
# A user's image, as users write it: the project installed, a non-root USER, and WORKDIR /workspace,
# which Docker creates owned by root. This tree's runner is mounted over the installed one.
NONROOT_DOCKERFILE = b"""FROM localhost/runner-example-plain-pytorch:latest
USER root
RUN rm -rf /workspace && mkdir /workspace && chown root:root /workspace && chmod 755 /workspace
WORKDIR /workspace
USER 1000:1000
"""


@pytest.mark.docker
def test_a_sync_folder_the_images_user_cannot_create_is_one_line(docker_client, docker_containers):  # noqa: F811
    import io

    import docker

    try:
        docker_client.images.get("localhost/runner-example-plain-pytorch:latest")
    except docker.errors.ImageNotFound:
        from tests.integration.conftest import _unavailable

        _unavailable("localhost/runner-example-plain-pytorch:latest is missing: make image")
    docker_client.images.build(fileobj=io.BytesIO(NONROOT_DOCKERFILE), tag=NONROOT_IMAGE, rm=True)
    container = docker_containers(
        NONROOT_IMAGE, ["python", "-m", "runner.exec", "--", "python", "train.py", "--steps", "10"],
        entrypoint=[], environment={"RUNNER_SYNC_DIR": "/workspace/checkpoints", "RUNNER_NOTICE": "none",
                                    "RUNNER_CHECKPOINT_URI": "file:///tmp/ck", "PYTHONPATH": "/opt/src"},
        volumes={str(ROOT / "runner"): {"bind": "/opt/src/runner", "mode": "ro"}})
    code = container.wait(timeout=120)["StatusCode"]
    logs = container.logs().decode()
    errors = [line for line in logs.splitlines() if "ERROR" in line]
    assert code == 2, logs
    assert "Traceback" not in logs and "PermissionError" not in logs and len(errors) == 1, logs
    assert "cannot use the sync folder /workspace/checkpoints" in errors[0]
    assert "uid 1000" in errors[0] and "/workspace is owned by uid 0" in errors[0]
    assert "RUN mkdir -p /workspace/checkpoints && chown 1000 /workspace/checkpoints" in errors[0]
