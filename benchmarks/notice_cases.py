"""The notice cases table: every condition a cloud's metadata service can be in, what its docs say, what was seen.

    python benchmarks/notice_cases.py [--only ID ...] [--markdown]

Plays every case of ``tests/notices/cases.py`` at once against the metadata simulator, each
with a real ``NoticeWatcher`` (the in-container listener, default settings: poll every 1 s,
2 s request timeout), plus the SDK rows (botocore's IMDS fetchers, google-auth's metadata
module), and prints one row per case: cloud, condition, expected per the docs, observed,
verdict; then the totals. Exits 1 when a notice was missed, invented, late or wrong, or a row
failed. ``--markdown`` also writes the table into docs/notices.md between its markers.
``tests/notices/test_cases.py`` runs the same table under pytest.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.notices.cases import CASES  # noqa: E402
from tests.notices.harness import MAX_RECOVERY_S, MIN_LEFT, Result, run_all, totals  # noqa: E402

DOC = ROOT / "docs" / "notices.md"
BEGIN = "<!-- cases table: written by benchmarks/notice_cases.py --markdown; do not edit by hand -->"
END = "<!-- end of the cases table -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _source(text: str) -> str:
    """Links for URLs, code for the rest."""
    parts = []
    for part in text.split("; "):
        if part.startswith("https://"):
            short = part.split("/")[-1] or part
            parts.append(f"[{_cell(short)}]({part})")
        else:
            parts.append(f"`{_cell(part)}`")
    return "; ".join(parts)


def markdown(results: list[Result], seconds: float) -> str:
    total = totals(results)
    lines = [
        BEGIN,
        "",
        f"{total['cases']} rows ({total['listener cases']} through the listener, {total['sdk checks']} with the "
        f"SDK clients or raw HTTP), played at once in {seconds:.0f} s on {platform.machine()} "
        f"({datetime.now(UTC):%Y-%m-%d}). Notices expected {total['notices expected']}, seen "
        f"{total['notices seen']}; **missed {total['missed']}, false {total['false']}**, late or wrong "
        f"{total['late or wrong']}, errors {total['errors']}. Least window left when the service was "
        f"healthy: {total['least window left (healthy)']:.0%} (at least {MIN_LEFT:.0%} required); longest time "
        f"from a recovery to the notice: {total['longest time after recovery (s)']:.1f} s (at most "
        f"{MAX_RECOVERY_S:g} s).",
        "",
        "| # | case | cloud | condition | expected per the docs | source | observed | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(results, 1):
        c = r.case
        lines.append(f"| {i} | `{c.id}` | {c.cloud} | {_cell(c.condition)} | {_cell(c.expected)} | "
                     f"{_source(c.source)} | {_cell(r.observed)} | {r.verdict} |")
    lines += ["", END]
    return "\n".join(lines)


def write_doc(table: str) -> None:
    text = DOC.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    DOC.write_text(text[:start] + table + text[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--only", action="append", default=[], help="run the cases whose id contains this")
    parser.add_argument("--markdown", action="store_true", help=f"write the table into {DOC.relative_to(ROOT)}")
    parser.add_argument("--verbose", action="store_true", help="show the listener's log (INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR,
                        format="%(relativeCreated)7.0f %(threadName)s %(levelname)s %(message)s")
    cases = [c for c in CASES if not args.only or any(o in c.id for o in args.only)]
    if not cases:
        parser.error(f"no case id contains {args.only}; ids: {', '.join(c.id for c in CASES)}")
    started = time.monotonic()
    results = run_all(cases)
    seconds = time.monotonic() - started
    width = max(len(r.case.id) for r in results)
    for r in results:
        print(f"{r.verdict:7} {r.case.id:{width}} {r.case.cloud:5} {r.observed}")
    total = totals(results)
    print(f"\n{seconds:.1f} s; " + ", ".join(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}"
                                           for k, v in total.items()))
    if args.markdown:
        if args.only:
            parser.error("--markdown writes the whole table: drop --only")
        write_doc(markdown(results, seconds))
        print(f"wrote {DOC.relative_to(ROOT)}")
    bad = total["missed"] + total["false"] + total["late or wrong"] + total["errors"]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
