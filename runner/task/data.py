"""Data pieces the tasks share: a resumable batch order, per-sample seeds, loaders, mixed precision.

Exact resume needs batches that are a pure function of (epoch, batch position):

- :class:`EpochBatches` yields the batches of one epoch from a given position, in an order
  drawn from (seed, epoch) only; a resume starts at its batch without replaying the others.
  Every index it yields is a ``(epoch, index)`` pair, so the dataset knows the epoch too.
- :func:`sample_rng` gives each sample its own generator, seeded by (seed, epoch, index):
  augmentations never draw from a process-wide RNG, so worker processes, prefetching and the
  number of workers cannot change what a sample looks like.
- :func:`make_loader` builds a DataLoader over those batches with an explicit ``generator``,
  so creating an iterator (and its workers' base seed) never touches the global torch RNG,
  which belongs to the model (dropout) and is saved with every checkpoint.
- :class:`Amp` is autocast plus a GradScaler on CUDA (its state is saved), a no-op on CPU.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

_MASK = (1 << 64) - 1


def mix_seed(*parts: int) -> int:
    """Return a 63-bit seed mixed from integers (splitmix64 rounds): stable across processes."""
    h = 0x9E3779B97F4A7C15
    for part in parts:
        h = (h ^ (int(part) & _MASK)) & _MASK
        h = (h + 0x9E3779B97F4A7C15) & _MASK
        z = h
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        h = z ^ (z >> 31)
    return h >> 1


def sample_rng(seed: int, epoch: int, index: int) -> random.Random:
    """Return the generator of one sample's augmentations in one epoch."""
    return random.Random(mix_seed(seed, 0x5A, epoch, index))


def epoch_order(size: int, seed: int, epoch: int) -> torch.Tensor:
    """Return the shuffled sample order of ``epoch``: a function of (seed, epoch) only."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(mix_seed(seed, 0x0D, epoch)))


def steps_per_epoch(size: int, batch_size: int, drop_last: bool) -> int:
    """Return the number of batches in one epoch."""
    return size // batch_size if drop_last else math.ceil(size / batch_size)


class EpochBatches(Sampler[list[tuple[int, int]]]):
    """The batches of one epoch from batch ``start`` on, as lists of ``(epoch, index)`` pairs."""

    def __init__(self, size: int, batch_size: int, seed: int, epoch: int, start: int = 0, *,
                 shuffle: bool = True, drop_last: bool = False) -> None:
        self.size, self.batch_size, self.seed, self.epoch = size, batch_size, seed, epoch
        self.start, self.shuffle, self.drop_last = start, shuffle, drop_last

    def __len__(self) -> int:
        return max(0, steps_per_epoch(self.size, self.batch_size, self.drop_last) - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = (epoch_order(self.size, self.seed, self.epoch) if self.shuffle
                 else torch.arange(self.size)).tolist()
        b = self.batch_size
        for i in range(self.start, steps_per_epoch(self.size, b, self.drop_last)):
            yield [(self.epoch, idx) for idx in order[i * b:(i + 1) * b]]


def _quiet_when_orphaned(_worker_id: int) -> None:
    """In a DataLoader worker: when the training process dies (a preemption), the worker's
    fd-sharing thread sees its connection reset and would print a traceback; say nothing instead."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if issubclass(kind, (ConnectionResetError, BrokenPipeError, EOFError)):
            return
        previous(kind, value, tb)

    sys.excepthook = hook


def make_loader(dataset: Dataset[Any], batches: Sampler[list[tuple[int, int]]], *, workers: int,
                seed: int, epoch: int, pin_memory: bool = False,
                collate_fn: Callable[[list[Any]], Any] | None = None) -> DataLoader[Any]:
    """Return a DataLoader over ``batches`` that leaves every global RNG alone."""
    kwargs: dict[str, Any] = {}
    if workers > 0:
        kwargs.update(prefetch_factor=2, persistent_workers=False, worker_init_fn=_quiet_when_orphaned)
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, pin_memory=pin_memory,
                      collate_fn=collate_fn, generator=torch.Generator().manual_seed(mix_seed(seed, 0x1D, epoch)),
                      **kwargs)


class Amp:
    """Mixed precision on CUDA (autocast + GradScaler); plain float32 elsewhere."""

    def __init__(self, device: torch.device, enabled: bool = True, dtype: torch.dtype = torch.float16) -> None:
        self.enabled = enabled and device.type == "cuda"
        self.device, self.dtype = device, dtype
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and dtype == torch.float16)

    def autocast(self) -> AbstractContextManager[Any]:
        if not self.enabled:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                      clip: float | None = None, params: Any = None) -> None:
        """Backward, (unscale and clip,) step and update the scale."""
        self.scaler.scale(loss).backward()
        if clip is not None and params is not None:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, clip)
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.scaler.load_state_dict(state)


def pick_device(name: str = "auto") -> torch.device:
    """Return the device for ``--device`` (auto: CUDA when present)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


__all__ = ["Amp", "EpochBatches", "epoch_order", "make_loader", "mix_seed", "pick_device",
           "sample_rng", "steps_per_epoch"]
