"""Emulators started outside pytest (for ``benchmarks/faults.py``), the same way the fixtures start them."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests import emulators as emu


@contextlib.contextmanager
def start_emulator(kind: str) -> Iterator[emu.Emulator]:
    """Start moto (``s3``), the GCS emulator (``gs``) or Azurite (``az``); stop it on exit."""
    from benchmarks.faults import CaseUnavailable

    port = emu.free_port()
    if kind == "s3":
        launcher = str(Path(emu.__file__).with_name("moto_launcher.py"))
        argv, probe = [sys.executable, launcher, "-H", "0.0.0.0", "-p", str(port)], "/moto-api/"
    elif kind == "gs":
        exe = shutil.which("gcp-storage-emulator") or str(Path(sys.executable).parent / "gcp-storage-emulator")
        argv, probe = [exe, "start", "--host", "0.0.0.0", "--port", str(port), "--in-memory"], "/storage/v1/b"
    elif kind == "az":
        exe = shutil.which("azurite-blob") or "azurite-blob"
        workdir = tempfile.mkdtemp(prefix="azurite-")  # removed when the emulator stops, below
        argv = [exe, "--blobHost", "0.0.0.0", "--blobPort", str(port), "--location",
                workdir, "--skipApiVersionCheck", "--loose", "--silent"]
        probe = f"/{emu.AZURITE_ACCOUNT}?comp=list"
    else:
        raise ValueError(f"unknown emulator kind {kind!r}: use s3, gs or az")
    starter = emu._start(kind, argv, port, probe)
    try:
        process = next(starter)
    except (OSError, BaseException) as exc:  # pytest's skip/fail outcomes are BaseExceptions
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise CaseUnavailable(f"the {kind} emulator did not start: {exc}") from None
    server = emu.Emulator(kind, port, process)
    server.env = env_for(kind, server.url)
    try:
        yield server
    finally:
        with contextlib.suppress(StopIteration):
            next(starter)
        if kind == "az":
            shutil.rmtree(workdir, ignore_errors=True)


def env_for(kind: str, url: str) -> dict[str, str]:
    """Return the variables a store client needs to reach an emulator (or a proxy) at ``url``."""
    if kind == "s3":
        return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": url}
    if kind == "gs":
        return {"STORAGE_EMULATOR_HOST": url, "GOOGLE_CLOUD_PROJECT": "test-project"}
    return {"AZURE_STORAGE_CONNECTION_STRING":
            f"DefaultEndpointsProtocol=http;AccountName={emu.AZURITE_ACCOUNT};AccountKey={emu.AZURITE_KEY};"
            f"BlobEndpoint={url}/{emu.AZURITE_ACCOUNT};"}


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block, restoring the previous values after it."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def create_bucket(kind: str, env: dict[str, str]) -> str:
    """Create a fresh bucket (container) through the emulator named by ``env``; return its name."""
    bucket = f"fault-{uuid.uuid4().hex[:16]}"
    with environ(env):
        if kind == "s3":
            import boto3

            boto3.client("s3").create_bucket(Bucket=bucket)
        elif kind == "gs":
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage

            storage.Client(project="test-project", credentials=AnonymousCredentials()).create_bucket(bucket)
        else:
            from azure.storage.blob import BlobServiceClient

            BlobServiceClient.from_connection_string(env["AZURE_STORAGE_CONNECTION_STRING"]).create_container(bucket)
    return bucket
