"""No credential in any image layer, log line, ledger row, report or error message.

(a) Every ``localhost/runner-*`` image is saved with ``docker save`` (one stream, shared layers
once) and every file of every layer, and every image config, is scanned (``tests/security/scan.py``
says what counts as a credential and which published test values are allowed).
(b) A real job runs on the local engine with fake credentials in the runner's environment (AWS keys,
an Azure connection string, a GCP service-account file) and in the spec's ``env``; everything the
runner wrote (RUNNER_HOME: ledger rows and file, watch log, price cache, reports, the checkpoint
folder) and everything it printed (submit, status, logs, report, failing commands that use the
credentials) is scanned for the planted values and for credential patterns.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.emulators import AZURITE_KEY
from tests.integration.conftest import docker_client  # noqa: F401 - shared fixture
from tests.security.scan import Finding, scan_bytes, scan_images

ROOT = Path(__file__).resolve().parents[2]

# Fake values, shaped like real ones so that the pattern scan would also catch them.
AWS_KEY_ID = "AKIAZZFAKE0123456789"
AWS_SECRET = "FAKEsecretKEY+0123456789/abcdefFAKEsecre"
AZURE_KEY = "FAKEazureKEY" + "f" * 74 + "=="
AZURE_CONN = f"DefaultEndpointsProtocol=https;AccountName=fakeacct;AccountKey={AZURE_KEY};EndpointSuffix=core.windows.net"
GCP_KEY_LINE = "FAKEgcpPRIVATEkeyMATERIAL" + "g" * 39
GCP_KEY = ("-----BEGIN PRIVATE KEY-----\n" + "\n".join([GCP_KEY_LINE] * 3) + "\n-----END PRIVATE KEY-----\n")
SPEC_SECRET = "FAKEspecSECRETvalue0123456789/abcdefSPEC"  # 40 characters, in the spec's env
SPEC_TOKEN = "FAKEspecTOKENvalue-9f8e7d6c5b4a"
SPEC_CONN_KEY = "FAKEspecCONNkey" + "c" * 71 + "=="    # an Azure key inside an innocently named variable
PLANTED = [s.encode() for s in (AWS_SECRET, AZURE_KEY, GCP_KEY_LINE, SPEC_SECRET, SPEC_TOKEN, SPEC_CONN_KEY,
                                AWS_KEY_ID)]


def _images(client: Any) -> list[str]:
    tags = sorted({t for image in client.images.list() for t in image.tags
                   if t.startswith("localhost/runner-") or t.startswith("localhost/py311-base")})
    return tags


@pytest.mark.docker
@pytest.mark.slow
def test_no_credential_in_any_image_layer(docker_client: Any) -> None:  # noqa: F811
    images = _images(docker_client)
    assert "localhost/runner-base:latest" in images and "localhost/runner-control:latest" in images
    started = time.monotonic()
    findings, stats = scan_images(images, PLANTED)
    print(f"\nscanned {len(images)} images: {stats.get('layers', 0)} layers, {stats.get('files', 0)} files, "
          f"{stats.get('bytes', 0) / 2**30:.2f} GiB in {time.monotonic() - started:.0f}s; "
          f"{stats.get('allowed', 0)} files with published test keys skipped")
    assert stats.get("layers", 0) >= 3 and stats.get("bytes", 0) > 1 << 30
    assert not findings, "\n".join(map(str, findings))


def test_the_scanner_finds_each_kind() -> None:
    """The patterns catch real-shaped values and let the published examples through."""
    text = (f"aws_access_key_id = {AWS_KEY_ID}\naws_secret_access_key = {AWS_SECRET}\n"
            f"{AZURE_CONN}\n" + json.dumps({"private_key": GCP_KEY}) + "\n" + GCP_KEY).encode()
    kinds = sorted({f.kind for f in scan_bytes(text, "t")})
    assert kinds == ["aws-access-key-id", "aws-secret-key", "azure-account-key", "private-key"]
    public = (b"AKIAIOSFODNN7EXAMPLE aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY "
              b"AccountKey=" + AZURITE_KEY.encode() + b";"
              b" '-----BEGIN PRIVATE KEY-----' in a docstring")
    assert scan_bytes(public, "t") == []
    assert [f.kind for f in scan_bytes(b"x" + SPEC_TOKEN.encode(), "t", PLANTED)] == ["planted secret"]


# ---------------------------------------------------------------------------- a job with credentials


def _env(home: Path, creds: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNNER_", "AWS_", "AZURE_", "GOOGLE_"))}
    return {**env, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT), "RUNNER_LOG_LEVEL": "INFO",
            "AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1",
            "AZURE_STORAGE_CONNECTION_STRING": AZURE_CONN, "AZURE_STORAGE_KEY": AZURE_KEY,
            "GOOGLE_APPLICATION_CREDENTIALS": str(creds / "service-account.json")}


def _run(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runner.cli", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=timeout)


def _ledger_rows(path: Path) -> bytes:
    db = sqlite3.connect(path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        rows = [repr(row) for table in tables for row in db.execute(f"SELECT * FROM {table}")]  # noqa: S608
    finally:
        db.close()
    assert rows, "the ledger is empty"
    return "\n".join(rows).encode()


def _scan_tree(folder: Path) -> tuple[list[Finding], int]:
    findings: list[Finding] = []
    count = 0
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            count += 1
            findings += scan_bytes(path.read_bytes(), str(path.relative_to(folder)), PLANTED)
    return findings, count


@pytest.mark.docker
@pytest.mark.slow
def test_no_credential_in_anything_the_runner_wrote(tmp_path: Path, docker_client: Any) -> None:  # noqa: F811
    home, creds = tmp_path / "home", tmp_path / "creds"
    creds.mkdir()
    (creds / "service-account.json").write_text(json.dumps({
        "type": "service_account", "project_id": "fake-project", "private_key_id": "0123abcd",
        "private_key": GCP_KEY, "client_email": "runner@fake-project.iam.gserviceaccount.com",
        "token_uri": "http://127.0.0.1:9/token"}))
    env = _env(home, creds)
    spec = yaml.safe_load((ROOT / "jobs" / "cifar-smoke.yaml").read_text())
    args = list(spec["args"])
    args[args.index("--epochs") + 1] = "1"
    spec["args"] = args
    spec["env"] = {**spec.get("env", {}), "AWS_SECRET_ACCESS_KEY": SPEC_SECRET, "MY_API_TOKEN": SPEC_TOKEN,
                   "STORAGE": f"DefaultEndpointsProtocol=https;AccountName=x;AccountKey={SPEC_CONN_KEY}"}
    spec_path = creds / "job.yaml"
    spec_path.write_text(yaml.safe_dump(spec))

    outputs: dict[str, str] = {}
    submit = _run(env, "submit", str(spec_path), "--detach", "--interval", "0.5")
    outputs["submit --detach"] = submit.stdout + submit.stderr
    assert submit.returncode == 0, outputs["submit --detach"]
    job_id = submit.stdout.split()[1]
    deadline = time.monotonic() + 300
    while True:
        status = _run(env, "status", job_id, "--json")
        assert status.returncode == 0, status.stderr
        if json.loads(status.stdout)["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            break
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(1)
    outputs["status --json"] = status.stdout + status.stderr
    assert json.loads(status.stdout)["state"] == "SUCCEEDED", status.stdout
    for args in (["status"], ["status", job_id], ["logs", job_id], ["watch", job_id, "--once"],
                 ["report", job_id], ["report"],
                 ["prices", "aws", "us-east-1", "g4dn.xlarge", "--live"],
                 ["prices", "gcp", "us-central1", "n1-standard-4", "--live"],
                 ["prices", "azure", "eastus", "Standard_NC4as_T4_v3", "--live"]):
        proc = _run(env, *args)
        outputs[" ".join(args)] = proc.stdout + proc.stderr
        assert proc.returncode == 0, outputs[" ".join(args)]
    assert "epoch" in outputs[f"logs {job_id}"]  # the container's own output came through
    # Failing commands that use the credentials: their one-line errors must not carry them.
    for args in (["init", "aws", "--spec", str(spec_path)],
                 ["submit", str(spec_path), "--backend", "aws"],
                 ["submit", str(spec_path), "--backend", "gcp"],
                 ["submit", str(spec_path), "--backend", "azure"]):
        proc = _run(env, *args, timeout=120)
        outputs[" ".join(args)] = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, outputs[" ".join(args)]

    findings = [f for name, text in outputs.items() for f in scan_bytes(text.encode(), f"output of {name}", PLANTED)]
    findings += scan_bytes(_ledger_rows(home / "ledger.db"), "ledger rows", PLANTED)
    in_home, files = _scan_tree(home)
    findings += in_home
    names = {p.name for p in home.rglob("*")}
    assert {"ledger.db", f"{job_id}.log", "MANIFEST.json", "progress.json", f"{job_id}.html"} <= names, names
    print(f"\nscanned {len(outputs)} command outputs, the ledger rows and {files} files under RUNNER_HOME")
    assert not findings, "\n".join(map(str, findings))
