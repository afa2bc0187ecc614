"""CIFAR-10 with the classic small CNN (two conv layers, three fully connected).

    python -m runner.tasks.cifar --data synthetic --epochs 2      # offline, generated data
    python -m runner.tasks.cifar --data cifar10 --data-dir /data   # the real set (downloads if absent)

Batches are drawn by index from tensors held in memory, in an order that depends only on
(seed, epoch), so a resume starts at any batch without replaying the ones before it.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from runner.errors import ConfigError
from runner.task.entry import add_common_flags, exit_with, main
from runner.task.loop import ModelState

log = logging.getLogger("runner.tasks.cifar")
CLASSES = 10


class Net(nn.Module):
    """The CNN of the PyTorch CIFAR-10 tutorial."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def synthetic(size: int, seed: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Return a deterministic, learnable CIFAR-shaped set: class patterns plus noise (uint8)."""
    templates_gen = torch.Generator().manual_seed(1234)  # the classes are the same for every split
    templates = F.interpolate(torch.rand(CLASSES, 3, 8, 8, generator=templates_gen), size=32,
                              mode="bilinear", align_corners=False)
    gen = torch.Generator().manual_seed(seed * 2 + (0 if split == "train" else 1))
    labels = torch.randint(0, CLASSES, (size,), generator=gen)
    noise = torch.randn(size, 3, 32, 32, generator=gen) * 0.35
    images = (templates[labels] + noise).clamp(0, 1).mul(255).round().to(torch.uint8)
    return images, labels


def cifar10(data_dir: Path, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a CIFAR-10 split from ``data_dir`` (torchvision's layout: ``cifar-10-batches-py/``).

    torchvision reads the published files (and downloads them when ``download``); batches in the
    same format whose checksums differ (a subset, a re-export) are read directly, with a warning.
    """
    import torchvision

    folder = data_dir / torchvision.datasets.CIFAR10.base_folder
    try:
        ds = torchvision.datasets.CIFAR10(root=str(data_dir), train=train, download=download)
        images, labels = np.asarray(ds.data), ds.targets
    except (RuntimeError, OSError) as exc:  # not found, checksums differ, or the download failed (offline)
        if not folder.is_dir():
            raise ConfigError(
                f"CIFAR-10 is not in {data_dir} and could not be downloaded ({str(exc).splitlines()[0][:120]}): "
                f"put the python batches at {folder} (data_batch_1..5, test_batch; a job mounts a folder "
                "holding them with its spec's data: field, see the README), or use --data synthetic for a "
                "generated set") from None
        log.warning("%s: the batches differ from the published CIFAR-10 (checksums); reading them as "
                    "CIFAR-10 python batches", folder)
        images, labels = read_batches(folder, train)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels, dtype=torch.long)


def read_batches(folder: Path, train: bool) -> tuple[np.ndarray, list[int]]:
    """Read CIFAR-10 python batches (pickled dicts of ``data`` N x 3072 uint8 and ``labels``)."""
    import pickle

    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    data, labels = [], []
    for name in names:
        path = folder / name
        try:
            with open(path, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")  # noqa: S301 - the user's own dataset, as torchvision
            data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels += [int(x) for x in entry.get("labels", entry.get("fine_labels", []))]
        except FileNotFoundError:
            raise ConfigError(f"{path} is missing: CIFAR-10 needs data_batch_1..5 and test_batch") from None
        except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as exc:
            raise ConfigError(f"{path} is not a CIFAR-10 python batch ({type(exc).__name__}); "
                              "download the python version of CIFAR-10") from None
    images = np.concatenate(data).transpose(0, 2, 3, 1)  # N x 32 x 32 x 3, as torchvision keeps it
    if len(labels) != len(images):
        raise ConfigError(f"{folder}: {len(images)} images but {len(labels)} labels; the batches are damaged")
    return images, labels


class CifarTask(ModelState):
    """CIFAR-10 training for the shared loop."""

    name = "cifar"

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.epochs = args.epochs
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        if args.data == "synthetic":
            self.train_x, self.train_y = synthetic(args.train_size, args.seed, "train")
            self.test_x, self.test_y = synthetic(args.test_size, args.seed, "test")
        else:
            data_dir = Path(args.data_dir)
            self.train_x, self.train_y = cifar10(data_dir, True, args.download)
            self.test_x, self.test_y = cifar10(data_dir, False, args.download)
            if args.train_size:
                self.train_x, self.train_y = self.train_x[:args.train_size], self.train_y[:args.train_size]
        log.info("%s data: %d train / %d test images, batch %d, %d steps per epoch", args.data,
                 len(self.train_y), len(self.test_y), args.batch_size, self.steps_per_epoch())
        self.model = Net().to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=args.lr, momentum=0.9,
                                         weight_decay=5e-4)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=self.steps_per_epoch() * self.epochs)

    def config(self) -> dict[str, Any]:
        a = self.args
        return {"data": a.data, "train_size": len(self.train_y), "batch_size": a.batch_size,
                "lr": a.lr, "seed": a.seed, "epochs": a.epochs}

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_y) / self.args.batch_size)

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(self.device, torch.float32) / 255.0 - 0.5) / 0.5

    def batches(self, epoch: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.train_y),
                               generator=torch.Generator().manual_seed(self.args.seed * 100_003 + epoch))
        size = self.args.batch_size
        for i in range(start, self.steps_per_epoch()):
            idx = order[i * size:(i + 1) * size]
            yield self._images(self.train_x[idx]), self.train_y[idx].to(self.device)

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        images, labels = batch
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(images), labels)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())



    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        correct = 0
        for i in range(0, len(self.test_y), 500):
            logits = self.model(self._images(self.test_x[i:i + 500]))
            correct += int((logits.argmax(1).cpu() == self.test_y[i:i + 500]).sum())
        self.model.train()
        return {"test_accuracy": correct / max(1, len(self.test_y))}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runner.tasks.cifar", description=__doc__.splitlines()[0])
    add_common_flags(p)
    p.add_argument("--data", choices=("cifar10", "synthetic"), default="cifar10",
                   help="the real CIFAR-10 set, or a generated one for offline runs (explicit only)")
    p.add_argument("--data-dir", default="/data", help="where CIFAR-10 is or is downloaded to")
    p.add_argument("--no-download", dest="download", action="store_false",
                   help="never download; fail if the data is not in --data-dir")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--train-size", type=int, default=None,
                   help="number of training images (synthetic default 5000; real: all)")
    p.add_argument("--test-size", type=int, default=1000, help="synthetic test images")
    return p


def build(args: argparse.Namespace) -> CifarTask:
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    if args.data == "synthetic" and not args.train_size:
        args.train_size = 5000
    return CifarTask(args)


if __name__ == "__main__":
    exit_with(main(parser(), build))
