"""A deadline through simulated spot outages on the local engine: the job switches to on-demand when spot
capacity is gone and it would fall behind, back to spot when capacity returns, finishes in time with the
weights of an uninterrupted run, and `runner status` shows which attempt ran on what and what each cost.

The numbers (30 epochs; spot gone from 10 s to 40 s; a 180 s deadline) were set where the work took
about 70 s: `auto` waits for spot a while, then takes on-demand, then returns to spot when the outage
ends. With a looser deadline it would wait the outage out on spot, with a tighter one it would stay on
demand, so all three scale with the uninterrupted run's wall time on this machine (a quiet machine
finished it in 40 s and rightly waited the outage out).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.conftest import runner, smoke_spec, status_json

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DEADLINE_S = 180
OUTAGE_S = (10, 40)
#: The uninterrupted run's wall time the numbers above were set for.
CALIBRATED_WALL_S = 70


def test_deadline_through_spot_outages_switches_capacity_and_finishes_in_time(tmp_path: Path) -> None:
    spec = smoke_spec(tmp_path, epochs=30)
    plain = runner("submit", str(spec), "--interval", "1", home=tmp_path / "plain", timeout=600)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    plain_status = status_json(plain.stdout.split()[1], tmp_path / "plain")
    reference = plain_status["weights_sha256"]
    scale = min(max(plain_status["wall_s"] / CALIBRATED_WALL_S, 0.5), 3.0)
    deadline, (gone, back) = round(DEADLINE_S * scale), (round(t * scale) for t in OUTAGE_S)
    print(f"\nuninterrupted run {plain_status['wall_s']:.0f} s: scale {scale:.2f}, spot gone {gone}-{back} s, "
          f"deadline {deadline} s")

    home = tmp_path / "deadline"
    proc = runner("submit", str(spec), "--set", f"deadline={deadline}s", "--simulate-preemption",
                  f"outages={gone}s-{back}s,notice=3s", "--interval", "1", home=home, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    job_id = proc.stdout.split()[1]
    status = status_json(job_id, home)
    attempts = status["attempt_list"]
    capacities = [a["capacity"] for a in attempts]
    assert "on-demand" in capacities, out[-4000:]
    first_od = capacities.index("on-demand")
    assert "spot" in capacities[first_od + 1:], f"never back to spot: {capacities}\n{out[-3000:]}"
    assert attempts[-1]["state"] == "SUCCEEDED"
    assert attempts[-1]["ended_at"] - min(a["submitted_at"] or a["started_at"] for a in attempts) < deadline
    assert status["weights_sha256"] == reference
    # every switch is its own kind of stop, charged to no budget
    assert status["failures"] == 0 and all(a["state"] != "FAILED" for a in attempts)
    assert any("switch capacity" in a["reason"] or "made way" in a["reason"] or a["stop_requested"] == "switch"
               for a in attempts)
    shown = runner("status", job_id, home=home).stdout
    assert re.search(r"attempt \d+ \(on-demand\): .* spend \$", shown) and re.search(r"attempt \d+ \(spot\)", shown)
    cost = status["cost"]
    od = [c for c, a in zip(sorted(cost["attempts"], key=lambda c: (c["index"], c["number"])), attempts)
          if a["capacity"] == "on-demand" and c["machine_s"] > 1]
    for c in od:  # an on-demand attempt is priced at the on-demand rate
        assert c["spend"] == pytest.approx(c["machine_s"] / 3600 * cost["price"]["on_demand_per_hour"], rel=0.01)
