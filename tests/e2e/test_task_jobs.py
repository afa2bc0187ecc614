"""Issue 5 end to end: the ImageNet and BERT smoke jobs under `runner submit` on the local engine,
through simulated preemptions of both kinds, end with the weights of their uninterrupted runs."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import runner, smoke_spec, status_json

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def submit(tmp_path, source: str, *extra: str) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    spec = smoke_spec(tmp_path, name=f"{source}.yaml", epochs=6, source=source)
    proc = runner("submit", str(spec), "--interval", "1", *extra, home=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    return status_json(proc.stdout.split()[1], tmp_path)


@pytest.mark.parametrize("source", ["imagenet-smoke", "bert-smoke"])
def test_smoke_job_survives_preemptions(tmp_path, docker_client, source):
    whole = submit(tmp_path / "whole", source)
    cut = submit(tmp_path / "cut", source, "--simulate-preemption", "every=6s,notice=3s,mode=mixed,count=3")
    reasons = [a["reason"] for a in cut["attempt_list"] if a["state"] == "PREEMPTED"]
    assert len(reasons) >= 3, cut["attempt_list"]
    assert any("notice" in r for r in reasons) and any("preemptor" in r for r in reasons), reasons
    assert cut["weights_sha256"] == whole["weights_sha256"]
    assert whole["result"]["metrics"] and cut["result"]["metrics"] == whole["result"]["metrics"]
