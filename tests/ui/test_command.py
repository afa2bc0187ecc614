"""`runner ui` as a user runs it: defaults, a non-local address, the missing extra, a busy port, the image."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import ROOT, runner, runner_env
from tests.integration.conftest import SESSION_ID, TEST_LABEL, remove_labelled
from tests.ui.conftest import RealLedger, non_local_address

URL = re.compile(r"http://\S+")


class RunningUi:
    """`python -m runner.cli ui ...` in the background; its printed URLs."""

    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "runner.cli", "ui", *args], cwd=ROOT, text=True,
                                     env={**runner_env(home), **(env or {})}, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while not any(URL.search(line) for line in self.lines):
            assert time.monotonic() < deadline, f"runner ui printed no URL: {self.lines}"
            line = self.proc.stdout.readline()
            assert line, f"runner ui ended: {self.lines}"
            self.lines.append(line)
        self.urls = [m.group(0) for line in self.lines for m in [URL.search(line)] if m]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=20)
        self.lines.append(out)
        return self.proc.returncode


@pytest.mark.docker
def test_runner_ui_with_its_defaults_serves_the_ledger(real_ledger: RealLedger) -> None:
    ui = RunningUi(real_ledger.home, env={"RUNNER_UI_PORT": "0"})  # every default but a free port
    try:
        assert ui.urls[0].startswith("http://127.0.0.1:") and "token" not in ui.urls[0]
        page = requests.get(ui.urls[0], timeout=30)
        assert page.status_code == 200
        assert all(job_id in page.text for job_id in real_ledger.jobs.values())
    finally:
        code = ui.stop()
    assert code == 0, ui.lines
    assert "Traceback" not in "".join(ui.lines)


@pytest.mark.docker
def test_runner_ui_on_all_addresses_prints_a_token_and_requires_it(real_ledger: RealLedger) -> None:
    ui = RunningUi(real_ledger.home, "--host", "0.0.0.0", "--port", "0")
    try:
        token = ui.urls[0].split("token=", 1)[1]
        port = ui.urls[0].split(":")[2].split("/")[0]
        base = f"http://{non_local_address()}:{port}"
        assert requests.get(base + "/api/overview", timeout=30).status_code == 403
        answer = requests.get(base + "/api/overview", headers={"Authorization": f"token {token}"}, timeout=30)
        assert answer.status_code == 200 and len(answer.json()["jobs"]) >= len(real_ledger.jobs)
    finally:
        code = ui.stop(signal.SIGINT)
    assert code == 0, ui.lines


def test_without_the_ui_extra_it_says_how_to_install_it(tmp_path: Path) -> None:
    blocked = "import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None; "
    code = blocked + "from runner.cli import main; sys.argv = ['runner', 'ui']; main()"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=runner_env(tmp_path), timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'spot-runner[ui]'" in lines[0], proc.stderr


def test_a_busy_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        proc = runner("ui", "--port", str(taken.getsockname()[1]), home=tmp_path, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot listen on 127.0.0.1:") and len(proc.stderr.splitlines()) == 1


def test_missing_front_end_assets_are_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from runner.errors import RunnerError
    from runner.ui import server

    monkeypatch.setattr(server, "HERE", tmp_path)
    with pytest.raises(RunnerError, match="make ui-assets"):
        server.check_ready()


@pytest.mark.docker
def test_the_control_image_serves_the_dashboard(real_ledger: RealLedger, docker_client: Any) -> None:
    """localhost/runner-control (the compose `ui` service's image) has the ui extra and its assets."""
    labels = {TEST_LABEL: SESSION_ID, "org.spot-runner.test-id": "ui-control-image"}
    container = docker_client.containers.run(
        "localhost/runner-control:latest", ["ui", "--port", "0"], detach=True, network_mode="host", labels=labels,
        environment={"RUNNER_HOME": "/ledger", "RUNNER_WATCH_HEALTH_PORT": ""},
        volumes={str(real_ledger.home): {"bind": "/ledger", "mode": "rw"}})
    try:
        deadline = time.monotonic() + 60
        while not (found := URL.search(container.logs().decode())):
            assert time.monotonic() < deadline, container.logs().decode()
            time.sleep(0.3)
        page = requests.get(found.group(0), timeout=30)
        assert page.status_code == 200 and real_ledger.jobs["short"] in page.text
        assert requests.get(found.group(0) + "static/vendor/chart.umd.min.js", timeout=30).status_code == 200
    finally:
        remove_labelled(docker_client, labels)


def test_compose_has_a_ui_service_beside_the_watcher() -> None:
    import yaml

    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    ui, watcher = services["ui"], services["watcher"]
    assert ui["command"] == ["ui"] and ui["image"] == watcher["image"] == "localhost/runner-control:latest"
    assert ui["profiles"] == watcher["profiles"]
    assert ui["environment"]["RUNNER_HOME"] == watcher["environment"]["RUNNER_HOME"]
    assert ui["environment"]["RUNNER_WATCH_STATUS_FILE"] == watcher["environment"]["RUNNER_WATCH_STATUS_FILE"]
    assert os.path.basename(ui["environment"]["RUNNER_WATCH_STATUS_FILE"]) == "watch-status.json"


def test_before_the_first_job_the_page_says_so_then_shows_it(tmp_path: Path) -> None:
    from runner.ledger import Ledger
    from runner.spec import load_spec
    from tests.e2e.conftest import smoke_spec

    ui = RunningUi(tmp_path, "--port", "0")
    try:
        assert "No ledger yet" in requests.get(ui.urls[0], timeout=30).text
        assert not (tmp_path / "ledger.db").exists()  # reading never creates it
        with Ledger(tmp_path / "ledger.db") as ledger:
            job_id = ledger.create_job(load_spec(smoke_spec(tmp_path, epochs=1)))
        live = requests.get(ui.urls[0] + "fragment/overview", timeout=30).text
        assert job_id in live and "no watcher" in live
        missing = requests.get(ui.urls[0] + "jobs/no-such-job", timeout=30)
        assert missing.status_code == 404 and "No job" in missing.text
    finally:
        assert ui.stop() == 0, ui.lines
