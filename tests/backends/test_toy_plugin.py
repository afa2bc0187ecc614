"""Issue 13, "what it must show" 4: a backend from outside the repository runs a job, runner/ untouched.

tests/plugins/toy_backend is a separate package (its own pyproject.toml, one module, an entry
point in the group ``spot_runner.backends``). It is installed with pip into a folder of its own
and put on PYTHONPATH; then, through the CLI:

- its spec section ``toy:`` is validated by its own settings model (a bad value, an unknown key:
  one line naming ``toy.<field>``, exit 2);
- ``runner submit --backend toy`` runs a job on it to SUCCEEDED, and ``runner status`` (table and
  JSON) and ``runner logs`` show it; ``runner cancel`` stops a running toy attempt;
- without the package on the path, ``--backend toy`` is one line naming the backends there are.

No engine is needed: the toy backend runs each attempt as a process.
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
from runner.states import AttemptState, JobState
from tests.e2e.conftest import ROOT, runner_env

PACKAGE = ROOT / "tests" / "plugins" / "toy_backend"
PRINT = ("import os; print(os.environ['TOY_GREETING'], 'from', os.environ['RUNNER_JOB_ID'], "
         "'attempt', os.environ['RUNNER_ATTEMPT'], flush=True)")


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy backend installed by pip into a folder of its own (its dist-info holds the entry point)."""
    import shutil

    source = tmp_path_factory.mktemp("toy-src") / "toy_backend"  # the build writes beside the sources
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path_factory.mktemp("toy-site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "--no-input", "-q", "--target", str(target), str(source)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(target.glob("spot_runner_toy_backend-*.dist-info/entry_points.txt")), list(target.iterdir())
    return target


def cli(args: list[str], home: Path, plugin: Path | None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = runner_env(home)
    if plugin is not None:
        env["PYTHONPATH"] = f"{ROOT}:{plugin}"
    return subprocess.run([sys.executable, "-m", "runner.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout, check=False)


def write(path: Path, **changes: Any) -> Path:
    spec = {"name": "toy-job", "image": "unused:latest", "command": ["python3", "-c", PRINT],
            "retries": {"failures": 0, "preemptions": 0}, "toy": {"greeting": "ahoy"}, **changes}
    path.write_text(yaml.safe_dump({k: v for k, v in spec.items() if v is not None}))
    return path


def test_the_runner_does_not_know_the_toy() -> None:
    """No code in runner/ names it (docstrings may use it as the example of a plug-in)."""
    import ast

    found = []
    for path in (ROOT / "runner").rglob("*.py"):
        tree = ast.parse(path.read_text(errors="replace"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            words = (node.value if isinstance(node, ast.Constant) and isinstance(node.value, str)
                     and id(node) not in docstrings else getattr(node, "id", None) or getattr(node, "module", None)
                     or getattr(node, "attr", None) or "")
            if "toy" in str(words).lower():
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == [], found


def test_its_section_is_validated_by_its_own_settings_model(plugin_path: Path, tmp_path: Path) -> None:
    for section, field in (({"max_seconds": -1}, "toy.max_seconds"), ({"colour": "red"}, "toy.colour")):
        proc = cli(["submit", str(write(tmp_path / "bad.yaml", toy=section)), "--backend", "toy"], tmp_path,
                   plugin_path)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and field in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_runner_submit_backend_toy_runs_a_job(plugin_path: Path, tmp_path: Path) -> None:
    proc = cli(["submit", str(write(tmp_path / "job.yaml")), "--backend", "toy", "--interval", "0.3"], tmp_path,
               plugin_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = proc.stdout.split()[1]
    assert f"submitted {job_id} (toy," in proc.stdout and "SUCCEEDED" in proc.stdout, proc.stdout
    table = cli(["status"], tmp_path, plugin_path)
    assert table.returncode == 0 and any(job_id in line and "toy" in line and "SUCCEEDED" in line
                                         for line in table.stdout.splitlines()), table.stdout
    report = json.loads(cli(["status", job_id, "--json"], tmp_path, plugin_path).stdout)
    assert (report["backend"], report["state"], report["failures"]) == ("toy", "SUCCEEDED", 0), report
    assert [(a["backend"], a["backend_id"], a["state"]) for a in report["attempt_list"]] == \
        [("toy", f"{job_id}-0-1", "SUCCEEDED")]
    logs = cli(["logs", job_id], tmp_path, plugin_path)
    assert logs.returncode == 0 and f"ahoy from {job_id} attempt 1" in logs.stdout, logs.stdout + logs.stderr


def test_runner_cancel_stops_a_toy_attempt(plugin_path: Path, tmp_path: Path) -> None:
    sleeper = ["python3", "-c", "import time; print('sleeping', flush=True); time.sleep(300)"]
    proc = cli(["submit", str(write(tmp_path / "sleep.yaml", command=sleeper)), "--backend", "toy", "--detach",
                "--interval", "0.3"], tmp_path, plugin_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = proc.stdout.split()[1]
    deadline = time.monotonic() + 60
    with Ledger(tmp_path / "ledger.db") as ledger:
        while not [a for a in ledger.attempts(job_id) if a.state == AttemptState.RUNNING]:
            assert time.monotonic() < deadline, ledger.attempts(job_id)
            time.sleep(0.2)
    done = cli(["cancel", job_id], tmp_path, plugin_path)
    assert done.returncode == 0 and f"cancelled {job_id}" in done.stdout, done.stdout + done.stderr
    with Ledger(tmp_path / "ledger.db") as ledger:
        assert ledger.get_job(job_id).state == JobState.CANCELLED
        assert [a.state for a in ledger.attempts(job_id)] == [AttemptState.CANCELLED]
    pid = int((tmp_path / "toy" / f"{job_id}-0-1" / "pid").read_text())
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_without_the_package_toy_is_not_a_backend(tmp_path: Path) -> None:
    proc = cli(["submit", str(write(tmp_path / "job.yaml", toy=None)), "--backend", "toy"], tmp_path, None)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and "'toy' is not a backend here" in line and "local, aws" in line, line
