"""Spot availability traces: how many machines of one spot type could be had, over time.

The format is CSV, a header line ``time,available`` and one row per sample or change::

    # machine: aws:us-east-1:p3.2xlarge      (optional: prices the replay when no spec names one)
    time,available
    0,3
    300,0
    7200,1

``time`` is seconds from the trace's start (the first row is the start), increasing; ``available``
is a whole number of machines, 0 meaning none. A row holds until the next one; the last row holds
for as long as the step before it, which ends the trace. Lines starting with ``#`` are comments.
A replay that runs past the end goes on from the start (the trace repeats).

Published traces convert with :func:`from_skypilot` (the "Can't Be Late" traces,
github.com/skypilot-org/spot-traces: ``{"metadata": {"gap_seconds": N}, "data": [...]}``) and
:func:`from_columns` (any CSV with a timestamp and a value column, e.g. SpotLake's placement
scores with a threshold); ``benchmarks/traces/convert.py`` is the command for both.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runner.errors import SpecError

HEADER = ("time", "available")


@dataclass(frozen=True)
class Trace:
    """Availability over ``length_s`` seconds: ``values[i]`` machines from ``times[i]`` to the next time."""

    times: tuple[float, ...]
    values: tuple[int, ...]
    length_s: float
    name: str = "trace"
    machine: str | None = None
    _starts: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _up: tuple[bool, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.times) != len(self.values) or not self.times:
            raise SpecError(f"{self.name}: a trace needs as many values as times, at least one")
        if self.times[0] != 0.0:
            raise SpecError(f"{self.name}: a trace starts at time 0, not {self.times[0]}")
        if self.length_s <= self.times[-1]:
            raise SpecError(f"{self.name}: the trace must end after its last row")
        starts: list[float] = []
        ups: list[bool] = []
        for t, v in zip(self.times, self.values):  # merged: alternating up and down segments
            up = v > 0
            if not ups or ups[-1] != up:
                starts.append(t)
                ups.append(up)
        object.__setattr__(self, "_starts", tuple(starts))
        object.__setattr__(self, "_up", tuple(ups))

    # -- point queries (any time; the trace repeats every length_s) --------------------------------

    def _locate(self, t: float) -> tuple[float, int]:
        base = math.floor(t / self.length_s) * self.length_s
        return base, bisect.bisect_right(self._starts, max(0.0, t - base)) - 1

    def up(self, t: float) -> bool:
        """Is at least one machine available at time ``t``?"""
        return self._up[self._locate(t)[1]]

    def available(self, t: float) -> int:
        """Machines available at time ``t``."""
        base = math.floor(t / self.length_s) * self.length_s
        return self.values[bisect.bisect_right(self.times, max(0.0, t - base)) - 1]

    def _next_change(self, t: float) -> float:
        """The first time after ``t`` at which availability (up or down) flips; ``inf`` if never."""
        base, i = self._locate(t)
        if i + 1 < len(self._starts):
            return base + self._starts[i + 1]
        if len(self._starts) == 1:
            return math.inf
        # the last segment runs into the next cycle's first one; they differ unless the cycle joins them
        if self._up[0] != self._up[i]:
            return base + self.length_s + self._starts[0]
        return base + self.length_s + self._starts[1]

    def next_up(self, t: float) -> float:
        """The first time >= ``t`` with a machine available (``inf`` if the trace never has one)."""
        return t if self.up(t) else self._next_change(t)

    def next_down(self, t: float) -> float:
        """The first time >= ``t`` with no machine available (``inf`` if the trace never runs out)."""
        return self._next_change(t) if self.up(t) else t

    # -- summary ---------------------------------------------------------------------------------

    def stats(self) -> dict[str, float]:
        """Share of time available, outages (count, mean, longest) and mean time between them, in seconds."""
        ends = list(self._starts[1:]) + [self.length_s]
        spans = [(up, end - start) for up, start, end in zip(self._up, self._starts, ends)]
        if len(spans) > 1 and spans[0][0] == spans[-1][0]:  # the cycle joins the last and first segments
            spans = [(spans[0][0], spans[0][1] + spans[-1][1])] + spans[1:-1]
        downs = [d for up, d in spans if not up]
        ups = [d for up, d in spans if up]
        return {"length_s": self.length_s, "available_share": sum(ups) / self.length_s,
                "outages": float(len(downs)), "outage_mean_s": sum(downs) / len(downs) if downs else 0.0,
                "outage_max_s": max(downs, default=0.0),
                "uptime_mean_s": sum(ups) / len(ups) if ups else 0.0}

    def to_csv(self) -> str:
        """The trace in its own format (comment lines for its machine)."""
        lines = [f"# machine: {self.machine}"] if self.machine else []
        lines.append(",".join(HEADER))
        lines += [f"{_num(t)},{v}" for t, v in zip(self.times, self.values)]
        return "\n".join(lines) + "\n"


def load_trace(path: str | Path) -> Trace:
    """Read a CSV trace; bad input is one line naming the file, the line and the fix."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{p}: cannot read the trace ({type(exc).__name__}); check the path") from None
    return parse_trace(text, str(p), p.stem)


def parse_trace(text: str, where: str = "trace", name: str = "trace") -> Trace:
    """Parse the CSV text of a trace (see the module docstring for the format)."""
    machine = None
    header_seen = False
    times: list[float] = []
    values: list[int] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            key, _, value = stripped.lstrip("#").partition(":")
            if key.strip().lower() == "machine" and value.strip():
                machine = value.strip()
            continue
        fields = [f.strip() for f in stripped.split(",")]
        if not header_seen:
            if tuple(f.lower() for f in fields) != HEADER:
                raise SpecError(f"{where}:{number}: the header must be 'time,available', not {stripped!r}")
            header_seen = True
            continue
        if len(fields) != 2:
            raise SpecError(f"{where}:{number}: {stripped!r} has {len(fields)} fields; write time,available")
        t = _float(fields[0])
        if t is None or t < 0:
            raise SpecError(f"{where}:{number}: time {fields[0]!r} is not a number of seconds >= 0")
        if times and t <= times[-1]:
            raise SpecError(f"{where}:{number}: time {fields[0]} does not come after {_num(times[-1])}; "
                            "rows must be in increasing time")
        v = _float(fields[1])
        if v is None or v < 0 or v != int(v):
            raise SpecError(f"{where}:{number}: available {fields[1]!r} is not a whole number of machines >= 0")
        times.append(t)
        values.append(int(v))
    if not header_seen:
        raise SpecError(f"{where}: no 'time,available' header; the first line that is not a comment names the columns")
    if len(times) < 2:
        raise SpecError(f"{where}: {len(times)} row(s); a trace needs at least two (the last step ends it)")
    start = times[0]
    shifted = tuple(t - start for t in times)
    length = shifted[-1] + (shifted[-1] - shifted[-2])
    return Trace(shifted, tuple(values), length, name=name, machine=machine)


def from_samples(values: Sequence[int], gap_s: float, name: str = "trace", machine: str | None = None) -> Trace:
    """A trace sampled every ``gap_s`` seconds."""
    if not values:
        raise SpecError(f"{name}: no samples")
    if not gap_s > 0:
        raise SpecError(f"{name}: the gap between samples must be > 0 s, not {gap_s!r}")
    return Trace(tuple(i * float(gap_s) for i in range(len(values))), tuple(int(v) for v in values),
                 len(values) * float(gap_s), name=name, machine=machine)


def from_skypilot(path: str | Path, machine: str | None = None) -> Trace:
    """Convert a "Can't Be Late" availability trace (skypilot-org/spot-traces, JSON) to a Trace."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
        gap = float(doc["metadata"]["gap_seconds"])
        data = [int(v) for v in doc["data"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SpecError(f"{p}: not a spot-traces file ({type(exc).__name__}: {exc}); expected "
                        '{"metadata": {"gap_seconds": N}, "data": [counts]}') from None
    return from_samples(data, gap, name=p.stem, machine=machine)


def from_columns(text: str, time_column: str, value_column: str, threshold: float | None = None,
                 where: str = "input", name: str = "trace", machine: str | None = None) -> Trace:
    """Convert a CSV with a timestamp column (epoch seconds or ISO 8601) and a value column.

    With ``threshold``, a value at or above it counts as one machine available and below it as
    none (e.g. SpotLake's spot placement score, 1 to 3: ``threshold=2``); without, values are counts.
    Rows are sorted by time; repeated times keep the last value; lines starting with ``#`` are skipped.
    """
    lines = ["" if line.lstrip().startswith("#") else line for line in text.splitlines()]  # comments: blank
    skipped = next((i for i, line in enumerate(lines) if line.strip()), len(lines))  # the header's line - 1
    reader = csv.DictReader(io.StringIO("\n".join(lines[skipped:])))
    missing = [c for c in (time_column, value_column) if c not in (reader.fieldnames or [])]
    if missing:
        raise SpecError(f"{where}: no column {missing[0]!r}; the columns are {', '.join(reader.fieldnames or [])}")
    rows: dict[float, int] = {}
    for row in reader:
        number = reader.line_num + skipped
        t = _timestamp(row[time_column])
        v = _float(row[value_column])
        if t is None or v is None:
            raise SpecError(f"{where}:{number}: cannot read time {row[time_column]!r} or value {row[value_column]!r}")
        rows[t] = (1 if v >= threshold else 0) if threshold is not None else int(v)
    if len(rows) < 2:
        raise SpecError(f"{where}: fewer than two rows to make a trace of")
    ordered = sorted(rows.items())
    start = ordered[0][0]
    times = tuple(t - start for t, _ in ordered)
    return Trace(times, tuple(v for _, v in ordered), times[-1] + (times[-1] - times[-2]), name=name, machine=machine)


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _timestamp(text: str) -> float | None:
    number = _float(text)
    if number is not None:
        return number
    try:
        moment = dt.datetime.fromisoformat(str(text).strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
