"""Goodput and recovery latency of a CIFAR job under simulated preemption, on the local engine.

Runs the same CIFAR job three times through the real watcher and Docker engine:
uninterrupted, preempted every PERIOD with a notice (parachute), and every PERIOD with no
notice (bus). Prints, against the uninterrupted run measured in this same process:

- goodput (useful training time / wall time) and the wall-time ratio;
- recovery latency from the kill to the first training step of the next attempt, split into
  detection + container start, Python start and imports, checkpoint load, first step.

    python benchmarks/goodput.py [--period 60s] [--epochs 12] [--interval 0.5]

Targets (issue 3): goodput >= 0.9 with notices; recovery <= container start + import torch + 1 s.
Needs the Docker engine and localhost/runner-cifar:latest (make image).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_job(home: Path, args: list[str], plan: str | None, interval: float) -> dict:
    os.environ["RUNNER_HOME"] = str(home)
    from runner.ledger import Ledger
    from runner.spec import SimulatePreemption, load_spec
    from runner.summary import read_progress, summarize
    from runner.watcher import Watcher

    spec = load_spec(ROOT / "jobs" / "cifar-smoke.yaml").model_copy(update={"args": args})
    if plan:
        spec = spec.model_copy(update={"simulate_preemption": SimulatePreemption.parse_cli(plan)})
    with Ledger(home / "ledger.db") as ledger:
        job_id = ledger.create_job(spec)
        watcher = Watcher(ledger, [job_id], on_event=lambda e: print(f"  {e.text}", flush=True))
        try:
            watcher.run(interval=interval)
        finally:
            watcher.close()
        job = ledger.get_job(job_id)
        attempts = ledger.attempts(job_id)
        progress = read_progress(job) or {}
        return {"job": job, "attempts": attempts, "progress": progress,
                "summary": summarize(job, attempts, progress)}


def recoveries(run: dict) -> list[dict]:
    history = run["progress"].get("attempts", {})
    rows = []
    attempts = run["attempts"]
    for prev, nxt in zip(attempts, attempts[1:]):
        h = history.get(str(nxt.number))
        if not h or prev.ended_at is None or nxt.started_at is None or "first_step_at" not in h:
            continue
        rows.append({
            "detect_and_start": nxt.started_at - prev.ended_at,
            "python_and_imports": h["imports_done_at"] - nxt.started_at if h.get("imports_done_at") else None,
            "build": (h.get("built_at") or h["loaded_at"]) - (h.get("imports_done_at") or nxt.started_at),
            "checkpoint_load": h["loaded_at"] - (h.get("built_at") or h["loaded_at"]),
            "first_step": h["first_step_at"] - h["loaded_at"],
            "total": h["first_step_at"] - prev.ended_at,
        })
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--period", default="60s", help="time between simulated preemptions")
    p.add_argument("--notice", default="10s", help="notice window for the parachute runs")
    p.add_argument("--epochs", type=int, default=120, help="long enough for several PERIODs")
    p.add_argument("--train-size", type=int, default=4000)
    p.add_argument("--interval", type=float, default=0.5, help="watcher poll interval (s)")
    a = p.parse_args()
    args = ["--data", "synthetic", "--epochs", str(a.epochs), "--train-size", str(a.train_size),
            "--test-size", "500", "--batch-size", "64", "--threads", "2", "--seed", "0"]
    with tempfile.TemporaryDirectory(prefix="goodput-") as tmp:
        runs = {}
        for name, plan in (("uninterrupted", None),
                           ("parachute", f"every={a.period},notice={a.notice},mode=parachute"),
                           ("bus", f"every={a.period},mode=bus")):
            print(f"{name}: running", flush=True)
            runs[name] = run_job(Path(tmp) / name, args, plan, a.interval)
    base = runs["uninterrupted"]["summary"]
    print(f"\n{'run':<15}{'state':<11}{'wall s':>8}{'attempts':>10}{'goodput':>9}{'wall ratio':>12}"
          f"{'lost s':>8}{'restart s':>11}  same weights")
    for name, run in runs.items():
        s = run["summary"]
        same = (run["job"].result or {}).get("weights_sha256") == (runs["uninterrupted"]["job"].result or {}).get(
            "weights_sha256")
        print(f"{name:<15}{s['state']:<11}{s['wall_s']:>8.1f}{s['attempts']:>10}{s['goodput'] or 0:>9.3f}"
              f"{base['wall_s'] / s['wall_s']:>12.3f}{s['lost_s']:>8.1f}{s['startup_s']:>11.1f}  {same}")
    print("\nrecovery latency, kill -> first step of the next attempt (median seconds):")
    for name in ("parachute", "bus"):
        rows = recoveries(runs[name])
        if not rows:
            print(f"  {name}: no recoveries measured")
            continue
        med = {k: statistics.median(r[k] for r in rows if r[k] is not None) for k in rows[0]}
        print(f"  {name:<10} total {med['total']:.2f} = detect+container start {med['detect_and_start']:.2f}"
              f" + python+imports {med['python_and_imports']:.2f} + data/model build {med['build']:.2f}"
              f" + checkpoint load {med['checkpoint_load']:.2f} + first step {med['first_step']:.2f}"
              f"  ({len(rows)} recoveries)")
        over = med["total"] - med["detect_and_start"] - med["python_and_imports"]
        print(f"  {'':<10} above container start + imports: {over:.2f} s, of which building the task's data"
              f" and model {med['build']:.2f} s (target <= 1 s)")


if __name__ == "__main__":
    main()
