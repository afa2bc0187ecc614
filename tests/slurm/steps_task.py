"""A user's long job, written the way users write them (no runner.task): steps of --step-time seconds,
its state saved every 20 steps with a plain json.dump into its folder (not atomic), resumed from there;
on SIGTERM it saves and stops. Under `runner exec` on Slurm it outlives the partition's time limit.

    python steps_task.py --steps 1800      # 3 minutes of work; the folder is $RUNNER_SYNC_DIR
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time


def advance(acc: int, step: int) -> int:
    """The work: a running hash that comes out right only if no step is lost or repeated."""
    return (acc * 31 + step) % 1_000_003


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--step-time", type=float, default=0.1)
    args = parser.parse_args()
    folder = os.environ["RUNNER_SYNC_DIR"]
    path = os.path.join(folder, "state.json")
    state = {"step": 0, "acc": 0}
    if os.path.exists(path):
        with open(path) as fh:
            state = json.load(fh)
    stop = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
    print(f"steps_task: resuming at step {state['step']} of {args.steps}", flush=True)
    while state["step"] < args.steps and not stop:
        time.sleep(args.step_time)
        state["acc"] = advance(state["acc"], state["step"])
        state["step"] += 1
        if state["step"] % 20 == 0:
            with open(path, "w") as fh:
                json.dump(state, fh)
    with open(path, "w") as fh:
        json.dump(state, fh)
    if state["step"] >= args.steps:
        with open(os.path.join(folder, "result.json"), "w") as fh:
            json.dump(state, fh)
    print(f"steps_task: {'stopped' if stop else 'finished'} at step {state['step']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
