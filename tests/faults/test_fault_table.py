"""The quick fault table under pytest (what CI runs): every registered group, zero losses.

One test per group of ``benchmarks/faults.REGISTRY``, with ``--quick`` sizes and the session's
emulator fixtures; ``make faults`` runs the full table. A group this machine cannot run (no root
for a tmpfs) skips, or fails with RUNNER_REQUIRE_DOCKER=1 as in CI.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from benchmarks.faults import REGISTRY, FaultContext, run_group

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
