"""A plain PyTorch training script, written without spot-runner in mind.

It does what many scripts already do: saves ``last.pt`` (model, optimizer, step, RNG state) every
``--save-every`` steps, loads it on start when present, and writes ``result.json`` with the
final weights' sha256 when done. It knows nothing of preemptions: ``runner exec`` restores its
folder, syncs it, and turns a notice into SIGTERM, which simply ends it.

Its checkpointing is exact (the batch of step N is a pure function of the seed and N, and the
RNG state is saved), so an interrupted run ends with the same weights as an uninterrupted one.
"""

import argparse
import hashlib
import json
import os
import time

import torch
from torch import nn


def batch(seed: int, step: int, size: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    x = torch.randn(size, dim, generator=gen)
    y = (x[:, : dim // 2].sum(1) > x[:, dim // 2:].sum(1)).long()
    return x, y


def weights_sha256(model: nn.Module) -> str:
    sha = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        sha.update(name.encode())
        sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--out", default="/workspace/checkpoints")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--step-sleep", type=float, default=0.01, help="stand-in for a heavier step")
    args = parser.parse_args()
    torch.set_num_threads(1)  # exact resume needs the same thread count every time
    torch.manual_seed(args.seed)
    dim = 64
    model = nn.Sequential(nn.Linear(dim, args.hidden), nn.ReLU(), nn.Dropout(0.1),
                          nn.Linear(args.hidden, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    os.makedirs(args.out, exist_ok=True)
    last = os.path.join(args.out, "last.pt")
    step = 0
    if os.path.exists(last):
        state = torch.load(last, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        step = state["step"]
        print(f"resumed from {last} at step {step}", flush=True)
    t0 = time.time()
    loss = torch.tensor(float("nan"))
    while step < args.steps:
        x, y = batch(args.seed, step, 128, dim)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        time.sleep(args.step_sleep)
        if step % args.save_every == 0 or step == args.steps:
            tmp = last + ".tmp"
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "rng": torch.get_rng_state(), "step": step}, tmp)
            os.replace(tmp, last)
        if step % 100 == 0:
            print(f"step {step}/{args.steps} loss {loss.item():.4f} ({time.time() - t0:.1f}s)", flush=True)
    result = {"step": step, "weights_sha256": weights_sha256(model), "loss": loss.item()}
    with open(os.path.join(args.out, "result.json"), "w") as fh:
        json.dump(result, fh)
    print("done:", json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
