"""every: auto against brute force: does Young-Daly pick (nearly) the best checkpoint interval?

For mean times between preemptions of 10 minutes, 1 hour and 6 hours, replays the same
simulated preemptions (``runner.cost.simulate``, the accounting of real jobs) at 41 intervals
on a geometric grid from auto/8 to auto*8, takes the one with the shortest mean completion time,
and prints how far the auto interval is from it (target: within 20%) and how much longer the
job takes at the auto interval than at the best one.

    .venv/bin/python benchmarks/interval.py [--trials 400] [--work 20h] [--cost 30s]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runner.cost.simulate import Preemptions, Workload, auto_for, brute_force_best, evaluate, draws_for  # noqa: E402
from runner.task.context import parse_duration  # noqa: E402

MEANS = {"10 min": 600.0, "1 h": 3600.0, "6 h": 21600.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400, help="simulated runs per interval")
    parser.add_argument("--work", default="20h", help="compute time of the job without overheads")
    parser.add_argument("--cost", default="30s", help="checkpoint cost C")
    parser.add_argument("--startup", default="60s", help="machine start to first step")
    parser.add_argument("--resubmit", default="30s", help="preemption to the next machine's start")
    parser.add_argument("--coverage", type=float, default=0.0, help="share of preemptions with a usable notice")
    args = parser.parse_args()
    w = Workload(parse_duration(args.work), parse_duration(args.cost), parse_duration(args.startup),
                 parse_duration(args.resubmit))
    print(f"workload: {args.work} of compute, checkpoint cost {args.cost}, startup {args.startup}, "
          f"resubmit {args.resubmit}, notice coverage {args.coverage}; {args.trials} trials per interval")
    print(f"{'MTBF':>7} {'auto':>8} {'best':>8} {'auto/best':>9} {'time at auto':>13} {'at best':>10} "
          f"{'excess':>7} {'within 20%':>10} {'secs':>5}")
    ok = True
    for label, mean in MEANS.items():
        started = time.perf_counter()
        process = Preemptions(mean_s=mean, notice_coverage=args.coverage)
        best, rows = brute_force_best(w, process, trials=args.trials)
        auto = auto_for(w, process)
        at_auto = evaluate(w, auto, draws_for(process, w, args.trials), args.coverage, None)
        at_best = min(rows, key=lambda o: o.completion_s)
        ratio = auto / best
        within = abs(ratio - 1) <= 0.2
        ok &= within
        print(f"{label:>7} {auto:7.0f}s {best:7.0f}s {ratio:9.2f} {at_auto.completion_s / 3600:12.2f}h "
              f"{at_best.completion_s / 3600:9.2f}h {at_auto.completion_s / at_best.completion_s - 1:6.2%} "
              f"{'yes' if within else 'NO':>10} {time.perf_counter() - started:5.0f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
