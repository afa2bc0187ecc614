"""The quick fault table under pytest (what CI runs): every registered group, zero losses.

One test per group of ``benchmarks/faults.REGISTRY``, with ``--quick`` sizes and the session's
emulator fixtures; ``make faults`` runs the full table. A group this machine cannot run (no root
for a tmpfs) skips, or fails with RUNNER_REQUIRE_DOCKER=1 as in CI.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from benchmarks.faults import REGISTRY, FaultContext, Row, run_group

EMULATOR_FIXTURE = {"s3": "moto_server", "gs": "gcs_emulator", "az": "azurite"}
#: Groups of other files (e.g. the watcher's) have their own pytest tests; these are this file's.
MINE = ("sigkill-writer", "sigkill-task", "store-faults", "disk-full", "notice-during-upload", "exec-torn-saves",
        "metadata-faults")


@pytest.mark.parametrize("name,target", [(n, t) for n, t in REGISTRY if n in MINE], ids=lambda v: v)
def test_quick_fault_group_loses_nothing(name: str, target: str, request: pytest.FixtureRequest,
                                         tmp_path: Path) -> None:
    seed = random.SystemRandom().randrange(1 << 30)
    ctx = FaultContext(quick=True, seed=seed, workdir=tmp_path,
                       emulators={k: (lambda f=f: request.getfixturevalue(f)) for k, f in EMULATOR_FIXTURE.items()})
    rows = run_group(name, target, ctx)
    table = "\n".join(f"{r.case}: {r.trials} trials, {r.losses} losses; {r.notes}" for r in rows)
    unavailable = [r for r in rows if r.notes.startswith("unavailable")]
    if unavailable:
        if os.environ.get("RUNNER_REQUIRE_DOCKER") == "1":
            pytest.fail(f"seed {seed}: {table}", pytrace=False)
        pytest.skip(table)
    assert all(r.trials > 0 for r in rows), f"seed {seed}: a case ran no trial:\n{table}"
    assert sum(r.losses for r in rows) == 0, f"seed {seed} (rerun: benchmarks/faults.py --quick --seed {seed} " \
                                             f"--only {name}):\n{table}"


def toy_case(ctx: FaultContext) -> list[Row]:
    """A stand-in group for the harness test: its timings depend on the seed."""
    rng = ctx.rng("toy")
    call, commit = rng.uniform(0.1, 2.0), rng.uniform(1.0, 40.0)
    return [Row("toy row", 5, 0, f"seed {ctx.seed}",
                {"store_call_s": call, "commit_s": commit, "commits": 2, "commits_30s": int(commit < 30) + 1})]


STARTED: list[Any] = []   # the s3 emulator's process of each seed
EARLIER_ALIVE: list[bool] = []  # whether an earlier seed's emulator still ran when a seed began


def emulator_case(ctx: FaultContext) -> list[Row]:
    """A stand-in group that uses the s3 emulator (moto) and notes which process served it."""
    EARLIER_ALIVE.extend(p.poll() is None for p in STARTED)
    STARTED.append(ctx.emulator("s3").process)
    return [Row("emulator row", 1, 0)]


def test_make_faults_stops_each_seeds_emulators_when_the_seed_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GCS emulator keeps every object in RAM: eleven seeds' worth of emulators, all kept until the
    end of the run, held over 10 GB on the machine."""
    from benchmarks import faults

    monkeypatch.setattr(faults, "REGISTRY", [("emu", "tests.faults.test_fault_table:emulator_case")])
    STARTED.clear()
    EARLIER_ALIVE.clear()
    assert faults.main(["--seed", "1", "--seed", "2"]) == 0
    assert len(STARTED) == 2 and STARTED[0] is not STARTED[1]  # one emulator per seed
    assert EARLIER_ALIVE == [False]                            # seed 1's stopped before seed 2 began
    assert all(p.poll() is not None for p in STARTED)          # and none left after the run


def test_make_faults_runs_each_seed_and_reports_the_spread(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import faults

    monkeypatch.setattr(faults, "REGISTRY", [("toy", "tests.faults.test_fault_table:toy_case")])
    assert faults.main(["--seed", "1", "--seed", "2", "--seeds", "1", "--markdown"]) == 0
    out, err = capsys.readouterr()
    per_seed = [Row("toy row", 5, 0, "", toy_case(FaultContext(True, s, Path(".")))[0].stats) for s in (1, 2)]
    assert "-- seed 1: 5 trials, 0 losses" in err and "-- seed 2: 5 trials, 0 losses" in err
    header, _, line = out.splitlines()[:3]
    assert header == ("| case | trials | losses | longest store call (s) | longest commit (s) | commits | "
                      "inside 30 s | notes |")
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:3] == ["toy row", "15", "0"] and cells[5] == "6"
    calls = sorted(r.stats["store_call_s"] for r in per_seed)  # type: ignore[index]
    low, high = cells[3].split("-") if "-" in cells[3] else (cells[3], cells[3])
    assert float(high) >= round(calls[-1], 2) and float(low) <= round(calls[0], 2) + 0.01
    assert "3 seed(s) 1, 2, " in out and "15 trials, 0 losses" in out


def test_make_faults_saves_each_seed_and_builds_the_table_from_saved_seeds(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from benchmarks import faults

    monkeypatch.setattr(faults, "REGISTRY", [("toy", "tests.faults.test_fault_table:toy_case")])
    saved = tmp_path / "seeds"
    assert faults.main(["--seed", "1", "--seed", "2", "--save", str(saved)]) == 0  # one sitting
    assert faults.main(["--seed", "3", "--save", str(saved)]) == 0                 # a later one
    assert sorted(p.name for p in saved.iterdir()) == ["seed-1.json", "seed-2.json", "seed-3.json"]
    capsys.readouterr()
    assert faults.main(["--load", str(saved), "--markdown"]) == 0  # nothing new runs
    out, err = capsys.readouterr()
    assert "== seed" not in err and err.count("loaded (") == 3
    line = out.splitlines()[2]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:3] == ["toy row", "15", "0"] and cells[5] == "6"
    assert "3 seed(s) 1, 2, 3 (3 loaded, run " in out
    assert faults.main(["--seed", "2", "--save", str(saved)]) == 0  # seed 2 again: its rows replaced, on record
    doc = json.loads((saved / "seed-2.json").read_text())
    assert len(doc["rows"]) == 1 and [r["groups"] for r in doc["reruns"]] == [["toy"]]
    assert doc["reruns"][0]["replaced"][0]["case"] == "toy row"
    capsys.readouterr()
    assert faults.main(["--load", str(saved), "--markdown"]) == 0
    out, err = capsys.readouterr()
    assert "toy run again" in err and "| toy row | 15 | 0 |" in out
    (saved / "seed-9.json").write_text("{not json")
    with pytest.raises(SystemExit, match="seed-9.json: not a saved seed"):
        faults.main(["--load", str(saved)])
    with pytest.raises(SystemExit, match="no such folder"):
        faults.main(["--load", str(tmp_path / "missing")])
