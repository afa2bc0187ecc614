"""Issue 7: unmodified training scripts under `runner exec` survive preemptions of both kinds.

The example images (examples/*/Dockerfile, built by `make image` as runner-example-<name>) run
through `runner submit` on the local engine with simulated preemptions: notices (exit 75 after
the folder is committed) and kills without notice. The plain PyTorch script checkpoints exactly,
so it must end with the weights of its uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import ROOT, runner, status_json
from tests.integration.conftest import _unavailable

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def example_spec(tmp: Path, name: str, args: list[str]) -> Path:
    data = yaml.safe_load((ROOT / "examples" / name / "job.yaml").read_text())
    data["args"] = args
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def need_image(client: Any, image: str) -> None:
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        _unavailable(f"image {image} is missing: run make image (scripts/build-images.sh {image.split('runner-')[1].split(':')[0]})")


def final_folder(job_id: str, home: Path, dest: Path) -> Path:
    """Restore the job's newest snapshot into ``dest``, as a next attempt would."""
    from runner.exec.sync import FolderSync
    from runner.stores import open_store

    uri = f"file://{home}/checkpoints/{job_id}"
    assert FolderSync(open_store(uri), dest).restore() is not None
    return dest


def submit(spec: Path, home: Path, *extra: str) -> tuple[str, dict[str, Any], str]:
    proc = runner("submit", str(spec), "--interval", "1", *extra, home=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = proc.stdout.split()[1]
    return job_id, status_json(job_id, home), proc.stdout


def preemption_reasons(status: dict[str, Any]) -> list[str]:
    return [a["reason"] for a in status["attempt_list"] if a["state"] == "PREEMPTED"]


def test_plain_pytorch_survives_preemptions_with_its_uninterrupted_weights(tmp_path, docker_client):
    image = "localhost/runner-example-plain-pytorch:latest"
    need_image(docker_client, image)
    args = ["--steps", "1000", "--save-every", "50"]
    reference_home, home = tmp_path / "reference", tmp_path / "preempted"
    ref_id, ref_status, _ = submit(example_spec(tmp_path, "plain-pytorch", args), reference_home)
    assert ref_status["state"] == "SUCCEEDED" and ref_status["attempts"] == 1
    reference = json.loads((final_folder(ref_id, reference_home, tmp_path / "ref-out") / "result.json").read_text())

    # 1,000 steps of at least 10 ms: longer than the four preemptions 6 s after each start.
    job_id, status, out = submit(example_spec(tmp_path, "plain-pytorch", args), home,
                                 "--simulate-preemption", "every=6s,notice=3s,mode=mixed,count=4")
    reasons = preemption_reasons(status)
    assert status["state"] == "SUCCEEDED", out
    assert len(reasons) >= 3, status["attempt_list"]
    assert any("notice" in r for r in reasons) and any("preemptor" in r for r in reasons), reasons
    folder = final_folder(job_id, home, tmp_path / "out")
    result = json.loads((folder / "result.json").read_text())
    assert result["step"] == 1000
    assert result["weights_sha256"] == reference["weights_sha256"]
    logs = runner("logs", job_id, "--attempt", "2", home=home).stdout + runner("logs", job_id, home=home).stdout
    assert "resumed from /workspace/checkpoints/last.pt" in logs
    progress = json.loads((home / "checkpoints" / job_id / "progress.json").read_text())
    assert progress["task"] == "exec" and progress["state"] == "done" and progress["step"] >= 2


def test_hf_trainer_survives_preemptions_and_finishes(tmp_path, docker_client):
    image = "localhost/runner-example-hf-trainer:latest"
    need_image(docker_client, image)
    args = ["--max-steps", "200", "--save-steps", "20"]  # 200 steps: more than two attempts of 15 s can do
    job_id, status, out = submit(example_spec(tmp_path, "hf-trainer", args), tmp_path,
                                 "--simulate-preemption", "every=15s,notice=3s,mode=mixed,count=2")
    assert status["state"] == "SUCCEEDED", out
    reasons = preemption_reasons(status)
    assert len(reasons) == 2, status["attempt_list"]
    assert any("notice" in r for r in reasons) and any("preemptor" in r for r in reasons), status["attempt_list"]
    folder = final_folder(job_id, tmp_path, tmp_path / "out")
    assert json.loads((folder / "result.json").read_text())["global_step"] == 200
    assert (folder / "checkpoint-200" / "trainer_state.json").exists()
    logs = "".join(runner("logs", job_id, "--attempt", str(n), home=tmp_path).stdout for n in (2, 3))
    assert "resuming from /workspace/checkpoints/checkpoint-" in logs


def test_hf_trainer_notices_inside_its_checkpoint_saves_leave_whole_folders(tmp_path, docker_client):
    """A notice the moment the Trainer creates checkpoint-N/: the wrapper lets the save finish, so the
    next attempt resumes from a whole folder (before, it committed checkpoint-N/ without its
    trainer_state.json, and the next attempt died in resume_from_checkpoint)."""
    image = "localhost/runner-example-hf-trainer:latest"
    need_image(docker_client, image)
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o777)  # the image runs as uid 1000
    harness = Path(__file__).with_name("hf_notice_in_save.py")
    logs = docker_client.containers.run(
        image, entrypoint=["python", "/harness.py"], command=["/work", "2", "20"], remove=True,
        volumes={str(harness): {"bind": "/harness.py", "mode": "ro"}, str(work): {"bind": "/work", "mode": "rw"}})
    trials = [json.loads(line) for line in logs.decode().splitlines() if line.startswith("{")]
    assert len(trials) == 2, logs.decode()[-3000:]
    for trial in trials:
        assert trial["noticed_with"], trial  # the notice came while a checkpoint folder was being saved
        assert trial["first"] == 75 and trial["second"] == 0, trial
        assert trial["resumed"] and trial["resumed"][0].startswith("resuming from"), trial
