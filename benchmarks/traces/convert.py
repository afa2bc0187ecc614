"""Convert a published spot availability trace to the runner's CSV format (time,available).

    # "Can't Be Late" traces (github.com/skypilot-org/spot-traces), JSON with gap_seconds and counts:
    .venv/bin/python benchmarks/traces/convert.py skypilot us-east-1a_v100_1.json us-east-1a.csv \\
        --machine aws:us-east-1:p3.2xlarge

    # any CSV with a timestamp column and a value column, e.g. SpotLake's spot placement score
    # (1 to 3; count 2 and above as available):
    .venv/bin/python benchmarks/traces/convert.py columns spotlake.csv zone.csv \\
        --time-column time --value-column SPS --threshold 2 --machine aws:us-east-1:p3.2xlarge

Then: ``runner simulate --trace us-east-1a.csv --deadline 15h --work 10h``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runner.capacity.trace import from_columns, from_skypilot
from runner.errors import RunnerError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("skypilot", "columns"), help="the input's format")
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--machine", help="cloud:region:instance_type, written as '# machine:' (prices the replay)")
    parser.add_argument("--time-column", default="time", help="columns: the timestamp column (epoch s or ISO 8601)")
    parser.add_argument("--value-column", default="available", help="columns: the value column")
    parser.add_argument("--threshold", type=float, help="columns: values at or above this count as 1 machine, "
                                                         "below as 0 (default: the values are counts)")
    args = parser.parse_args(argv)
    try:
        if args.kind == "skypilot":
            trace = from_skypilot(args.source, machine=args.machine)
        else:
            try:
                text = args.source.read_text(encoding="utf-8")
            except OSError as exc:
                print(f"error: {args.source}: cannot read it ({type(exc).__name__})", file=sys.stderr)
                return 2
            trace = from_columns(text, args.time_column, args.value_column, args.threshold, where=str(args.source),
                                 name=args.source.stem, machine=args.machine)
    except RunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.target.write_text(trace.to_csv(), encoding="utf-8")
    stats = trace.stats()
    print(f"wrote {args.target}: {len(trace.times)} rows over {trace.length_s / 3600:.1f} h, spot available "
          f"{stats['available_share']:.0%} of the time, {stats['outages']:.0f} outages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
