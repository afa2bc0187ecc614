"""Issue 13, "what it must show" 1: cloud blips never burn a budget; a refused request fails at once.

Through `runner submit` (the CLI, the watcher, the real SDK clients) on each cloud: AWS Batch via
moto, Google Cloud Batch and Azure Batch via their stand-ins, and the local engine too. A
:class:`FaultProxy` sits between the SDK and the service and fails 30% of the submit and poll
requests (connection resets, 503, 429, S3-style SlowDown), up to five in a row, so the SDKs' own
retries run out and the runner's translation (BackendUnavailable: waited out) is exercised.

- Every job ends SUCCEEDED with one attempt, ``runner status --json`` says failures 0, the
  ledger's failure budget is untouched, and the service holds exactly one job per attempt key.
- A request the service refuses (AWS: a job queue that does not exist, 400 ClientException;
  GCP: an unknown machine type, 400 INVALID_ARGUMENT; Azure: a pool that does not exist, 404;
  local: a command that is not in the image) fails its attempt at once: the job FAILED after one
  attempt, one line saying why, the refused request sent once.

DNS failures are in tests/backends/test_dns.py (no engine needed).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.ledger import Ledger
from tests.backends.clouds import TINY, Cloud
from tests.e2e.conftest import ROOT
from tests.faults.proxy import FaultProxy

pytestmark = [pytest.mark.docker]

FAULTS = ("reset", "503", "429", "slowdown")
RATE = 0.3
JOBS = 3
#: Seeds whose first 15 fault decisions hold at least 5 faults, 3 in a row among them: every run
#: makes at least 15 matching requests (3 jobs, each a submit and 4 polls or more), so at least 5
#: faults are injected whatever order the processes' requests come in.
SEEDS = {"aws": 7, "gcp": 45, "azure": 77, "local": 63}
SHORT = "import time; time.sleep(2); print('done', flush=True)"  # polled 4 times or more at --interval 0.5
REFUSED = {  # backend -> (spec changes, words the one line must hold)
    "aws": ({"job_queue": "no-such-queue"}, "no-such-queue"),
    "gcp": ({"machine_type": "x9-imaginary-64"}, "x9-imaginary-64"),
    "azure": ({"pool_id": "no-such-pool"}, "no-such-pool"),
    "local": ({"command": ["/no/such/program"]}, "/no/such/program"),
}


def cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "runner.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)


def finish(procs: list[subprocess.Popen[str]], timeout: float = 300) -> list[str]:
    """Wait for every process and return their outputs; none is left running, whatever happens."""
    try:
        return [proc.communicate(timeout=timeout)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def status(job_id: str, env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "runner.cli", "status", job_id, "--json"], check=False,
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(json.loads(proc.stdout))


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


def submitted_id(output: str) -> str:
    first = next(line for line in output.splitlines() if line.startswith("submitted "))
    return first.split()[1]


@pytest.mark.parametrize("name", ["aws", "gcp", "azure", "local"])
def test_jobs_finish_under_transient_faults_and_no_budget_is_charged(clouds: Any, name: str, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    cloud: Cloud = clouds[name]
    started = time.monotonic()
    with FaultProxy(cloud.upstream, seed=SEEDS[name], rate=RATE, faults=FAULTS, max_in_row=5,
                    fault_match=lambda m, p: cloud.submit_match(m, p) or cloud.poll_match(m, p)) as proxy:
        env = cloud.env(tmp_path, proxy.url)
        procs = [cli(["submit", str(write_spec(tmp_path / f"blip{i}.yaml",
                                               cloud.spec(f"blip{i}", SHORT, endpoint=proxy.url))),
                      "--interval", "0.5"], env) for i in range(JOBS)]
        outputs = finish(procs)
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out
    elapsed = time.monotonic() - started
    assert "Traceback" not in "".join(outputs)
    waited = sum(o.count("waits for its backend") + o.count("state unknown") for o in outputs)
    with Ledger(tmp_path / "ledger.db") as ledger:
        for out in outputs:
            job_id = submitted_id(out)
            report = status(job_id, env)
            assert report["state"] == "SUCCEEDED" and report["failures"] == 0, report
            assert [a["state"] for a in report["attempt_list"]] == ["SUCCEEDED"], report["attempt_list"]
            job = ledger.get_job(job_id)
            assert job.failures_used == 0 and job.preemptions_used == 0, job
            [attempt] = ledger.attempts(job_id)
            assert cloud.count(attempt.key) == 1, f"{attempt.key} submitted {cloud.count(attempt.key)} times"
    assert sum(proxy.injected.values()) >= 5, proxy.injected  # the faults did happen
    with capsys.disabled():
        print(f"\n[{name}] {JOBS} jobs SUCCEEDED, failures 0, under {RATE:.0%} faults on submit and poll: "
              f"{proxy.requests} requests, injected {proxy.summary()}; {waited} reached the watcher as "
              f"BackendUnavailable/UNKNOWN (the rest the SDK retried); {elapsed:.1f} s")


@pytest.mark.parametrize("name", ["aws", "gcp", "azure", "local"])
def test_a_refused_request_fails_at_once_with_one_line(clouds: Any, name: str, tmp_path: Path) -> None:
    cloud: Cloud = clouds[name]
    changes, words = REFUSED[name]
    seen: list[tuple[str, str]] = []
    with FaultProxy(cloud.upstream, seed=SEEDS[name], rate=RATE, faults=FAULTS, max_in_row=2,
                    fault_match=cloud.poll_match, on_request=lambda m, p: seen.append((m, p))) as proxy:
        spec = cloud.spec("refused", TINY, endpoint=proxy.url, retries={"failures": 0, "preemptions": 3})
        if "command" in changes:
            spec["command"] = changes["command"]
        else:
            spec[name] = {**spec[name], **changes}
        started = time.monotonic()
        proc = cli(["submit", str(write_spec(tmp_path / "refused.yaml", spec)), "--interval", "0.5"],
                   cloud.env(tmp_path, proxy.url))
        [out] = finish([proc], 180)
        elapsed = time.monotonic() - started
    assert proc.returncode == 1, out
    assert "Traceback" not in out
    lines = [line for line in out.splitlines() if "could not be submitted" in line]
    assert len(lines) == 1 and words in lines[0], out
    report = status(submitted_id(out), cloud.env(tmp_path))
    assert report["state"] == "FAILED" and report["failures"] == 1, report
    [attempt] = report["attempt_list"]
    assert attempt["state"] == "FAILED" and attempt["backend_id"] is None
    assert words in attempt["reason"] and "\n" not in attempt["reason"], attempt
    if name != "azure":  # Azure refuses before the task is sent: its pool is looked up first
        assert sum(cloud.submit_match(m, p) for m, p in seen) == 1, seen  # sent once: not retried
    assert elapsed < 60, f"{elapsed:.0f} s"


@pytest.mark.parametrize("name", ["aws", "gcp", "azure"])
def test_a_lost_submit_answer_is_looked_up_not_sent_again(clouds: Any, name: str, tmp_path: Path) -> None:
    """The service creates the job but the answer is lost (a 500 after the fact, a cut body).

    GCP and Azure refuse a second job or task of the same id (the runner's key) and the backend
    adopts it; AWS Batch accepts a second job of the same name, so the backend looks the key up
    before it sends SubmitJob again (and the SDK does not resend it on its own).
    """
    cloud: Cloud = clouds[name]
    lost: list[str] = []

    def first_two_submits(method: str, path: str) -> bool:
        if cloud.submit_match(method, path) and len(lost) < 2:
            lost.append(path)
            return True
        return False

    with FaultProxy(cloud.upstream, seed=SEEDS[name], rate=1.0, faults=("late-500", "truncated"), max_in_row=2,
                    fault_match=first_two_submits) as proxy:
        env = cloud.env(tmp_path, proxy.url)
        procs = [cli(["submit", str(write_spec(tmp_path / f"lost{i}.yaml", cloud.spec(f"lost{i}", TINY,
                                                                                     endpoint=proxy.url))),
                      "--interval", "0.5"], env) for i in range(2)]
        outputs = finish(procs)
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sum(proxy.injected.values()) == 2, proxy.injected
    with Ledger(tmp_path / "ledger.db") as ledger:
        for out in outputs:
            [attempt] = ledger.attempts(submitted_id(out))
            assert attempt.state.value == "SUCCEEDED" and cloud.count(attempt.key) == 1, \
                f"{attempt.key}: {cloud.count(attempt.key)} jobs on the service\n{out}"
