"""Hostile job specs through the console script: one line, exit 2, quickly, in little memory.

Each class found by a corpus of hostile specs gets one case: numbers beyond 64 bits, a spec path that
is a device or a pipe, a NUL byte in an env value or an argument, an argument list of 300,000 items,
``memory: .inf``, an alias bomb, deep nesting. Every case runs ``runner submit`` in its own process
and must print exactly one ``error:`` line, exit 2, in under 2 s of CPU time (user + system, which a
busy machine does not inflate; wall time is only bounded against hangs) and 200 MB of memory (peak
RSS), with no container started and no job recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE = "name: hostile\nimage: localhost/runner-cifar:latest\n"
MAX_CPU_S = 2.0
MAX_WALL_S = 15.0  # a hang guard only: a shared CI machine may be slow
MAX_RSS_MB = 200


def _bomb() -> str:
    """Nine levels of ten aliases each, inside ``args``: a billion strings if anything expanded it."""
    levels = ["&a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return BASE + "args: [" + ", ".join(levels) + "]\n"


CASES: dict[str, Callable[[Path], str]] = {
    "number beyond 64 bits": lambda d: BASE + "retries: {preemptions: 1180591620717411303424}\n",
    "array beyond 64 bits": lambda d: BASE + "array: 99999999999999999999999999999999\n",
    "float beyond any range": lambda d: BASE + "resources: {cpus: 1e999}\n",
    "huge step count": lambda d: BASE + "checkpoint: {every: 123456789012345678901234567890}\n",
    "NUL byte in an env value": lambda d: BASE + 'env: {GREETING: "hello\\x00world"}\n',
    "NUL byte in an argument": lambda d: BASE + 'args: ["--data\\x00x"]\n',
    "300,000 arguments": lambda d: BASE + "args: [" + ",".join(["a"] * 300_000) + "]\n",
    "100,000 arguments": lambda d: BASE + "args: [" + ",".join(["a"] * 100_000) + "]\n",
    "memory .inf": lambda d: BASE + "resources: {memory: .inf}\n",
    "memory 1e30Gi": lambda d: BASE + "resources: {memory: 1e30Gi}\n",
    "timeout of a million hours": lambda d: BASE + "timeout: 1000000h\n",
    "alias bomb (a billion laughs)": lambda d: _bomb(),
    "deep nesting": lambda d: BASE + "args: " + "[" * 5000 + "]" * 5000 + "\n",
    "10,000 env entries": lambda d: BASE + "env:\n" + "".join(f"  V{i}: x\n" for i in range(10_000)),
    "a 10 MB value": lambda d: BASE + "env: {BIG: " + "a" * (10 << 20) + "}\n",
}
PATHS: dict[str, Callable[[Path], Path]] = {
    "a device that never ends (/dev/zero)": lambda d: Path("/dev/zero"),
    "a device (/dev/null)": lambda d: Path("/dev/null"),
    "a pipe nobody writes to": lambda d: _fifo(d),
    "a folder": lambda d: d,
}


def _fifo(folder: Path) -> Path:
    path = folder / "spec.fifo"
    os.mkfifo(path)
    return path


# A fresh, small process runs the console script and reports that child's own peak RSS and CPU: Linux
# carries a process's RSS high-water mark across exec, so a child forked straight from this pytest
# (hundreds of MB once torch is imported) would report pytest's size, not the runner's.
_MEASURE = """
import json, resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(json.dumps([code, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024]))
"""


def run_cli(args: list[str], home: Path) -> tuple[int, str, float, float, float]:
    """Run the console script; return (exit code, stderr, wall s, CPU s, peak RSS in MB)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env["RUNNER_HOME"] = str(home)
    report = home.parent / "usage.json"
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-S", "-c", _MEASURE, str(report), sys.executable, "-m",
                             "runner.cli", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"runner {' '.join(args)[:80]} hung for 30 s")
    wall = time.monotonic() - started
    code, cpu, rss = json.loads(report.read_text())
    return code, err, wall, cpu, rss


def check(code: int, err: str, wall: float, cpu: float, rss: float, home: Path) -> None:
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}: {err[-500:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert "Traceback" not in err
    assert cpu < MAX_CPU_S, f"used {cpu:.2f}s of CPU: {lines[0][:200]}"
    assert wall < MAX_WALL_S, f"took {wall:.2f}s: {lines[0][:200]}"
    assert rss < MAX_RSS_MB, f"peak RSS {rss:.0f} MB: {lines[0][:200]}"
    assert not (home / "ledger.db").exists() or b"hostile" not in (home / "ledger.db").read_bytes()


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_hostile_spec_is_one_line_exit_2_fast_and_small(case: str, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(CASES[case](tmp_path))
    code, err, wall, cpu, rss = run_cli(["submit", str(spec)], tmp_path / "home")
    check(code, err, wall, cpu, rss, tmp_path / "home")


@pytest.mark.parametrize("case", list(PATHS), ids=list(PATHS))
def test_a_spec_path_that_is_not_a_file_is_refused_at_once(case: str, tmp_path: Path) -> None:
    path = PATHS[case](tmp_path)
    code, err, wall, cpu, rss = run_cli(["submit", str(path)], tmp_path / "home")
    check(code, err, wall, cpu, rss, tmp_path / "home")
    assert str(path) in err


def test_set_values_are_bounded_too(tmp_path: Path) -> None:
    spec = ROOT / "jobs" / "cifar-smoke.yaml"
    for setting in ("retries.failures=1180591620717411303424", "resources.memory=.inf", 'env.X="a\\x00b"',
                    "array=0", "checkpoint.keep=-1"):
        code, err, wall, cpu, rss = run_cli(["submit", str(spec), "--set", setting], tmp_path / "home")
        check(code, err, wall, cpu, rss, tmp_path / "home")
