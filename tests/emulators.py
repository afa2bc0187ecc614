"""Cloud emulators as real servers on this machine, for tests: moto (AWS), Azurite, a GCS emulator.

Each fixture starts the emulator as a subprocess on a free port bound to 0.0.0.0 (so task
containers reach it through the Docker bridge gateway), waits until it answers, yields an
:class:`Emulator`, and stops it at the end of the session. A missing emulator skips the test
with the install command, unless ``RUNNER_REQUIRE_DOCKER=1`` (CI), where it fails.

Emulator credentials are the emulators' well-known test values, set only in test processes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: Azurite's documented development account (public, not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class Emulator:
    """A running emulator: its URL on the host and as task containers see it."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)  # what a client process needs (host view)
    container_env: dict[str, str] = field(default_factory=dict)  # the same, from a container

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def container_url(self) -> str:
        return f"http://{bridge_gateway()}:{self.port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def bridge_gateway() -> str:
    """The host's address on Docker's default bridge, which containers can reach."""
    try:
        out = subprocess.run(["docker", "network", "inspect", "bridge", "-f",
                              "{{(index .IPAM.Config 0).Gateway}}"], capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "172.17.0.1"


def _unavailable(reason: str) -> None:
    if os.environ.get("RUNNER_REQUIRE_DOCKER") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _wait(url: str, process: subprocess.Popen[bytes], name: str, log: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _unavailable(f"{name} exited with {process.returncode} at start (its output: {log})")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers, even if with an error status
        except OSError:
            time.sleep(0.2)
    process.kill()
    _unavailable(f"{name} did not answer at {url} within {timeout:.0f} s (its output: {log})")


def _start(name: str, argv: list[str], port: int, probe: str = "/") -> Iterator[subprocess.Popen[bytes]]:
    log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    started = False
    try:
        _wait(f"http://127.0.0.1:{port}{probe}", process, name, log.name)
        started = True
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        if started:  # kept (and its path in /tmp) only when the emulator failed to start
            Path(log.name).unlink(missing_ok=True)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Emulator]:
    """moto's server: S3 and Batch (Batch jobs run as real containers on the local engine)."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        _unavailable("moto's server is not installed: pip install 'moto[server]'")
    port = free_port()
    launcher = str(Path(__file__).with_name("moto_launcher.py"))  # moto_server with a patient Docker client
    for process in _start("moto", [sys.executable, launcher, "-H", "0.0.0.0", "-p", str(port)], port, "/moto-api/"):
        creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}
        emu = Emulator("moto", port, process)
        emu.env = {**creds, "AWS_ENDPOINT_URL": emu.url}
        emu.container_env = {**creds, "AWS_ENDPOINT_URL": emu.container_url}
        yield emu


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[Emulator]:
    """gcp-storage-emulator, in memory (it does not enforce preconditions)."""
    exe = shutil.which("gcp-storage-emulator") or str(Path(sys.executable).parent / "gcp-storage-emulator")
    if not os.path.exists(exe):
        _unavailable("gcp-storage-emulator is not installed: pip install gcp-storage-emulator")
    port = free_port()
    argv = [exe, "start", "--host", "0.0.0.0", "--port", str(port), "--in-memory"]
    for process in _start("gcs", argv, port, "/storage/v1/b"):
        emu = Emulator("gcs", port, process)
        emu.env = {"STORAGE_EMULATOR_HOST": emu.url, "GOOGLE_CLOUD_PROJECT": "test-project"}
        emu.container_env = {"STORAGE_EMULATOR_HOST": emu.container_url, "GOOGLE_CLOUD_PROJECT": "test-project"}
        yield emu


@pytest.fixture(scope="session")
def azurite() -> Iterator[Emulator]:
    """Azurite's Blob service (npm package ``azurite``), conditional headers included."""
    exe = shutil.which("azurite-blob")
    if exe is None:
        _unavailable("azurite is not installed: npm install -g azurite")
    port = free_port()
    # Azurite keeps every blob on disk: the folder goes with the emulator (a suite writes gigabytes).
    workdir = tempfile.mkdtemp(prefix="azurite-")
    argv = [exe, "--blobHost", "0.0.0.0", "--blobPort", str(port), "--location", workdir, "--skipApiVersionCheck",
            "--loose", "--silent"]
    for process in _start("azurite", argv, port, f"/{AZURITE_ACCOUNT}?comp=list"):
        emu = Emulator("azurite", port, process)

        def conn(host: str) -> str:
            return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                    f"BlobEndpoint=http://{host}:{port}/{AZURITE_ACCOUNT};")

        emu.env = {"AZURE_STORAGE_CONNECTION_STRING": conn("127.0.0.1")}
        emu.container_env = {"AZURE_STORAGE_CONNECTION_STRING": conn(bridge_gateway())}
        yield emu
    shutil.rmtree(workdir, ignore_errors=True)
