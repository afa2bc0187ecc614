"""Capacity policies side by side: a job with a deadline, replayed on spot availability traces.

For each trace in benchmarks/traces/ and each deadline, replays the job from ``--offsets`` start
offsets spread over the trace under every policy (``runner.capacity.replay``: the real policies,
the real accounting) and prints completion time, deadline misses, spend (and spend over the
baseline, the whole job on one on-demand machine, priced in the same process), v and the
on-demand share. Then it checks what docs/deadlines.md claims:

- greedy, uniform-progress and auto miss no deadline that on-demand alone meets;
- auto spends no more than the cheaper of greedy and uniform-progress, on every trace and deadline.

It exits 1 if a check fails.

    .venv/bin/python benchmarks/deadline.py [--offsets 100] [--markdown] [--plot docs/deadlines.png]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runner.capacity.policy import POLICIES
from runner.capacity.replay import PolicyOutcome, TraceJob, replay_trace, trace_interval
from runner.capacity.trace import Trace, load_trace
from runner.contract import parse_duration
from runner.cost.simulate import Workload
from runner.cost.table import Price, price_table

HERE = Path(__file__).resolve().parent
DEADLINE_POLICIES = ("greedy", "uniform-progress", "auto")
COLORS = {"spot-only": "#9e9e9e", "greedy": "#1f77b4", "uniform-progress": "#ff7f0e", "auto": "#2ca02c"}


def price_of(trace: Trace) -> Price:
    cloud, region, itype = (trace.machine or "aws:us-east-1:p3.2xlarge").split(":")
    return price_table().lookup(cloud, region, itype)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offsets", type=int, default=100, help="start offsets per trace")
    parser.add_argument("--work", default="10h", help="compute time of the job")
    parser.add_argument("--deadlines", default="12h,15h,24h", help="deadlines after submission")
    parser.add_argument("--cost", default="20s", help="checkpoint cost")
    parser.add_argument("--startup", default="120s", help="machine start to first step")
    parser.add_argument("--resubmit", default="30s", help="an attempt's end to the next one's submission")
    parser.add_argument("--coverage", type=float, default=0.0, help="share of preemptions with a usable notice")
    parser.add_argument("--poll", default="60s", help="how often the watcher asks the policy")
    parser.add_argument("--blind", action="store_true", help="policies are not told whether spot is available "
                                                             "(as a watcher that cannot tell)")
    parser.add_argument("--traces", nargs="*", type=Path, default=sorted(HERE.glob("traces/*.csv")))
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown (for docs/deadlines.md)")
    parser.add_argument("--plot", type=Path, help="write the plot (PNG) here")
    args = parser.parse_args()

    w = Workload(parse_duration(args.work), parse_duration(args.cost), parse_duration(args.startup),
                 parse_duration(args.resubmit))
    deadlines = [parse_duration(d.strip()) for d in args.deadlines.split(",")]
    print(f"job: {args.work} of compute, checkpoint cost {args.cost}, startup {args.startup}, resubmit "
          f"{args.resubmit}, notice coverage {args.coverage}, policy asked every {args.poll}; "
          f"{args.offsets} start offsets per trace and deadline"
          + ("; policies not told whether spot is available" if args.blind else ""))
    results: dict[tuple[str, float], list[PolicyOutcome]] = {}
    baselines: dict[str, float] = {}
    failures: list[str] = []
    rows: list[list[str]] = []
    started = time.perf_counter()
    for path in args.traces:
        trace = load_trace(path)
        price = price_of(trace)
        job = TraceJob(w, trace_interval(trace, w, args.coverage), args.coverage, parse_duration(args.poll),
                       knows_availability=not args.blind)
        baseline = price.cost(job.on_demand_alone_s, spot=False)  # the whole job on one on-demand machine
        baselines[trace.name] = baseline
        stats = trace.stats()
        print(f"{trace.name}: spot available {stats['available_share']:.0%}, {stats['outages']:.0f} outages "
              f"(longest {stats['outage_max_s'] / 3600:.1f} h); checkpoint every {job.interval_s / 60:.1f} min; "
              f"on-demand alone {job.on_demand_alone_s / 3600:.2f} h, ${baseline:.2f} at {price.machine}")
        for deadline in deadlines:
            outcomes = replay_trace(trace, job, deadline, POLICIES, args.offsets, price)
            results[(trace.name, deadline)] = outcomes
            by = {o.policy: o for o in outcomes}
            for o in outcomes:
                rows.append([trace.name, f"{deadline / 3600:g} h", o.policy, _h(o.completion_mean_s),
                             _h(o.completion_p90_s), _h(o.completion_max_s), f"{o.miss_rate:.0%}",
                             f"${o.spend:.2f}", f"{o.spend / baseline:.2f}", f"{o.value_ratio:.2f}",
                             f"{o.on_demand_share:.0%}", f"{o.preemptions_mean:.1f} / {o.preemptions_max}"])
            if job.on_demand_alone_s <= deadline:
                for p in DEADLINE_POLICIES:
                    if by[p].misses:
                        failures.append(f"{trace.name} {deadline / 3600:g} h: {p} missed {by[p].misses} deadlines")
            cheaper = min(by["greedy"].spend, by["uniform-progress"].spend)
            if by["auto"].spend > cheaper * (1 + 1e-9):
                failures.append(f"{trace.name} {deadline / 3600:g} h: auto ${by['auto'].spend:.2f} > "
                                f"cheaper of greedy and uniform-progress ${cheaper:.2f}")
    header = ["trace", "deadline", "policy", "mean", "p90", "max", "missed", "spend", "/ on-demand", "v",
              "on-demand share", "preemptions mean / max"]
    if args.markdown:
        print_markdown(results, baselines, deadlines)
    else:
        _print_table(header, rows)
    print(f"replayed {len(rows) * args.offsets} runs in {time.perf_counter() - started:.1f} s")
    if args.plot:
        plot(results, baselines, deadlines, args.plot)
        print(f"wrote {args.plot}")
    for line in failures:
        print(f"FAIL {line}")
    print("checks: " + ("all hold" if not failures else f"{len(failures)} failed"))
    return 1 if failures else 0


def _h(seconds: float) -> str:
    return "never" if seconds == float("inf") else f"{seconds / 3600:.1f} h"


def print_markdown(results: dict[tuple[str, float], list[PolicyOutcome]], baselines: dict[str, float],
                   deadlines: list[float]) -> None:
    """Two tables for docs/deadlines.md: spend (and misses) per policy, then completion times."""
    print("Mean spend per job (on-demand alone in brackets), deadline misses where there were any:\n")
    print("| trace | deadline | " + " | ".join(POLICIES) + " | auto vs the cheaper of greedy and uniform-progress |")
    print("|---|---|" + "---:|" * (len(POLICIES) + 1))
    for name, baseline in baselines.items():
        for d in deadlines:
            by = {o.policy: o for o in results[(name, d)]}
            cells = [f"${by[p].spend:.2f}" + (f" ({by[p].miss_rate:.0%} missed)" if by[p].misses else "")
                     for p in POLICIES]
            cheaper = min(by["greedy"].spend, by["uniform-progress"].spend)
            print(f"| {name} (${baseline:.2f}) | {d / 3600:g} h | " + " | ".join(cells) +
                  f" | {by['auto'].spend / cheaper - 1:+.1%} |")
    print("\nCompletion time in hours, mean / 90th percentile / longest:\n")
    print("| trace | deadline | " + " | ".join(POLICIES) + " |")
    print("|---|---|" + "---:|" * len(POLICIES))
    for name in baselines:
        for d in deadlines:
            by = {o.policy: o for o in results[(name, d)]}
            cells = [f"{_h(by[p].completion_mean_s)[:-2]} / {_h(by[p].completion_p90_s)[:-2]} / "
                     f"{_h(by[p].completion_max_s)[:-2]}" for p in POLICIES]
            print(f"| {name} | {d / 3600:g} h | " + " | ".join(cells) + " |")


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for r in [header, *rows]:
        print("  ".join(str(x).rjust(n) if i >= 3 else str(x).ljust(n) for i, (x, n) in enumerate(zip(r, widths))))


def plot(results: dict[tuple[str, float], list[PolicyOutcome]], baselines: dict[str, float],
         deadlines: list[float], path: Path) -> None:
    """Spend over on-demand alone (top) and deadline misses (bottom), per trace, deadline and policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traces = list(baselines)
    fig, axes = plt.subplots(2, len(traces), figsize=(3.6 * len(traces), 6.2), sharey="row", squeeze=False)
    width = 0.8 / len(POLICIES)
    for col, name in enumerate(traces):
        top, bottom = axes[0][col], axes[1][col]
        for k, policy in enumerate(POLICIES):
            xs = [i + (k - (len(POLICIES) - 1) / 2) * width for i in range(len(deadlines))]
            outs = [next(o for o in results[(name, d)] if o.policy == policy) for d in deadlines]
            top.bar(xs, [o.spend / baselines[name] for o in outs], width, color=COLORS[policy], label=policy)
            bottom.bar(xs, [100 * o.miss_rate for o in outs], width, color=COLORS[policy], label=policy)
        for ax in (top, bottom):
            ax.set_xticks(range(len(deadlines)), [f"{d / 3600:g} h" for d in deadlines])
            ax.grid(axis="y", alpha=0.3)
        top.axhline(1.0, color="black", lw=0.8, ls="--")
        top.set_title(name)
        bottom.set_xlabel("deadline")
        missed = sum(o.misses for d in deadlines for o in results[(name, d)] if o.policy in DEADLINE_POLICIES)
        bottom.text(0.98, 0.95, f"greedy, uniform-progress, auto:\n{missed} missed", transform=bottom.transAxes,
                    ha="right", va="top", fontsize=8)
    axes[0][0].set_ylabel("spend / on-demand alone")
    axes[1][0].set_ylabel("deadlines missed (%)")
    axes[1][0].set_ylim(0, 100)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(POLICIES), fontsize=9, frameon=False)
    fig.suptitle("A 10 h job on four synthetic one-week spot availability traces: spend and deadline misses "
                 "by policy", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
