"""One real Slurm cluster per test session, started (or found running) by scripts/ensure-slurm.sh.

- ``slurm_conf``: runs the script once, exports ``SLURM_CONF`` for the session, cancels jobs an
  earlier session left; skips without root, fails instead under ``RUNNER_REQUIRE_DOCKER=1`` (make test).
- ``runner(...)``: the ``runner`` CLI as a user runs it, against the cluster (``HOME`` and
  ``RUNNER_HOME`` in the test's folder, so output files and the ledger stay there).
- ``background``: jobs that need minutes of wall time and almost no CPU (the wall-time chain and a
  job that ignores its signals), submitted detached when the preemption test is over, so their
  minutes overlap the other tests; ``test_walltime.py`` runs last and waits for them.

Order inside tests/slurm: the preemption test first (a high-priority job takes the whole node, so
nothing else may run then), the wall-time tests last.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "ensure-slurm.sh"
CIFAR_IMAGE = "localhost/runner-cifar:latest"
VENV = Path(sys.prefix)
FIRST, LAST = "test_preempt.py", "test_walltime.py"
#: Sets RequeueExit=75 for the whole cluster while it runs: before the background jobs start, whose
#: continuations exit 75 and would be requeued too.
SITE_REQUEUE = "test_requeue.py"
#: The background jobs: 1800 steps of 0.1 s are three times the `short` partition's one-minute limit.
CHAIN_STEPS = 1800
IGNORE_SIGNALS = ("import signal, time\nfor s in (signal.SIGTERM, signal.SIGUSR1): signal.signal(s, signal.SIG_IGN)\n"
                  "print('ignoring every signal', flush=True)\ntime.sleep(900)")


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("RUNNER_REQUIRE_DOCKER") == "1":
        pytest.fail(f"RUNNER_REQUIRE_DOCKER=1 but {reason}", pytrace=False)
    pytest.skip(reason)
    raise AssertionError("unreachable")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep this folder's tests where they are, but the preemption test first, then the one that changes
    the cluster's requeue setting, and the wall-time ones last."""
    here = [i for i, item in enumerate(items) if Path(str(item.fspath)).parent == Path(__file__).parent]
    if not here:
        return
    for i in here:
        if "slurm_conf" in getattr(items[i], "fixturenames", ()) or "background" in getattr(items[i], "fixturenames", ()):
            items[i].add_marker(pytest.mark.slurm)
    ours = [items[i] for i in here]
    rank = {FIRST: 0, SITE_REQUEUE: 1, LAST: 3}
    ours.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, 2))
    for i, item in zip(here, ours):
        items[i] = item


def podman_ready() -> bool:
    """Whether the podman runtime can be tested: installed (ensure-slurm.sh copies the image)."""
    return shutil.which("podman") is not None and os.environ.get("SPOT_RUNNER_SLURM_PODMAN") != "0"


@pytest.fixture(scope="session")
def slurm_conf() -> Iterator[str]:
    """The cluster's slurm.conf, exported as SLURM_CONF for the session."""
    if os.geteuid() != 0:
        _unavailable("the Slurm tests start a one-node cluster as root (scripts/ensure-slurm.sh)")
    env = dict(os.environ)
    if podman_ready() and shutil.which("docker"):
        env.setdefault("SPOT_RUNNER_SLURM_PODMAN_IMAGES", CIFAR_IMAGE)
    started = time.monotonic()
    try:
        proc = subprocess.run([str(SCRIPT)], check=False, capture_output=True, text=True, timeout=900, env=env)
    except subprocess.TimeoutExpired:
        _unavailable("scripts/ensure-slurm.sh did not finish in 15 minutes")
    m = re.search(r"^SLURM_CONF=(.+)$", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or not m:
        _unavailable(f"scripts/ensure-slurm.sh failed (rc={proc.returncode}): {proc.stderr[-2000:]}")
    conf = m.group(1).strip()
    print(f"\nslurm cluster ready in {time.monotonic() - started:.1f}s: SLURM_CONF={conf}", file=sys.stderr)
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    _undo_site_requeue(conf)
    scheduler("scancel", f"--user={os.environ.get('USER') or 'root'}", check=False)  # an earlier session's leftovers
    try:
        yield conf
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous


def _undo_site_requeue(conf: str) -> None:
    """Remove RequeueExit if a test that sets it (test_requeue.py) died before putting it back."""
    text = Path(conf).read_text()
    if re.search(r"^RequeueExit=", text, re.MULTILINE):
        Path(conf).write_text(re.sub(r"^RequeueExit=.*\n", "", text, flags=re.MULTILINE))
        scheduler("scontrol", "reconfigure")


def scheduler(*argv: str, check: bool = True, env: dict[str, str] | None = None) -> str:
    """Run a Slurm command (times as epoch seconds); return its output."""
    proc = subprocess.run(list(argv), check=False, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SLURM_TIME_FORMAT": "%s", **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: rc={proc.returncode} {proc.stderr}")
    return proc.stdout


def runner_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    home.mkdir(parents=True, exist_ok=True)
    return {**env, "HOME": str(home), "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}


def runner(*args: str, home: Path, timeout: float = 600, check: bool = False,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would (``env``: more variables); return the finished process."""
    proc = subprocess.run([sys.executable, "-m", "runner.cli", *args], check=False, capture_output=True, text=True,
                          env={**runner_env(home), **(env or {})}, cwd=ROOT, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def submitted_id(proc: subprocess.CompletedProcess[str]) -> str:
    m = re.search(r"^submitted (\S+)", proc.stdout, re.MULTILINE)
    assert m, proc.stdout + proc.stderr
    return m.group(1)


def status_json(job_id: str, home: Path) -> dict[str, Any]:
    return json.loads(runner("status", job_id, "--json", home=home, check=True).stdout)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def wait_job(job_id: str, home: Path, timeout: float) -> dict[str, Any]:
    """Wait until the job is over (SUCCEEDED, FAILED, CANCELLED); return its status."""
    terminal = ("SUCCEEDED", "FAILED", "CANCELLED")
    return wait_for(lambda: (s := status_json(job_id, home))["state"] in terminal and s, timeout,
                    f"job {job_id} to end", every=2)


def slurm_runs(backend_id: str) -> list[list[str]]:
    """Every run (``sacct -D``) of one Slurm job: [JobID, State, ExitCode, ElapsedRaw, Start, End]."""
    out = scheduler("sacct", "-D", "-X", "-n", "-P", "-j", backend_id.split("/")[-1],
                    "-o", "JobID,State,ExitCode,ElapsedRaw,Start,End")
    return [line.split("|") for line in out.splitlines() if line.strip()]


def spec_file(folder: Path, name: str, data: dict[str, Any]) -> Path:
    import yaml

    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **data}))
    return path


@pytest.fixture(scope="session")
def background(slurm_conf: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Submit the wall-time chain and the signal-ignoring job, detached; return where they live."""
    folder = tmp_path_factory.mktemp("walltime")
    home = folder / "home"
    common = {"image": CIFAR_IMAGE, "resources": {"cpus": 1, "memory": "1Gi"}, "backend": "slurm",
              "slurm": {"partition": "short", "runtime": "none", "venv": str(VENV), "signal_lead": "10s"}}
    chain = spec_file(folder, "walltime-chain", {
        **common,
        "command": ["python", "-m", "runner.exec", "--", "python", str(ROOT / "tests/slurm/steps_task.py"),
                    "--steps", str(CHAIN_STEPS)],
        "sync": {"dir": str(folder / "work")},
        "checkpoint": {"uri": f"file://{folder}/chain-ck", "keep": 2},
        "retries": {"preemptions": 30, "failures": 0}})
    ignores = spec_file(folder, "walltime-ignores", {
        **common,
        "command": ["python", "-c", IGNORE_SIGNALS],
        "checkpoint": {"uri": f"file://{folder}/ignores-ck"},
        "retries": {"preemptions": 5, "failures": 0}})
    jobs = {}
    for name, path in (("chain", chain), ("ignores", ignores)):
        proc = runner("submit", str(path), "--detach", "--interval", "1", home=home, check=True)
        jobs[name] = submitted_id(proc)
    started = time.time()
    yield {"home": home, "folder": folder, "jobs": jobs, "started": started}
    for job_id in jobs.values():
        runner("cancel", job_id, home=home)


@pytest.fixture(autouse=True)
def _start_background(request: pytest.FixtureRequest) -> None:
    """Start the background jobs at the first cluster test after the preemption and requeue tests, if wanted."""
    if Path(str(request.node.fspath)).name in (FIRST, SITE_REQUEUE, "test_parse.py", "test_script.py"):
        return
    if any(Path(str(item.fspath)).name == LAST for item in request.session.items):
        request.getfixturevalue("background")
