"""Fixtures of the dashboard tests: a ledger made by real runs, the dashboard serving it, a real browser.

- ``real_ledger`` (session): ``runner submit`` on the local Docker engine, four jobs at once
  (detached): a short one, one preempted twice (a notice, then a kill), one whose spec carries
  fake credentials and prints its environment, one that fails twice. Reused by every test.
- ``ui_server`` (session): ``runner.ui`` in this process (uvicorn in a thread) on 127.0.0.1:0
  over that ledger, one update a second; ``token_server`` the same on 0.0.0.0 with a token.
- ``browser`` (session): Debian's headless Chromium through its chromedriver (selenium), a fresh
  profile; never a downloaded browser. Screenshots go to ``screenshots`` (printed at the end).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import ROOT, runner, smoke_spec, status_json
from tests.integration.conftest import docker_client  # noqa: F401 - shared fixture

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000"]
#: Fake credentials in one job's spec env; the job prints its environment, so its log has them.
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAUIFAKE0000000001",
    "AWS_SECRET_ACCESS_KEY": "uiFakeSecret/0123456789abcdefghijklmnopqrstu",
    "AZURE_STORAGE_CONNECTION_STRING": ("DefaultEndpointsProtocol=https;AccountName=uifakeacct;"
                                        "AccountKey=dWlGYWtlQWNjb3VudEtleTAxMjM0NTY3ODk=;EndpointSuffix=core.windows.net"),
    "MY_SERVICE_TOKEN": "uiFakeToken-9f8e7d6c5b4a3210",
    "DATABASE_URL": "postgres://admin:uiFakePassw0rd@db.example:5432/train",
}
#: What must never appear in a page: the values and distinctive pieces of them.
FAKE_PIECES = [*FAKE_ENV.values(), "UIFAKE0000000001", "uiFakeSecret", "dWlGYWtlQWNjb3VudEtleTAx",
               "uiFakeToken", "uiFakePassw0rd"]
UPDATE_S = 1.0


def _unavailable(reason: str) -> None:
    if os.environ.get("RUNNER_REQUIRE_DOCKER") == "1":
        pytest.fail(f"RUNNER_REQUIRE_DOCKER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class RealLedger:
    home: Path
    jobs: dict[str, str]              # role -> job id
    status: dict[str, dict[str, Any]]  # job id -> `runner status JOB --json`

    @property
    def path(self) -> Path:
        return self.home / "ledger.db"


def submit_detached(spec: Path, home: Path, *extra: str) -> str:
    proc = runner("submit", str(spec), "--detach", "--interval", "1", *extra, home=home, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.split()[1]


def wait_terminal(job_ids: list[str], home: Path, timeout: float = 240) -> dict[str, dict[str, Any]]:
    """Wait until every job has ended; return their `runner status --json`."""
    deadline = time.monotonic() + timeout
    while True:
        done = {j: status_json(j, home) for j in job_ids}
        if all(s["state"] in ("SUCCEEDED", "FAILED", "CANCELLED") for s in done.values()):
            return done
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs still running after {timeout}s: {json.dumps(done)[:2000]}")
        time.sleep(1.0)


@pytest.fixture(scope="session")
def real_ledger(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> RealLedger:  # noqa: F811
    """A ledger made by real `runner submit` runs on the local engine (about 40 s on 2 CPUs)."""
    home = tmp_path_factory.mktemp("ui-ledger")
    env = {"PYTHONUNBUFFERED": "1", **FAKE_ENV}
    specs = {
        "short": smoke_spec(home, "short.yaml", epochs=1),
        "preempted": smoke_spec(home, "preempted.yaml", epochs=8),
        # Prints its environment, so the fake credentials are in its log.
        "secrets": smoke_spec(home, "secrets.yaml", epochs=1, env=env, command=[
            "sh", "-c", 'env | sort; exec python -m runner.tasks.cifar "$@"', "sh"]),
        "failing": smoke_spec(home, "failing.yaml", epochs=1,
                              command=["sh", "-c", "echo 'no data here' >&2; exit 3"]),
    }
    for role in ("secrets", "failing"):
        data = yaml.safe_load(specs[role].read_text())
        data["name"] = {"secrets": "with-credentials", "failing": "always-fails"}[role]
        specs[role].write_text(yaml.safe_dump(data))
    jobs = {role: submit_detached(spec, home, *(
        ["--simulate-preemption", "every=4s,notice=2s,mode=mixed,count=2"] if role == "preempted" else []))
        for role, spec in specs.items()}
    status = wait_terminal(list(jobs.values()), home)
    assert status[jobs["preempted"]]["preemptions"] >= 1, status[jobs["preempted"]]
    assert status[jobs["failing"]]["state"] == "FAILED"
    return RealLedger(home, jobs, status)


@dataclass
class Server:
    url: str
    app: Any
    dashboard: Any
    token: str | None
    host: str
    port: int
    server: Any = None
    thread: threading.Thread | None = None

    @property
    def queries(self) -> int:
        return int(self.dashboard.view.queries)

    def updates(self) -> int:
        return sum(self.app.state.stats.values())


def start_server(ledger: Path, host: str, token: str | None) -> Server:
    """runner.ui in this process: the same app `runner ui` serves, on ``host``:0."""
    import uvicorn

    from runner.ui.app import create_app
    from runner.ui.model import Dashboard
    from runner.ui.security import is_loopback
    from runner.ui.server import bind, check_ready

    check_ready()
    sock = bind(host, 0)
    port = sock.getsockname()[1]
    dashboard = Dashboard(ledger)
    app = create_app(dashboard, token=token, csrf=secrets.token_urlsafe(16), port=port,
                     loopback=is_loopback(host), interval=UPDATE_S)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"ui-{port}")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the dashboard did not start"
        time.sleep(0.05)
    return Server(f"http://{'127.0.0.1' if host == '127.0.0.1' else host}:{port}", app, dashboard, token, host,
                  port, server, thread)


def stop_server(s: Server) -> None:
    s.server.should_exit = True
    if s.thread is not None:
        s.thread.join(10)
    s.dashboard.close()


@pytest.fixture(scope="session")
def ui_home(real_ledger: RealLedger) -> Iterator[Path]:
    """RUNNER_HOME of this process set to the ledger's, as `runner ui` runs (default checkpoint URIs)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RUNNER_HOME", str(real_ledger.home))
        yield real_ledger.home


@pytest.fixture(scope="session")
def ui_server(real_ledger: RealLedger, ui_home: Path) -> Iterator[Server]:
    s = start_server(real_ledger.path, "127.0.0.1", None)
    yield s
    stop_server(s)


def non_local_address() -> str:
    """An address of this machine other than loopback (eth0's, else the Docker bridge's)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    addresses = [line.split()[3].split("/")[0] for line in out.splitlines() if len(line.split()) > 3]
    found = [a for a in addresses if not a.startswith("127.")]
    if not found:
        pytest.fail("this machine has no address but loopback; the token tests need one", pytrace=False)
    return found[0]


@pytest.fixture(scope="session")
def token_server(real_ledger: RealLedger, ui_home: Path) -> Iterator[Server]:
    s = start_server(real_ledger.path, "0.0.0.0", secrets.token_urlsafe(24))
    s.url = f"http://{non_local_address()}:{s.port}"
    yield s
    stop_server(s)


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """Where the browser tests keep a screenshot of each page (RUNNER_UI_SCREENSHOTS, or a temp folder)."""
    folder = Path(os.environ.get("RUNNER_UI_SCREENSHOTS") or tmp_path_factory.mktemp("ui-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    request.config.stash[SCREENSHOTS] = folder
    return folder


SCREENSHOTS = pytest.StashKey[Path]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    folder = config.stash.get(SCREENSHOTS, None)
    if folder is not None:
        shots = sorted(p.name for p in folder.glob("*.png"))
        terminalreporter.write_line(f"runner ui screenshots ({len(shots)}): {folder} {' '.join(shots)}")


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Debian's headless Chromium, driven by selenium through /usr/bin/chromedriver."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        _unavailable(f"{CHROMIUM} or {CHROMEDRIVER} is missing: run scripts/ensure-browser.sh")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (the test extra: pip install 'selenium>=4.20')")
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must not try to download anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


__all__ = ["FAKE_ENV", "FAKE_PIECES", "ROOT", "RealLedger", "Server", "UPDATE_S", "start_server", "stop_server",
           "submit_detached", "wait_terminal"]
