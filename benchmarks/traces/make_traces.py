"""Write the synthetic spot availability traces in this folder (seeded: the same files every time).

    .venv/bin/python benchmarks/traces/make_traces.py      # rewrites benchmarks/traces/*.csv

Four zones of one GPU type, modelled on what public p3.2xlarge availability traces show (the
"Can't Be Late" traces, skypilot-org/spot-traces: a week per zone, sampled every few minutes):
capacity comes and goes in up periods of minutes to a day, short dips, and outages of hours; some
zones are much worse than others, and outages cluster in the (US) working day. Each file is a week
sampled every 5 minutes; ``available`` is how many machines one could get (0 to 4).

Each zone alternates up and down periods, both drawn from lognormal distributions (median and
spread per zone); a share of the down periods are short dips, the rest outages, and outages
that start during the working day last longer. These are synthetic, not measurements: they stand
in for real traces, which convert to the same format (docs/deadlines.md).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
WEEK_S = 7 * 86400
GAP_S = 300
MACHINE = "aws:us-east-1:p3.2xlarge"


@dataclass(frozen=True)
class Zone:
    name: str
    seed: int
    up_median_h: float        # median up period
    up_spread: float          # lognormal sigma of up periods
    dip_share: float          # share of down periods that are short dips (10-40 min)
    outage_median_h: float    # median outage
    outage_spread: float
    day_factor: float         # outages starting 13:00-23:00 UTC (US working day) last this much longer
    note: str


ZONES = (
    Zone("zone-a", 11, up_median_h=4.0, up_spread=0.9, dip_share=0.6, outage_median_h=1.8, outage_spread=0.7,
         day_factor=1.3, note="good zone: capacity most of the time, outages of an hour or two"),
    Zone("zone-b", 22, up_median_h=3.0, up_spread=1.0, dip_share=0.45, outage_median_h=3.5, outage_spread=0.8,
         day_factor=1.5, note="middling zone: outages of hours most days"),
    Zone("zone-c", 33, up_median_h=2.5, up_spread=1.0, dip_share=0.35, outage_median_h=3.3, outage_spread=0.8,
         day_factor=1.6, note="bad zone: outages of half a working day"),
    Zone("zone-d", 44, up_median_h=0.9, up_spread=1.1, dip_share=0.75, outage_median_h=4.0, outage_spread=0.9,
         day_factor=1.8, note="worst zone: short spells of capacity, frequent dips, long outages"),
)


def samples(zone: Zone) -> list[int]:
    """Machines available at every 5-minute sample of one week."""
    rng = random.Random(zone.seed)
    spans: list[tuple[bool, float]] = []
    t = 0.0
    up = rng.random() < 0.5
    while t < WEEK_S:
        if up:
            length = 3600 * zone.up_median_h * math.exp(rng.gauss(0, zone.up_spread))
        elif rng.random() < zone.dip_share:
            length = rng.uniform(600, 2400)
        else:
            hour = (t / 3600) % 24
            factor = zone.day_factor if 13 <= hour < 23 else 1.0
            length = 3600 * zone.outage_median_h * factor * math.exp(rng.gauss(0, zone.outage_spread))
        length = max(GAP_S, length)
        spans.append((up, length))
        t += length
        up = not up
    values: list[int] = []
    level = 2
    edges = []
    acc = 0.0
    for up, length in spans:
        edges.append((acc, acc + length, up))
        acc += length
    i = 0
    for k in range(WEEK_S // GAP_S):
        at = k * GAP_S
        while edges[i][1] <= at:
            i += 1
        if edges[i][2]:
            level = min(4, max(1, level + rng.choice((-1, 0, 0, 1))))
            values.append(level)
        else:
            values.append(0)
    return values


def main() -> None:
    for zone in ZONES:
        values = samples(zone)
        lines = [f"# {zone.name}: synthetic one-week spot availability, {GAP_S} s samples ({zone.note})",
                 "# written by benchmarks/traces/make_traces.py (seeded); not a measurement",
                 f"# machine: {MACHINE}", "time,available"]
        lines += [f"{k * GAP_S},{v}" for k, v in enumerate(values)]
        path = HERE / f"{zone.name}.csv"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        share = sum(v > 0 for v in values) / len(values)
        print(f"{path.name}: {len(values)} samples, available {share:.0%} of the time")


if __name__ == "__main__":
    main()
