"""Checkpoint stall and throughput: asynchronous writers against the synchronous baseline.

Trains a torchvision ResNet-50 (about 200 MB of weights plus SGD momentum) on small random
batches and checkpoints it to a file:// store, all in this one process:

- stall: how long the training loop is blocked per checkpoint, per writer mode;
- throughput: training steps per second while a checkpoint persists, against steps per
  second with no checkpoint in flight.

    python benchmarks/checkpoint_stall.py [--checkpoints 3] [--batch 4] [--size 64]

Targets (issue 2): stall ratio async/sync <= 0.1, throughput ratio >= 0.9.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torchvision  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from runner.task.state import capture_rng, nbytes  # noqa: E402
from runner.task.writer import CheckpointWriter  # noqa: E402


class Trainer:
    def __init__(self, batch: int, size: int, device: str) -> None:
        torch.manual_seed(0)
        self.device = torch.device(device)
        self.model = torchvision.models.resnet50(num_classes=100).to(self.device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.x = torch.randn(batch, 3, size, size, device=self.device)
        self.y = torch.randint(0, 100, (batch,), device=self.device)

    def step(self) -> float:
        t = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        F.cross_entropy(self.model(self.x), self.y).backward()
        self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    def state(self) -> dict:
        return {"task": {"model": self.model.state_dict(), "optimizer": self.opt.state_dict()},
                "rng": capture_rng()}


def measure(trainer: Trainer, mode: str, root: Path, checkpoints: int, base_steps: int) -> dict:
    writer = CheckpointWriter(f"file://{root / mode}", keep=2, mode=mode)
    stalls, busy_steps, free_steps, persist_s = [], [], [], []
    step = 0
    for _ in range(checkpoints):
        free_steps += [trainer.step() for _ in range(base_steps)]
        step += base_steps
        t = time.perf_counter()
        stalls.append(writer.submit(step, trainer.state(), {"progress": {"step": step}}))
        while writer.busy():  # train while the checkpoint persists
            busy_steps.append(trainer.step())
            step += 1
        writer.flush()
        persist_s.append(time.perf_counter() - t)
    persist = [s for s in busy_steps]
    return {
        "mode": mode,
        "stall_s": statistics.median(stalls),
        "free_step_s": statistics.median(free_steps),
        "busy_step_s": statistics.mean(persist) if persist else float("nan"),
        "busy_steps": len(persist),
        "persist_s": statistics.median(persist_s),
        # training time a checkpoint costs: the stall, plus how much slower the steps beside the write ran
        "lost_s": (sum(stalls) + sum(persist) - len(persist) * statistics.median(free_steps)) / checkpoints,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoints", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--base-steps", type=int, default=4, help="steps between checkpoints")
    p.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (the state is copied to the host to save)")
    args = p.parse_args()
    trainer = Trainer(args.batch, args.size, args.device)
    for _ in range(2):
        trainer.step()  # warm up; creates the momentum buffers
    size_mb = nbytes(trainer.state()) / 1e6
    print(f"state: {size_mb:.0f} MB (ResNet-50 weights + SGD momentum), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}", flush=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        rows = [measure(trainer, mode, Path(tmp), args.checkpoints, args.base_steps)
                for mode in ("sync", "fork", "thread")]
    sync = rows[0]
    print(f"{'mode':<8}{'stall ms':>10}{'stall ratio':>13}{'step s (free)':>15}{'step s (persisting)':>21}"
          f"{'throughput ratio':>18}{'persist s':>11}{'lost s':>8}{'cost ratio':>12}")
    for r in rows:
        stall_ratio = r["stall_s"] / sync["stall_s"]
        thr = r["free_step_s"] / r["busy_step_s"] if r["busy_steps"] else float("nan")
        print(f"{r['mode']:<8}{r['stall_s'] * 1000:>10.1f}{stall_ratio:>13.3f}{r['free_step_s']:>15.3f}"
              f"{r['busy_step_s']:>21.3f}{thr:>18.3f}{r['persist_s']:>11.2f}{r['lost_s']:>8.3f}"
              f"{r['lost_s'] / sync['lost_s']:>12.3f}")
    fork = rows[1]
    print(f"\nasync (fork) vs sync: stall ratio {fork['stall_s'] / sync['stall_s']:.3f} (target <= 0.1), "
          f"throughput ratio while persisting {fork['free_step_s'] / fork['busy_step_s']:.3f} (target >= 0.9), "
          f"training time lost per checkpoint {fork['lost_s']:.3f} s, {fork['lost_s'] / sync['lost_s']:.3f} of a "
          f"synchronous write's")


if __name__ == "__main__":
    main()
