"""A plain PyTorch script that saves the way many scripts do: straight to the final name, no temp file.

    python naive_train.py --out /workspace/checkpoints --steps 300

Every ``--save-every`` steps it calls ``torch.save(state, "last.pt")``, which empties the file and
then writes it; killed or signalled in between, it leaves a torn ``last.pt``. On start it loads
``last.pt`` without a try. It handles no signal. Under ``runner exec`` it still resumes exactly:
the wrapper never commits a ``last.pt`` that is being written or is not a whole torch file, and
after a notice it lets a save in progress finish before the signal (docs: examples/README.md,
and the two lines that make a save atomic). ``train.py`` beside it is the careful version.

Exact: the batch of step N is a pure function of the seed and N, and the RNG state is saved, so
an interrupted run ends with the same weights (``result.json``) as an uninterrupted one.
"""

import argparse
import hashlib
import json
import os

import torch
from torch import nn


def batch(seed, step, size, dim):
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    x = torch.randn(size, dim, generator=gen)
    return x, (x[:, : dim // 2].sum(1) > x[:, dim // 2:].sum(1)).long()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--save-every", type=int, default=25)
    parser.add_argument("--out", default="/workspace/checkpoints")
    parser.add_argument("--hidden", type=int, default=1024)  # about 3 million floats saved, 13 MB
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    dim = 64
    model = nn.Sequential(nn.Linear(dim, args.hidden), nn.ReLU(), nn.Dropout(0.1),
                          nn.Linear(args.hidden, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    os.makedirs(args.out, exist_ok=True)
    last = os.path.join(args.out, "last.pt")
    step = 0
    if os.path.exists(last):
        state = torch.load(last)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        step = state["step"]
        print(f"resumed at step {step}", flush=True)
    while step < args.steps:
        x, y = batch(args.seed, step, 128, dim)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step % args.save_every == 0:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "rng": torch.get_rng_state(), "step": step}, last)
            print(f"saved step {step}", flush=True)
    sha = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        sha.update(name.encode())
        sha.update(tensor.detach().contiguous().numpy().tobytes())
    json.dump({"step": step, "weights_sha256": sha.hexdigest()}, open(os.path.join(args.out, "result.json"), "w"))
    print("done", sha.hexdigest(), flush=True)


if __name__ == "__main__":
    main()
