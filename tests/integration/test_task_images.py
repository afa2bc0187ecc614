"""The ImageNet and BERT task images keep the container contract on the real Docker engine.

Each run is a fresh container of ``localhost/runner-imagenet:latest`` or
``localhost/runner-bert:latest`` with a host folder at ``/checkpoints``, no network:

- an interrupted run (SIGTERM mid-epoch with DataLoader workers for ImageNet, a halt file for
  BERT), resumed in a new container, ends with the same weights as an uninterrupted one;
- BERT with the offline MiniLM on a generated sentiment set reaches over 90% test accuracy in a
  few minutes on CPU; the accuracy is printed and stored with the final weights.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.docker

EXIT_PREEMPTED = 75
IMAGENET_IMAGE = "localhost/runner-imagenet:latest"
BERT_IMAGE = "localhost/runner-bert:latest"
STEP_RE = re.compile(r" step (\d+)/(\d+) ")
LABEL = "org.spot-runner.test-session"
SESSION = f"task-images-{uuid.uuid4().hex[:8]}"
#: 2 epochs of 12 steps: ResNet-18, 16-pixel generated images, 2 DataLoader workers.
IMAGENET_ARGS = ["--data", "synthetic", "--arch", "resnet18", "--image-size", "16", "--train-size", "96",
                 "--val-size", "32", "--classes", "4", "--batch-size", "8", "--workers", "2",
                 "--epochs", "2", "--lr", "0.05", "--threads", "1", "--log-every", "1"]
#: 2 epochs of 12 steps: the packaged MiniLM, 16 tokens.
BERT_ARGS = ["--data", "synthetic-sentiment", "--model", "minilm-offline", "--max-length", "16",
             "--train-size", "96", "--test-size", "32", "--batch-size", "8", "--epochs", "2",
             "--lr", "1e-4", "--threads", "1", "--log-every", "1"]
#: 2 epochs of 12 steps on 192 sentences, 200 held out.
BERT_ACCURACY_ARGS = ["--data", "synthetic-sentiment", "--model", "minilm-offline", "--max-length", "24",
                      "--train-size", "192", "--test-size", "200", "--batch-size", "16", "--epochs", "2",
                      "--lr", "1e-4", "--threads", "2", "--log-every", "4"]
ENV = {"RUNNER_CHECKPOINT_URI": "file:///checkpoints", "RUNNER_NOTICE": "none",
       "RUNNER_HALT_FILE": "/checkpoints/halt.txt", "RUNNER_CHECKPOINT_EVERY": "4"}


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    try:
        import docker

        engine = docker.from_env(timeout=120)
        engine.ping()
    except Exception as exc:  # noqa: BLE001 - no SDK or no engine: skip with the reason
        pytest.skip(f"no Docker engine ({type(exc).__name__}); start one with scripts/ensure-docker.sh")
    for image in (IMAGENET_IMAGE, BERT_IMAGE):
        try:
            engine.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.skip(f"{image} is missing: build it with scripts/build-images.sh imagenet bert")
    try:
        yield engine
    finally:
        for container in engine.containers.list(all=True, filters={"label": f"{LABEL}={SESSION}"}):
            container.remove(force=True)
        engine.close()


class Run:
    """A task container; its log read by polling."""

    def __init__(self, client: Any, image: str, folder: Path, args: list[str]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # the image runs as uid 1000, as the local backend arranges it
            for path in [folder, *folder.rglob("*")]:
                os.lchown(path, 1000, 1000)
        self.container = client.containers.run(
            image, args, detach=True, environment=ENV, labels={LABEL: SESSION}, network_disabled=True,
            volumes={str(folder): {"bind": "/checkpoints", "mode": "rw"}})

    @property
    def output(self) -> str:
        return self.container.logs().decode("utf-8", "replace")

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output
            if any(predicate(line) for line in out.splitlines()):
                return
            self.container.reload()
            if self.container.status == "exited":
                raise AssertionError(f"the container ended before the expected line:\n{out[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"timed out:\n{self.output[-3000:]}")

    def wait_step(self, step: int) -> None:
        self.wait_for(lambda line: (m := STEP_RE.search(line)) is not None and int(m.group(1)) >= step)

    def finish(self, timeout: float = 600) -> int:
        code = int(self.container.wait(timeout=timeout)["StatusCode"])
        assert "Traceback" not in self.output, self.output[-4000:]
        return code


def final_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "final" / "MANIFEST.json").read_text())


@pytest.mark.parametrize("image, args, name, kind, cut", [
    (IMAGENET_IMAGE, IMAGENET_ARGS, "imagenet", "sigterm", 7),
    (BERT_IMAGE, BERT_ARGS, "bert", "halt", 15),
], ids=["imagenet-sigterm-mid-epoch", "bert-halt-file"])
def test_interrupted_container_ends_with_identical_weights(client, tmp_path, image, args, name, kind, cut):
    whole = Run(client, image, tmp_path / "whole", args)
    assert whole.finish() == 0, whole.output[-3000:]
    reference = final_manifest(tmp_path / "whole")["weights_sha256"]

    folder = tmp_path / "cut"
    first = Run(client, image, folder, args)
    first.wait_step(cut)
    if kind == "sigterm":
        first.container.kill(signal="SIGTERM")
    else:
        (folder / "halt.txt").touch()
    assert first.finish() == EXIT_PREEMPTED, first.output[-3000:]
    stopped = json.loads((folder / "progress.json").read_text())
    assert stopped["state"] == "preempted" and 0 < stopped["step"] < 24, stopped
    assert stopped["step"] % 12, "the cut must fall inside an epoch"
    resumed = Run(client, image, folder, args)
    assert resumed.finish() == 0, resumed.output[-3000:]
    assert f"resuming {name} from step {stopped['step']} " in resumed.output
    final = final_manifest(folder)
    print(f"\n{name}: {kind} at step {stopped['step']}, resumed; sha {final['weights_sha256'][:16]}... "
          f"reference {reference[:16]}...")
    assert final["weights_sha256"] == reference


def test_bert_offline_minilm_reaches_90_percent_on_generated_sentiment(client, tmp_path):
    started = time.monotonic()
    run = Run(client, BERT_IMAGE, tmp_path / "ck", BERT_ACCURACY_ARGS)
    assert run.finish() == 0, run.output[-3000:]
    seconds = time.monotonic() - started
    final = final_manifest(tmp_path / "ck")
    accuracy = final["metrics"]["test_accuracy"]
    print(f"\nBERT (offline MiniLM-L6, 192 generated sentences, 2 epochs, CPU): test accuracy "
          f"{accuracy:.1%} in {seconds:.0f} s; stored with the final weights (sha {final['weights_sha256'][:16]}...)")
    assert "test accuracy" in run.output
    assert accuracy > 0.9, run.output[-3000:]
    assert seconds < 300
    progress = json.loads((tmp_path / "ck" / "progress.json").read_text())
    assert progress["metrics"]["test_accuracy"] == accuracy
