"""ImageNet classification with a torchvision ResNet (ResNet-50 by default), SGD with momentum.

    python -m runner.tasks.imagenet --data-dir /data/imagenet            # train/ and val/ folders
    python -m runner.tasks.imagenet --data-uri s3://bucket/imagenet      # synced to local disk first
    python -m runner.tasks.imagenet --data synthetic --arch resnet18 --image-size 32   # offline

The standard transforms (RandomResizedCrop + horizontal flip for training, Resize + CenterCrop
for validation) draw from a generator seeded by (seed, epoch, sample index), never from a
worker's global RNG, and the batch order depends on (seed, epoch) only: a resume starts at the
next batch of the epoch, with any number of DataLoader workers, and ends with the same weights.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from runner.errors import ConfigError
from runner.task.data import Amp, EpochBatches, make_loader, pick_device, sample_rng, steps_per_epoch
from runner.task.loop import ModelState
from runner.task.entry import add_common_flags, exit_with, main
from runner.task.staging import sync_prefix

log = logging.getLogger("runner.tasks.imagenet")
ARCHS = ("resnet50", "resnet18", "resnet34", "resnet101")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


# -- the transforms, with an explicit generator ------------------------------------------------

def random_resized_crop_box(width: int, height: int, rng: random.Random,
                            scale: tuple[float, float] = (0.08, 1.0),
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """Return (top, left, height, width) as torchvision's RandomResizedCrop picks them."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _normalize(image: Any) -> torch.Tensor:
    from torchvision.transforms import functional as TF

    return TF.normalize(TF.to_tensor(image), MEAN, STD)


def train_transform(image: Any, size: int, rng: random.Random) -> torch.Tensor:
    """RandomResizedCrop(size) + RandomHorizontalFlip + normalize, drawing only from ``rng``."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    top, left, h, w = random_resized_crop_box(image.width, image.height, rng)
    image = TF.resized_crop(image, top, left, h, w, [size, size], InterpolationMode.BILINEAR, antialias=True)
    if rng.random() < 0.5:
        image = TF.hflip(image)
    return _normalize(image)


def val_transform(image: Any, size: int) -> torch.Tensor:
    """Resize(size / 0.875) + CenterCrop(size) + normalize."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    image = TF.resize(image, int(round(size / 0.875)), InterpolationMode.BILINEAR, antialias=True)
    return _normalize(TF.center_crop(image, [size, size]))


# -- datasets: (epoch, index) -> (image tensor, label) ------------------------------------------

class ImageSet(Dataset[tuple[torch.Tensor, int]]):
    """Images with labels, transformed per (seed, epoch, index); ``train`` picks the transforms."""

    def __init__(self, size: int, seed: int, train: bool) -> None:
        self.image_size, self.seed, self.train = size, seed, train

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> tuple[Any, int]:
        raise NotImplementedError

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key
        image, label = self.load(index)
        if self.train:
            return train_transform(image, self.image_size, sample_rng(self.seed, epoch, index)), label
        return val_transform(image, self.image_size), label


class FolderSet(ImageSet):
    """An ImageFolder layout (one sub-folder per class), read with PIL."""

    def __init__(self, root: Path, classes: list[str], size: int, seed: int, train: bool) -> None:
        super().__init__(size, seed, train)
        self.class_names = classes
        self.samples: list[tuple[str, int]] = []
        for label, name in enumerate(classes):
            folder = root / name
            if not folder.is_dir():
                continue
            for dirpath, _, files in sorted(os.walk(folder)):
                self.samples += [(os.path.join(dirpath, f), label) for f in sorted(files)
                                 if f.lower().endswith(IMAGE_SUFFIXES)]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as img:
            return img.convert("RGB"), label


class SyntheticSet(ImageSet):
    """A generated ImageFolder-shaped set held in memory: class patterns plus noise, as PIL images."""

    def __init__(self, count: int, classes: int, size: int, seed: int, train: bool) -> None:
        super().__init__(size, seed, train)
        side = max(16, int(round(size / 0.875)) + 4)
        patterns = F.interpolate(torch.rand(classes, 3, 4, 4, generator=torch.Generator().manual_seed(4321)),
                                 size=side, mode="bilinear", align_corners=False)
        gen = torch.Generator().manual_seed(seed * 2 + (0 if train else 1))
        self.labels = torch.randint(0, classes, (count,), generator=gen)
        noise = torch.randn(count, 3, side, side, generator=gen) * 0.25
        pixels = (patterns[self.labels] + noise).clamp(0, 1).mul(255).round().to(torch.uint8)
        self.pixels = pixels.permute(0, 2, 3, 1).contiguous().numpy()

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        return Image.fromarray(np.ascontiguousarray(self.pixels[index])), int(self.labels[index])


def folder_sets(root: Path, size: int, seed: int) -> tuple[FolderSet, FolderSet]:
    """Return the train and val sets of an ImageNet-style folder (``train/<class>/``, ``val/<class>/``)."""
    train_dir, val_dir = root / "train", root / "val"
    if not train_dir.is_dir() or not val_dir.is_dir():
        raise ConfigError(
            f"no ImageNet folders in {root} (expected {train_dir}/<class>/*.JPEG and {val_dir}/<class>/*.JPEG): "
            "mount the data and pass --data-dir, pass --data-uri with a bucket, or use --data synthetic")
    classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
    train, val = FolderSet(train_dir, classes, size, seed, True), FolderSet(val_dir, classes, size, seed, False)
    if len(train) == 0:
        raise ConfigError(f"no images under {train_dir}: mount the data and pass --data-dir, or use --data synthetic")
    return train, val


def build_model(arch: str, classes: int, weights: str | None) -> torch.nn.Module:
    """Return a torchvision ResNet, from scratch, from named torchvision weights, or from a file."""
    import torchvision

    factory = getattr(torchvision.models, arch)
    if not weights:
        return factory(num_classes=classes)  # type: ignore[no-any-return]
    if os.path.isfile(weights):
        model = factory(num_classes=classes)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"cannot read weights from {weights} ({type(exc).__name__}): "
                              "pass a state_dict saved with torch.save") from None
        state = state.get("model", state) if isinstance(state, dict) else state
        missing = model.load_state_dict(state, strict=False)
        log.info("weights from %s (missing %d, unexpected %d keys)", weights,
                 len(missing.missing_keys), len(missing.unexpected_keys))
        return model  # type: ignore[no-any-return]
    try:
        spec = torchvision.models.get_weight(weights)
    except (ValueError, KeyError, AttributeError):
        raise ConfigError(f"--weights {weights!r} is neither a file nor a torchvision weights name "
                          "(e.g. ResNet50_Weights.IMAGENET1K_V2)") from None
    try:
        model = factory(weights=spec)
    except Exception as exc:  # noqa: BLE001 - offline: urllib errors of every kind
        raise ConfigError(
            f"torchvision weights {weights} are not in the torch hub cache and cannot be downloaded "
            f"({type(exc).__name__}): mount the file and pass --weights /path/to/weights.pth, "
            "or train from scratch without --weights") from None
    if classes != model.fc.out_features:
        model.fc = torch.nn.Linear(model.fc.in_features, classes)
    return model  # type: ignore[no-any-return]


class ImageNetTask(ModelState):
    """ResNet training on ImageNet-style folders for the shared loop."""

    name = "imagenet"

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.epochs = args.epochs
        self.device = pick_device(args.device)
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        if args.data == "synthetic":
            self.train_set: ImageSet = SyntheticSet(args.train_size, args.classes, args.image_size, args.seed, True)
            self.val_set: ImageSet = SyntheticSet(args.val_size, args.classes, args.image_size, args.seed, False)
            classes = args.classes
        else:
            root = Path(args.data_dir)
            if args.data_uri:
                root = sync_prefix(args.data_uri, Path(args.cache_dir), "imagenet")
            train, val = folder_sets(root, args.image_size, args.seed)
            if args.train_size:
                train.samples = train.samples[:args.train_size]
            self.train_set, self.val_set = train, val
            classes = len(train.class_names)
        self.classes = classes
        log.info("%s data: %d train / %d val images, %d classes, %dpx, batch %d, %d steps per epoch, "
                 "%d workers, %s", args.data, len(self.train_set), len(self.val_set), classes,
                 args.image_size, args.batch_size, self.steps_per_epoch(), args.workers, self.device)
        self.model = build_model(args.arch, classes, args.weights).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)
        self.optimizer = torch.optim.SGD([{"params": decay, "weight_decay": args.weight_decay},
                                          {"params": no_decay, "weight_decay": 0.0}],
                                         lr=args.lr, momentum=args.momentum, nesterov=False)
        total = self.steps_per_epoch() * self.epochs
        if args.schedule == "cosine":
            self.scheduler: Any = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=total)
        else:
            self.scheduler = torch.optim.lr_scheduler.StepLR(
                self.optimizer, step_size=max(1, args.lr_step_epochs * self.steps_per_epoch()), gamma=0.1)
        self.amp = Amp(self.device, args.amp)

    def config(self) -> dict[str, Any]:
        a = self.args
        return {"arch": a.arch, "data": a.data, "train_size": len(self.train_set), "classes": self.classes,
                "image_size": a.image_size, "batch_size": a.batch_size, "lr": a.lr, "momentum": a.momentum,
                "weight_decay": a.weight_decay, "schedule": a.schedule, "lr_step_epochs": a.lr_step_epochs,
                "weights": a.weights, "amp": self.amp.enabled, "seed": a.seed, "epochs": a.epochs}

    def steps_per_epoch(self) -> int:
        return steps_per_epoch(len(self.train_set), self.args.batch_size, drop_last=True)

    def batches(self, epoch: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        sampler = EpochBatches(len(self.train_set), self.args.batch_size, self.args.seed, epoch, start,
                               drop_last=True)
        loader = make_loader(self.train_set, sampler, workers=self.args.workers, seed=self.args.seed,
                             epoch=epoch, pin_memory=self.device.type == "cuda")
        for images, labels in loader:
            yield self._to_device(images), labels.to(self.device, non_blocking=True)

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        images, labels = batch
        self.optimizer.zero_grad(set_to_none=True)
        with self.amp.autocast():
            loss = F.cross_entropy(self.model(images), labels, label_smoothing=self.args.label_smoothing)
        self.amp.backward_step(loss, self.optimizer)
        self.scheduler.step()
        return float(loss.detach())



    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        sampler = EpochBatches(len(self.val_set), self.args.batch_size, self.args.seed, 0, shuffle=False)
        loader = make_loader(self.val_set, sampler, workers=self.args.workers, seed=self.args.seed, epoch=0)
        top1 = top5 = seen = 0
        for images, labels in loader:
            with self.amp.autocast():
                logits = self.model(self._to_device(images)).float().cpu()
            k = min(5, logits.shape[1])
            best = logits.topk(k, dim=1).indices
            top1 += int((best[:, 0] == labels).sum())
            top5 += int((best == labels[:, None]).any(dim=1).sum())
            seen += len(labels)
        self.model.train()
        return {"val_top1": top1 / max(1, seen), "val_top5": top5 / max(1, seen)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runner.tasks.imagenet", description=__doc__.splitlines()[0])
    add_common_flags(p)
    p.add_argument("--data", choices=("imagenet", "synthetic"), default="imagenet",
                   help="ImageNet-style folders (--data-dir or --data-uri), or a generated set for offline runs")
    p.add_argument("--data-dir", default="/data/imagenet", help="folder holding train/<class>/ and val/<class>/")
    p.add_argument("--data-uri", default=None,
                   help="bucket URI (s3://, gs://, az://, file://) synced to --cache-dir before training")
    p.add_argument("--cache-dir", default="/tmp/imagenet-data", help="where --data-uri is synced to")
    p.add_argument("--arch", choices=ARCHS, default="resnet50")
    p.add_argument("--weights", default=None,
                   help="start from torchvision weights (e.g. ResNet50_Weights.IMAGENET1K_V2) or a local file")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--schedule", choices=("step", "cosine"), default="step",
                   help="step: lr x0.1 every --lr-step-epochs; cosine: anneal to 0 over the run")
    p.add_argument("--lr-step-epochs", type=int, default=30)
    p.add_argument("--image-size", type=int, default=224, help="training crop side (shrink for CPU tests)")
    p.add_argument("--workers", type=int, default=8, help="DataLoader worker processes (0: in the main process)")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="no mixed precision on GPU")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    p.add_argument("--train-size", type=int, default=None,
                   help="training images (synthetic default 1024; real: all, or the first N)")
    p.add_argument("--val-size", type=int, default=256, help="synthetic validation images")
    p.add_argument("--classes", type=int, default=10, help="synthetic classes")
    return p


def build(args: argparse.Namespace) -> ImageNetTask:
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    if args.workers < 0:
        raise ConfigError("--workers must be 0 or more")
    if args.image_size < 16:
        raise ConfigError("--image-size must be at least 16")
    if args.data == "synthetic" and not args.train_size:
        args.train_size = 1024
    task = ImageNetTask(args)
    if task.steps_per_epoch() < 1:
        raise ConfigError(f"{len(task.train_set)} training images make no full batch of {args.batch_size}: "
                          "lower --batch-size")
    return task


if __name__ == "__main__":
    exit_with(main(parser(), build))
