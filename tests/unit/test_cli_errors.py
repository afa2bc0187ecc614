"""Wrong specs and arguments through the real CLI: one line naming the problem, exit 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOOD = (ROOT / "jobs" / "cifar-smoke.yaml").read_text()

CASES = {
    "bad-yaml": "name: [unclosed\n",
    "top-level-list": "- a\n- b\n",
    "empty": "",
    "unknown-field": GOOD + "resurces: {}\n",
    "unknown-nested": GOOD.replace("cpus: 2", "cpus: 2\n  cpu_count: 2"),
    "wrong-type-cpus": GOOD.replace("cpus: 2", "cpus: two"),
    "negative-cpus": GOOD.replace("cpus: 2", "cpus: -1"),
    "zero-cpus": GOOD.replace("cpus: 2", "cpus: 0"),
    "bad-memory": GOOD.replace("memory: 2Gi", "memory: lots"),
    "negative-gpus": GOOD.replace("memory: 2Gi", "memory: 2Gi\n  gpus: -1"),
    "missing-image": GOOD.replace("image: localhost/runner-cifar:latest\n", ""),
    "empty-image": GOOD.replace("image: localhost/runner-cifar:latest", "image: ''"),
    "unknown-backend": GOOD.replace("backend: local", "backend: mars"),
    "relative-file-uri": GOOD.replace("checkpoint:\n", "checkpoint:\n  uri: file://relative/path\n"),
    "http-uri": GOOD.replace("checkpoint:\n", "checkpoint:\n  uri: http://example.com/ck\n"),
    "s3-no-bucket": GOOD.replace("checkpoint:\n", "checkpoint:\n  uri: s3://\n"),
    "bad-every": GOOD.replace("every: 20 ", "every: sometimes "),
    "zero-keep": GOOD.replace("keep: 3", "keep: 0"),
    "negative-retries": GOOD.replace("preemptions: 20", "preemptions: -2"),
    "array-zero": GOOD + "array: 0\n",
    "array-too-big": GOOD + "array: 10001\n",
    "runner-env": GOOD.replace('PYTHONUNBUFFERED: "1"', 'RUNNER_ATTEMPT: "3"'),
    "bad-name": GOOD.replace("name: cifar-smoke", "name: Cifar Smoke!"),
    "bad-notice": GOOD.replace("notice: auto", "notice: carrier-pigeon"),
    "bad-timeout": GOOD.replace("timeout: 10m", "timeout: forever"),
    "args-not-list": GOOD.replace("args: [--data", "args: {a: 1}\nx: [--data"),
}


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "runner.cli", *args], capture_output=True, text=True,
                          env=env, timeout=60)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_spec_gives_one_line_and_exit_2(tmp_path, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(CASES[name])
    proc = run_cli("submit", str(path), home=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert lines[0].startswith("error: ") and name.split("-")[0] != "" and path.name in lines[0]


@pytest.mark.parametrize("args", [
    ["submit", "does/not/exist.yaml"],
    ["submit", "jobs/cifar-smoke.yaml", "--backend", "mars"],
    ["submit", "jobs/cifar-smoke.yaml", "--simulate-preemption", "every=soon"],
    ["submit", "jobs/cifar-smoke.yaml", "--simulate-preemption", "notice"],
    ["submit", "jobs/cifar-smoke.yaml", "--backend", "aws", "--simulate-preemption", "every=20s"],
    ["submit", "jobs/cifar.yaml", "--backend", "gcp"],
    ["status", "no-such-job"],
    ["cancel", "no-such-job"],
    ["logs", "no-such-job"],
    ["simulate"],
    ["simulate", "--work", "soon"],
    ["simulate", "--work", "1h", "--coverage", "3"],
    ["simulate", "--work", "1h", "--mean", "1h", "--schedule", "jobs/cifar.yaml"],
    ["simulate", "--work", "1h", "--schedule", "jobs/cifar.yaml"],
    ["simulate", "no-such-job"],
    ["init", "aws", "--spec", "jobs/cifar.yaml", "--set", "aws.max_vcpus"],
    ["init", "aws", "--spec", "jobs/cifar.yaml", "--set", "aws.max_vcpus=-3"],
    ["init", "aws", "--spec", "jobs/cifar.yaml", "--set", "aws.subnets=[unclosed"],
])
def test_bad_arguments_give_one_line(tmp_path, args):
    proc = subprocess.run([sys.executable, "-m", "runner.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "RUNNER_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)},
                          timeout=60)
    assert proc.returncode in (1, 2), proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_help_works_without_cloud_sdks():
    proc = subprocess.run([sys.executable, "-c", "import sys; sys.modules['boto3'] = None; "
                           "sys.modules['torch'] = None; sys.argv = ['runner', '--help']; "
                           "from runner.cli import main; main()"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and "submit" in proc.stdout
