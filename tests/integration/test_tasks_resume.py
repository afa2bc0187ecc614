"""ImageNet and BERT tasks resume exactly (host processes, no engine) and fail offline with one line.

Small configurations so that each run takes seconds on 2 CPUs: ResNet-18 on 16-pixel generated
images with 2 DataLoader workers; the packaged MiniLM on a generated sentiment set, 16 tokens.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from runner.task.data import EpochBatches, make_loader, sample_rng
from tests.conftest import TaskProcess, final_sha, interrupt, task_env

EXIT_PREEMPTED = 75
#: 2 epochs of 12 steps each.
IMAGENET = ("runner.tasks.imagenet",
            ["--data", "synthetic", "--arch", "resnet18", "--image-size", "16", "--train-size", "96",
             "--val-size", "32", "--classes", "4", "--batch-size", "8", "--workers", "2", "--epochs", "2",
             "--lr", "0.05", "--threads", "1", "--log-every", "1"])
BERT = ("runner.tasks.bert",
        ["--data", "synthetic-sentiment", "--model", "minilm-offline", "--max-length", "16",
         "--train-size", "96", "--test-size", "32", "--batch-size", "8", "--epochs", "2", "--lr", "1e-4",
         "--threads", "1", "--log-every", "1"])
TASKS = {"imagenet": IMAGENET, "bert": BERT}
STEPS_PER_EPOCH, TOTAL_STEPS = 12, 24


def run_to_end(module: str, args: list[str], env: dict[str, str], cwd: Path) -> TaskProcess:
    proc = TaskProcess(args, env, cwd, module=module)
    proc.finish(timeout=600)
    return proc


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Final weights sha256 of each task run uninterrupted in one process."""
    shas = {}
    for name, (module, args) in TASKS.items():
        folder = tmp_path_factory.mktemp(f"reference-{name}")
        proc = run_to_end(module, args, task_env(f"file://{folder}/ck", RUNNER_CHECKPOINT_EVERY="4"), folder)
        assert proc.proc.returncode == 0, proc.output
        assert "Traceback" not in proc.output
        shas[name] = final_sha(folder / "ck")
    return shas


@pytest.mark.parametrize("name", list(TASKS))
def test_three_interruptions_end_with_identical_weights(tmp_path, references, name):
    module, args = TASKS[name]
    rng = random.Random()
    env = task_env(f"file://{tmp_path}/ck", RUNNER_HALT_FILE=str(tmp_path / "halt.txt"),
                   RUNNER_CHECKPOINT_EVERY="4")
    # Three cuts in order, each a different kind; the first is mid-epoch (workers running).
    # The last cut leaves 9+ steps: output is read behind the process, which must not finish first.
    cuts = [rng.choice([3, 5, 6, 7]), rng.choice([9, 10, 11]), rng.choice([13, 14, 15])]
    kinds = ["sigterm", "halt", "sigkill"]
    rng.shuffle(kinds)
    history = []
    for cut, kind in zip(cuts, kinds):
        interrupt(args, env, tmp_path, cut, kind, module=module)
        if kind != "sigkill":
            step = json.loads((tmp_path / "ck" / "progress.json").read_text())["step"]
            history.append((kind, step))
        else:
            history.append((kind, cut))
    last = run_to_end(module, args, env, tmp_path)
    assert last.proc.returncode == 0, last.output
    assert f"resuming {name} from step" in last.output
    assert "Traceback" not in last.output
    assert any(step % STEPS_PER_EPOCH for _, step in history), history
    assert final_sha(tmp_path / "ck") == references[name], f"cuts {history}"
    progress = json.loads((tmp_path / "ck" / "progress.json").read_text())
    assert progress["state"] == "done" and progress["step"] == TOTAL_STEPS
    metrics = json.loads((tmp_path / "ck" / "final" / "MANIFEST.json").read_text())["metrics"]
    assert metrics, "evaluate() metrics are stored with the final weights"


@pytest.mark.parametrize("module, args, words", [
    ("runner.tasks.imagenet", ["--data-dir", "/nonexistent/imagenet", "--arch", "resnet18"],
     ["no ImageNet folders", "--data-dir", "--data synthetic"]),
    ("runner.tasks.imagenet", ["--data", "synthetic", "--arch", "resnet18", "--train-size", "16",
                               "--weights", "ResNet18_Weights.IMAGENET1K_V1"],
     ["cannot be downloaded", "--weights /path"]),
    ("runner.tasks.bert", ["--data", "synthetic-sentiment", "--model", "bert-base-uncased"],
     ["model 'bert-base-uncased' is not in the Hugging Face cache", "--model minilm-offline"]),
    ("runner.tasks.bert", ["--model", "minilm-offline", "--dataset", "ag_news"],
     ["dataset 'ag_news'", "--data-file", "--data synthetic-sentiment"]),
    ("runner.tasks.bert", ["--model", "minilm-offline", "--data-file", "/nonexistent/reviews.csv"],
     ["does not exist", "mount"]),
], ids=["imagenet-no-data", "imagenet-no-weights", "bert-no-model", "bert-no-dataset", "bert-no-file"])
def test_offline_without_data_or_model_fails_with_one_line(tmp_path, module, args, words):
    env = task_env(f"file://{tmp_path}/ck", TORCH_HOME=str(tmp_path / "torch"),
                   HF_HOME=str(tmp_path / "hf"))
    proc = run_to_end(module, [*args, "--epochs", "1", "--threads", "1"], env, tmp_path)
    assert proc.proc.returncode == 2, proc.output
    assert "Traceback" not in proc.output, proc.output
    errors = [line for line in proc.output.splitlines() if " ERROR " in line]
    assert len(errors) == 1, proc.output
    assert all(word in errors[0] for word in words), errors[0]


def test_batches_resume_at_a_position_and_leave_global_rngs_alone():
    full = list(EpochBatches(50, 8, seed=3, epoch=2))
    assert list(EpochBatches(50, 8, seed=3, epoch=2, start=4)) == full[4:]
    assert full != list(EpochBatches(50, 8, seed=3, epoch=3))
    assert sorted(i for batch in full for _, i in batch) == list(range(50))
    assert sample_rng(1, 2, 3).random() == sample_rng(1, 2, 3).random() != sample_rng(1, 2, 4).random()

    class Items(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 50

        def __getitem__(self, key):
            return torch.tensor(sample_rng(0, *key).random())

    torch.manual_seed(7)
    before = torch.get_rng_state()
    got = [b for b in make_loader(Items(), EpochBatches(50, 8, 0, 1, start=2), workers=2, seed=0, epoch=1)]
    assert torch.equal(torch.get_rng_state(), before), "creating a loader must not draw from torch's RNG"
    again = [b for b in make_loader(Items(), EpochBatches(50, 8, 0, 1, start=2), workers=0, seed=0, epoch=1)]
    assert len(got) == 5 and all(torch.equal(a, b) for a, b in zip(got, again))


def test_imagenet_reads_an_image_folder_synced_from_a_store(tmp_path):
    from PIL import Image

    bucket = tmp_path / "bucket"
    gen = torch.Generator().manual_seed(0)
    for split, count in (("train", 12), ("val", 4)):
        for label in ("cat", "dog"):
            folder = bucket / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = torch.randint(0, 256, (20 + i, 24, 3), generator=gen, dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    args = ["--data-uri", f"file://{bucket}", "--cache-dir", str(tmp_path / "cache"), "--arch", "resnet18",
            "--image-size", "16", "--batch-size", "8", "--workers", "0", "--epochs", "1", "--threads", "1"]
    proc = run_to_end("runner.tasks.imagenet", args, task_env(f"file://{tmp_path}/ck"), tmp_path)
    assert proc.proc.returncode == 0, proc.output
    assert "data imagenet: staging 32 files from file://" in proc.output
    assert "32/32 files (100%)" in proc.output and "(32 downloaded, 0 already here)" in proc.output
    assert "imagenet data: 24 train / 8 val images, 2 classes" in proc.output
    manifest = json.loads((tmp_path / "ck" / "final" / "MANIFEST.json").read_text())
    assert set(manifest["metrics"]) == {"val_top1", "val_top5"}
