"""Availability traces: the CSV format, its one-line errors, point queries across the wrap, conversions."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from runner.capacity.trace import (
    Trace,
    from_columns,
    from_samples,
    from_skypilot,
    load_trace,
    parse_trace,
)
from runner.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]
TEXT = """# zone x: a test trace
# machine: aws:us-east-1:p3.2xlarge
time,available
100,2
400,0   
1300,0
1900,1

2500,3
"""


def test_a_trace_reads_with_comments_machine_and_its_length():
    t = parse_trace(TEXT.replace("   \n", "\n"), "x.csv", "x")
    assert t.times == (0.0, 300.0, 1200.0, 1800.0, 2400.0) and t.values == (2, 0, 0, 1, 3)
    assert t.length_s == 3000.0  # the last row holds as long as the step before it
    assert t.machine == "aws:us-east-1:p3.2xlarge"
    assert [t.up(x) for x in (0, 299, 300, 1799, 1800, 2999)] == [True, True, False, False, True, True]
    assert t.available(2500) == 3 and t.available(3000 + 10) == 2  # it repeats
    assert parse_trace(t.to_csv()).values == t.values  # its own format round-trips


def test_next_up_and_down_go_across_the_end_of_the_trace():
    t = from_samples([1, 0, 0, 1, 1], 100)  # up [0,100), down [100,300), up [300,500): it joins the next [500,600)
    assert t.next_up(50) == 50 and t.next_down(50) == 100
    assert t.next_up(150) == 300 and t.next_down(150) == 150
    assert t.next_down(350) == 600.0 and t.next_down(450) == 600.0  # the last up segment runs into the first
    assert t.next_up(520) == 520 and t.next_down(520) == 600
    assert t.next_up(620) == 500 + 300 and t.next_down(620) == 620
    assert t.next_up(1150) == 1000 + 300
    stats = t.stats()
    assert stats["available_share"] == pytest.approx(0.6) and stats["outages"] == 1
    assert stats["outage_max_s"] == 200 and stats["uptime_mean_s"] == 300  # the joined segment: 100 + 200
    never = from_samples([0, 0, 0], 60)
    assert never.next_up(10) == math.inf and never.next_down(10) == 10
    always = from_samples([2, 1, 4], 60)
    assert always.next_down(10) == math.inf and always.stats()["outages"] == 0


@pytest.mark.parametrize("text,message", [
    ("", "no 'time,available' header"),
    ("# only a comment\n", "no 'time,available' header"),
    ("t,avail\n0,1\n", r"t.csv:1: the header must be 'time,available', not 't,avail'"),
    ("time,available\n0,1\n", "1 row"),
    ("time,available\n0,1\n60\n", r"t.csv:3: '60' has 1 fields"),
    ("time,available\n0,1\n60,1,2\n", r"t.csv:3: '60,1,2' has 3 fields"),
    ("time,available\n0,1\nsoon,1\n", r"t.csv:3: time 'soon' is not a number of seconds >= 0"),
    ("time,available\n0,1\n-5,1\n", r"t.csv:3: time '-5' is not a number"),
    ("time,available\n0,1\nnan,1\n", r"t.csv:3: time 'nan' is not a number"),
    ("time,available\n0,1\n60,1\n60,0\n", r"t.csv:4: time 60 does not come after 60"),
    ("time,available\n0,1\n60,-1\n", r"t.csv:3: available '-1' is not a whole number"),
    ("time,available\n0,1\n60,1.5\n", r"t.csv:3: available '1.5' is not a whole number"),
    ("time,available\n0,1\n60,lots\n", r"t.csv:3: available 'lots' is not a whole number"),
])
def test_bad_traces_are_one_line_naming_file_and_line(tmp_path: Path, text: str, message: str):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(SpecError, match=message) as info:
        load_trace(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_an_unreadable_trace_is_one_line(tmp_path: Path):
    with pytest.raises(SpecError, match=r"missing.csv: cannot read the trace \(FileNotFoundError\); check the path"):
        load_trace(tmp_path / "missing.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00time")
    with pytest.raises(SpecError, match="cannot read the trace"):
        load_trace(tmp_path / "bin.csv")
    with pytest.raises(SpecError, match="starts at time 0"):
        Trace((5.0, 10.0), (1, 0), 20.0)


def test_skypilot_json_converts(tmp_path: Path):
    path = tmp_path / "us-east-1a_v100_1.json"
    path.write_text(json.dumps({"metadata": {"gap_seconds": 195}, "data": [0, 0, 1, 1, 1, 0]}))
    t = from_skypilot(path, machine="aws:us-east-1:p3.2xlarge")
    assert t.times[2] == 390.0 and t.length_s == 6 * 195 and t.up(400) and not t.up(1000)
    path.write_text('{"data": [1, 0]}')
    with pytest.raises(SpecError, match="not a spot-traces file"):
        from_skypilot(path)


def test_timestamped_columns_convert_with_a_threshold():
    text = ("time,region,SPS\n2024-03-01T00:10:00Z,us-east-1,3\n2024-03-01T00:00:00Z,us-east-1,1\n"
            "2024-03-01T00:20:00+00:00,us-east-1,2\n2024-03-01T00:30:00Z,us-east-1,1\n")
    t = from_columns(text, "time", "SPS", threshold=2)
    assert t.times == (0.0, 600.0, 1200.0, 1800.0) and t.values == (0, 1, 1, 0) and t.length_s == 2400.0
    assert from_columns("at,n\n0,3\n300,0\n", "at", "n").values == (3, 0)
    with pytest.raises(SpecError, match="no column 'SPS'; the columns are at, n"):
        from_columns("at,n\n0,3\n", "at", "SPS")
    with pytest.raises(SpecError, match=r"input:3: cannot read time 'later'"):
        from_columns("at,n\n0,3\nlater,1\n", "at", "n")
    with pytest.raises(SpecError, match=r"input:5: cannot read time 'later'"):
        from_columns("# exported\nat,n\n# a note\n0,3\nlater,1\n", "at", "n")


def test_the_convert_script_writes_a_trace_the_replay_reads(tmp_path: Path):
    source = tmp_path / "zone.json"
    source.write_text(json.dumps({"metadata": {"gap_seconds": 300}, "data": [1, 1, 0, 2]}))
    target = tmp_path / "zone.csv"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/traces/convert.py"), "skypilot", str(source),
                           str(target), "--machine", "aws:us-east-1:p3.2xlarge"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    t = load_trace(target)
    assert t.values == (1, 1, 0, 2) and t.length_s == 1200.0 and t.machine == "aws:us-east-1:p3.2xlarge"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/traces/convert.py"), "columns", str(target),
                           str(tmp_path / "x.csv"), "--value-column", "machines"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no column 'machines'" in proc.stderr


def test_the_shipped_traces_load_and_differ():
    shares = {}
    for path in sorted((ROOT / "benchmarks/traces").glob("*.csv")):
        t = load_trace(path)
        assert t.length_s == 7 * 86400 and path.stat().st_size < 300_000 and t.machine
        stats = t.stats()
        assert stats["outage_max_s"] >= 3 * 3600  # outages of hours
        shares[path.stem] = stats["available_share"]
    assert len(shares) == 4 and max(shares.values()) - min(shares.values()) > 0.3
