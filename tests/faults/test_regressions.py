"""Regression tests for the bugs the fault suite found, one per bug, named after it."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.faults import FaultContext
from runner.stores import open_store
from tests.faults import notice_cases
from tests.faults.cases import Tally
from tests.faults.proxy import FaultProxy
from tests.faults.servers import create_bucket, env_for, environ


def _is_put(key: str) -> Any:
    return lambda method, path: method == "PUT" and path.split("?")[0].endswith(key)


def test_regression_s3_retry_after_a_failed_put_reopens_no_closed_spool(moto_server: Any) -> None:
    """s3transfer closed our spooled file after a failed PUT; a retry then raised ValueError (a traceback).
    Retries are botocore's now, inside one PUT: three 500s in a row still end in the object."""
    bucket = create_bucket("s3", moto_server.env)
    with FaultProxy(moto_server.url, rate=1.0, faults=("500",), max_in_row=3, fault_match=_is_put("/k.bin")) as proxy:
        with environ(env_for("s3", proxy.url)):
            open_store(f"s3://{bucket}/p").write_bytes("k.bin", b"payload" * 1000)
        assert proxy.injected["500"] == 3
    with environ(moto_server.env):
        assert open_store(f"s3://{bucket}/p").read_bytes("k.bin") == b"payload" * 1000


def _each_request_refused_once(emu: Any, kind: str, is_piece: Any, fault: str, size: int) -> int:
    """Upload ``size`` bytes through a proxy that refuses the first try of every piece (part, block)
    with ``fault``, with our whole-call retries off; check the object; return how many were refused."""
    bucket = create_bucket(kind, emu.env)
    seen: set[str] = set()

    def first_try(method: str, path: str) -> bool:
        if method != "PUT" or not is_piece(path) or path in seen:
            return False
        seen.add(path)
        return True

    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    with FaultProxy(emu.url, rate=1.0, faults=(fault,), max_in_row=10 ** 6, fault_match=first_try) as proxy:
        with environ(env_for(kind, proxy.url)):
            open_store(f"{kind}://{bucket}/p").write_bytes("big.bin", data)  # nothing restarts whole uploads
    with environ(emu.env):
        back = open_store(f"{kind}://{bucket}/p").read_bytes("big.bin")
    assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
    return proxy.injected[fault]


def test_regression_s3_multipart_part_failure_is_retried_alone(moto_server: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """One part's 503 restarted the whole multipart upload, so big checkpoints under faults never committed."""
    monkeypatch.setattr("runner.stores.cloud.SPOOL_BYTES", 1024 * 1024)
    refused = _each_request_refused_once(moto_server, "s3", lambda path: "partNumber=" in path, "slowdown",
                                         20 * 1024 * 1024)
    assert refused == 3, "three 8 MiB parts, each refused once"


def test_regression_azure_block_failure_is_retried_alone(azurite: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the SDK's retries off, one block's 503 failed a whole block upload (blobs above 64 MiB,
    such as a ResNet-50 checkpoint), so under faults big checkpoints rarely committed."""
    monkeypatch.setattr("runner.stores.cloud.SPOOL_BYTES", 1024 * 1024)
    monkeypatch.setattr("runner.stores.azure_blob.MAX_SINGLE_PUT", 2 * 1024 * 1024)
    monkeypatch.setattr("runner.stores.azure_blob.BLOCK_BYTES", 2 * 1024 * 1024)
    refused = _each_request_refused_once(azurite, "az", lambda path: "comp=block" in path and "comp=blocklist"
                                         not in path, "503", 9 * 1024 * 1024)
    assert refused == 5, "five 2 MiB blocks, each refused once"


def test_regression_disk_full_error_says_no_space_not_torch_internals(tmp_path: Any) -> None:
    """A full disk under torch.save read "RuntimeError: [enforce fail at inline_container.cc:672]"."""
    from benchmarks.faults import CaseUnavailable
    from runner.errors import StoreError
    from runner.task import checkpoint as ck
    from runner.task.writer import CheckpointWriter
    from tests.faults.cases import tmpfs
    from tests.integration.test_store_contract import state_for

    for mode in ("sync", "fork"):
        try:
            mount_cm = tmpfs(tmp_path / mode, 512)
            mount = mount_cm.__enter__()
        except CaseUnavailable as exc:
            if os.environ.get("RUNNER_REQUIRE_DOCKER") == "1":
                pytest.fail(str(exc), pytrace=False)
            pytest.skip(str(exc))
        try:
            writer = CheckpointWriter(f"file://{mount}/ck", keep=2, mode=mode)
            writer.submit(1, state_for(1, 10_000), {"epoch": 0})
            writer.flush()
            with pytest.raises(StoreError, match=r"failed: No space left on device") as info:
                writer.submit(2, state_for(2, 400_000), {"epoch": 0})
                writer.flush()
            assert "\n" not in str(info.value) and "enforce fail" not in str(info.value)
            loaded = ck.load_latest(open_store(f"file://{mount}/ck"))
            assert loaded is not None and loaded.step == 1
        finally:
            mount_cm.__exit__(None, None, None)


@pytest.mark.parametrize("kind", ["gs", "az"])
def test_regression_a_not_found_answer_cut_short_is_a_miss_not_an_outage(kind: str,
                                                                         request: pytest.FixtureRequest) -> None:
    """Azure's SDK reads an error answer's body after its retries: a 404 on the manifest of a job with
    no checkpoint yet, cut short by the network, ended the task at startup ("failed after the SDK's
    retries") instead of being asked again. Up to two answers in a row to the missing key are cut short;
    the read ends in FileNotFoundError (nothing there), as without the faults. (S3's read asks with a
    HEAD first, whose answer has no body to cut.)"""
    emu = request.getfixturevalue({"gs": "gcs_emulator", "az": "azurite"}[kind])
    bucket = create_bucket(kind, emu.env)
    missing = lambda method, path: method == "GET" and "absent.json" in path  # noqa: E731
    seen: list[str] = []
    with FaultProxy(emu.url, rate=1.0, faults=("truncated",), max_in_row=2, fault_match=missing,
                    on_request=lambda method, path: seen.append(f"{method} {path}")) as proxy:
        with environ(env_for(kind, proxy.url)):
            store = open_store(f"{kind}://{bucket}/p")
            with pytest.raises(FileNotFoundError):
                store.read_bytes("absent.json")
        assert proxy.injected["truncated"] >= 1, seen


def test_regression_a_download_cut_short_is_retried_without_a_bare_warning(azurite: Any,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    """azure-core's transport warned a bare "Incomplete download." into the task's log for each body
    cut short, with nothing to say it was retried (it is: the read below returns the whole blob)."""
    bucket = create_bucket("az", azurite.env)
    data = os.urandom(300_000)
    with environ(env_for("az", azurite.url)):
        open_store(f"az://{bucket}/p").write_bytes("state.bin", data)
    cut = lambda method, path: method == "GET" and "state.bin" in path  # noqa: E731
    with FaultProxy(azurite.url, rate=1.0, faults=("truncated",), max_in_row=2, fault_match=cut) as proxy:
        with environ(env_for("az", proxy.url)):
            assert open_store(f"az://{bucket}/p").read_bytes("state.bin") == data
        assert proxy.injected["truncated"] >= 1
    assert not [r for r in caplog.records if "Incomplete download" in r.getMessage()]


def test_regression_busy_neighbours_do_not_starve_the_checkpoint_writer(azurite: Any, tmp_path: Path) -> None:
    """The forked writer ran at SCHED_IDLE. Beside four CPU-bound processes in its session (the fault
    table ran beside an image build: seed 600823969, "no checkpoint write was seen" for 120 s) a
    checkpoint upload waited 44 s, and the writer killed at a notice's deadline took 13 s to die: the
    task exited 19 s after the notice of an 8 s window. The same hung-upload trial as the fault
    table's, with four busy neighbours: exit 75 inside the window, the previous step kept."""
    neighbours = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(4)]
    try:
        ctx = FaultContext(quick=True, seed=600823969, workdir=tmp_path, emulators={"az": lambda: azurite})
        tally = Tally("busy neighbours")
        notice_cases._trial(ctx, tally, "az", 1, True, random.Random(1))  # SIGTERM; every upload hung past the window
    finally:
        for proc in neighbours:
            proc.kill()
            proc.wait()
    assert tally.trials == 1
    assert tally.losses == 0, tally.reasons
    assert tally.facts == {"window ran out: the previous step kept, the loss named": 1}
