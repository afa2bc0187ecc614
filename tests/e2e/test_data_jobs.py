"""jobs/cifar.yaml and jobs/imagenet.yaml, as shipped, on data folders in the real on-disk formats.

The datasets cannot be downloaded here, so the tests write small ones in exactly the layouts the
tasks read: CIFAR-10's python batches (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``,
pickled dicts of uint8 rows and labels) and ImageNet's ImageFolder tree of JPEG files
(``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``). Each job runs through ``runner submit`` with the
spec's ``data:`` pointed at the folder (``--set``) and its size cut down from the command line
(``--args``), once uninterrupted and once through simulated preemptions of both kinds; both must
end with the same final weights.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.e2e.conftest import ROOT, runner, status_json

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def write_cifar(folder: Path, per_batch: int = 400, seed: int = 0) -> Path:
    """Write CIFAR-10 python batches: 5 train batches and a test batch of ``per_batch`` images each."""
    rng = np.random.default_rng(seed)
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    patterns = rng.integers(0, 256, size=(10, 3072), dtype=np.uint8)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        labels = rng.integers(0, 10, size=per_batch)
        noise = rng.integers(-40, 40, size=(per_batch, 3072))
        data = np.clip(patterns[labels].astype(int) + noise, 0, 255).astype(np.uint8)
        entry = {"batch_label": name.encode(), "labels": labels.tolist(), "data": data,
                 "filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)]}
        with open(batches / name, "wb") as fh:
            pickle.dump(entry, fh, protocol=2)
    with open(batches / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch,
                     "num_vis": 3072}, fh, protocol=2)
    return folder


def write_imagenet(folder: Path, classes: int = 4, train: int = 12, val: int = 4, side: int = 48) -> Path:
    """Write an ImageFolder tree of JPEGs named as ILSVRC2012's (``n0144...``)."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for c in range(classes):
        wnid = f"n{1440764 + c:08d}"
        base = rng.integers(0, 256, size=3)
        for split, count in (("train", train), ("val", val)):
            out = folder / split / wnid
            out.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(base + rng.integers(-60, 60, size=(side, side, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(out / f"{wnid}_{i:05d}.JPEG", quality=90)
    return folder


def submit(spec: str, home: Path, data: Path, args: str, *extra: str) -> dict[str, Any]:
    name = "cifar10" if "cifar" in spec else "imagenet"
    proc = runner("submit", str(ROOT / "jobs" / spec), "--set", f"data.{name}={data}",
                  "--set", "resources.cpus=2", "--set", "resources.memory=3Gi", "--set", "checkpoint.every=5",
                  f"--args={args}", "--interval", "1", *extra, home=home, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    job_id = proc.stdout.split()[1]
    return {"status": status_json(job_id, home), "output": out}


# Long enough (about 10 s of training on a quiet machine) that a preemption 4 s into each attempt lands.
CIFAR_ARGS = "--epochs 6 --batch-size 50 --train-size 2000"
IMAGENET_ARGS = "--epochs 6 --batch-size 8 --image-size 32 --workers 1 --lr 0.01"


@pytest.mark.parametrize("spec,make,args", [("cifar.yaml", write_cifar, CIFAR_ARGS),
                                            ("imagenet.yaml", write_imagenet, IMAGENET_ARGS)],
                         ids=["cifar", "imagenet"])
def test_shipped_job_on_a_real_format_folder_survives_preemptions(tmp_path: Path, spec: str, make: Any,
                                                                   args: str) -> None:
    data = make(tmp_path / "dataset")
    plain = submit(spec, tmp_path / "home-plain", data, args)
    assert plain["status"]["state"] == "SUCCEEDED"
    if spec == "cifar.yaml":
        assert "reading them as CIFAR-10 python batches" in runner(
            "logs", plain["status"]["job_id"], home=tmp_path / "home-plain").stdout
    broken = submit(spec, tmp_path / "home-preempted", data, args,
                    "--simulate-preemption", "every=4s,notice=2s,mode=mixed,count=2,seed=3")
    status = broken["status"]
    assert status["state"] == "SUCCEEDED", broken["output"][-3000:]
    assert status["preemptions"] >= 1, broken["output"][-3000:]
    assert status["weights_sha256"] == plain["status"]["weights_sha256"]


def test_a_wrong_data_folder_is_one_line_naming_the_field(tmp_path: Path) -> None:
    missing = runner("submit", str(ROOT / "jobs" / "cifar.yaml"), "--set", f"data.cifar10={tmp_path}/nope",
                     home=tmp_path / "home")
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "field 'data.cifar10'" in missing.stderr and "does not exist" in \
        missing.stderr
    afile = tmp_path / "afile"
    afile.write_text("x")
    not_dir = runner("submit", str(ROOT / "jobs" / "cifar.yaml"), "--set", f"data.cifar10={afile}",
                     home=tmp_path / "home")
    assert not_dir.returncode == 2 and "is not a folder" in not_dir.stderr
    if os.geteuid() == 0:  # root's runner hands the task to uid 1000, which must be able to read the data
        locked = write_cifar(tmp_path / "locked")
        (locked / "cifar-10-batches-py" / "test_batch").chmod(0o600)
        unreadable = runner("submit", str(ROOT / "jobs" / "cifar.yaml"), "--set", f"data.cifar10={locked}",
                            home=tmp_path / "home")
        assert unreadable.returncode == 2 and "cannot be read by uid 1000" in unreadable.stderr
        assert "chmod -R a+rX" in unreadable.stderr
    web = runner("submit", str(ROOT / "jobs" / "cifar.yaml"), "--set", "data.cifar10=http://x/y",
                 home=tmp_path / "home")
    assert web.returncode == 2 and "field 'data.cifar10'" in web.stderr and "not supported" in web.stderr
