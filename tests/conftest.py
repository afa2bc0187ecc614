"""Shared fixtures: running a task as a real process and reading what it wrote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytest_plugins = ["tests.emulators"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Under ``make test`` (RUNNER_REQUIRE_DOCKER=1) a skip is a failure, unless the test is marked may_skip.

    ``make test`` installs and starts everything the suite needs (engine, images, emulators, the
    cluster, the browser); a test that skips there hides a missing step, as a skipped Azure test
    once hid that Azurite was not installed.
    """
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("RUNNER_REQUIRE_DOCKER") == "1" \
            and item.get_closest_marker("may_skip") is None and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"skipped under make test: {reason}. make test installs and starts what the tests "
                           "need, so this skip hides a missing step (mark the test may_skip only if some "
                           "machines can never run it, like a GPU test)")

ROOT = Path(__file__).resolve().parents[1]
#: A small CIFAR configuration: 2 epochs of 94 steps, a few seconds on 2 CPUs.
SMALL_CIFAR = ["--data", "synthetic", "--epochs", "2", "--train-size", "3000", "--test-size", "500",
               "--batch-size", "32", "--threads", "2", "--log-every", "1"]


#: A bucket each cloud's machines reach: a job on a cloud keeps neither checkpoints nor data on this machine.
CLOUD_URI = {"aws": "s3://my-bucket/x", "gcp": "gs://my-bucket/x", "azure": "az://my-bucket/x"}


def cloud_overrides(spec_path: Path, backend: str) -> dict[str, str]:
    """The --set overrides that move a repository job to ``backend``: its checkpoints and data in a bucket."""
    import yaml

    if backend not in CLOUD_URI:
        return {"backend": backend}
    data = yaml.safe_load(Path(spec_path).read_text()).get("data") or {}
    return {"backend": backend, "checkpoint.uri": CLOUD_URI[backend],
            **{f"data.{name}": f"{CLOUD_URI[backend]}/{name}" for name in data}}


def task_env(uri: str, **extra: str) -> dict[str, str]:
    """Return an environment for one attempt of a task process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env.update({"RUNNER_CHECKPOINT_URI": uri, "RUNNER_NOTICE": "none", "PYTHONPATH": str(ROOT),
                "RUNNER_CHECKPOINT_EVERY": "10"})
    env.update(extra)
    return env


class TaskProcess:
    """A task running as a child process, its stderr read line by line."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, module: str = "runner.tasks.cifar"):
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], env=env, cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 120) -> str:
        """Read output until a line satisfies ``predicate``; return that line."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError("process ended before the expected line:\n" + "".join(self.lines[-30:]))
            self.lines.append(line)
            if predicate(line):
                return line
        raise AssertionError("timed out waiting for a line:\n" + "".join(self.lines[-30:]))

    def wait_step(self, step: int) -> None:
        self.wait_for(lambda line: _step_of(line) >= step)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 300) -> int:
        out, _ = self.proc.communicate(timeout=timeout)
        self.lines.extend(out.splitlines(keepends=True))
        return self.proc.returncode

    @property
    def output(self) -> str:
        return "".join(self.lines)


def _step_of(line: str) -> int:
    if " step " in line and "/" in line:
        try:
            return int(line.split(" step ", 1)[1].split("/", 1)[0])
        except ValueError:
            return -1
    return -1


def interrupt(args: list[str], env: dict[str, str], cwd: Path, cut: int, kind: str,
              module: str = "runner.tasks.cifar") -> TaskProcess:
    """Run a task to step ``cut`` and stop it: ``sigterm``, ``halt`` (touch RUNNER_HALT_FILE) or
    ``sigkill``; check the exit code (75 after a notice with a committed checkpoint, -9 for a kill)."""
    proc = TaskProcess(args, env, cwd, module=module)
    proc.wait_for(lambda line: "resuming " in line or "from scratch" in line)
    proc.wait_step(cut)
    if kind == "sigterm":
        proc.signal(signal.SIGTERM)
    elif kind == "halt":
        Path(env["RUNNER_HALT_FILE"]).touch()
    else:
        proc.signal(signal.SIGKILL)
    code = proc.finish()
    expected = -9 if kind == "sigkill" else 75
    assert code == expected, f"{kind} at step {cut}: exit {code}\n{proc.output}"
    assert "Traceback" not in proc.output, proc.output
    if kind != "sigkill":
        assert "committed" in proc.output
    return proc


def run_task(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> TaskProcess:
    """Run a task to its end."""
    proc = TaskProcess(args, env, cwd)
    proc.finish(timeout)
    return proc


def final_sha(folder: Path) -> str:
    """Return the final weights' sha256 from a checkpoint folder."""
    return json.loads((folder / "final" / "MANIFEST.json").read_text())["weights_sha256"]


@pytest.fixture(scope="session")
def reference_sha(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The final weights of the small CIFAR run, uninterrupted, in one process."""
    folder = tmp_path_factory.mktemp("reference")
    proc = run_task(SMALL_CIFAR, task_env(f"file://{folder}/ck"), folder)
    assert proc.proc.returncode == 0, proc.output
    return final_sha(folder / "ck")


__all__ = ["CLOUD_URI", "SMALL_CIFAR", "cloud_overrides", "TaskProcess", "final_sha", "interrupt", "run_task", "task_env"]
