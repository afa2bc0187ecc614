"""Checkpoints are data, never code: sha256 first, then ``torch.load(weights_only=True)``.

tests/unit/test_checkpoint.py already covers a legacy pickle whose manifest is right, ``../`` and
absolute names in a manifest, and torn files. Added here: the order (a file whose hash does not
match never reaches ``torch.load``), a malicious pickle inside a real torch zip file (the format
``torch.save`` writes) in a step and in ``final/``, and the same manifest checks for ``runner exec``
folder indexes (paths outside the folder, the private staging name).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pytest
import torch

from runner.errors import CorruptCheckpoint
from runner.exec.sync import parse_index
from runner.stores import open_store
from runner.task import checkpoint as ck


class _Marker:
    """Unpickling this runs ``os.system``: a marker file appears if it ever executes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


def _evil_torch_file(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(3), "evil": _Marker(marker)}, buf)  # a real zip-format torch file
    return buf.getvalue()


def _commit(store_dir: Path, step: int) -> None:
    ck.write_step(open_store(f"file://{store_dir}"), step, {"w": torch.full((4,), float(step))},
                  {"epoch": 0}, keep=10)


def _plant(step_dir: Path, payload: bytes, name: str = "state.pt", right_hash: bool = True) -> None:
    (step_dir / name).write_bytes(payload)
    manifest = json.loads((step_dir / "MANIFEST.json").read_text())
    sha = hashlib.sha256(payload).hexdigest() if right_hash else "f" * 64
    manifest["files"][name] = {"size": len(payload), "sha256": sha}
    (step_dir / "MANIFEST.json").write_text(json.dumps(manifest))


def test_malicious_pickle_in_a_torch_zip_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _commit(tmp_path / "ck", 10)
    _commit(tmp_path / "ck", 20)
    _plant(tmp_path / "ck" / "step-000020", _evil_torch_file(marker))  # hash and size match
    loaded = ck.load_latest(open_store(f"file://{tmp_path / 'ck'}"))
    assert loaded is not None and loaded.step == 10
    assert not marker.exists(), "the pickle ran"
    with pytest.raises(Exception):  # noqa: B017 - the control: plain torch.load would run it
        torch.load(io.BytesIO(_evil_torch_file(marker)), weights_only=True)
    assert not marker.exists()


def test_sha256_is_checked_before_anything_is_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _commit(tmp_path / "ck", 10)
    _commit(tmp_path / "ck", 20)
    payload = _evil_torch_file(tmp_path / "pwned")
    _plant(tmp_path / "ck" / "step-000020", payload, right_hash=False)
    evil = hashlib.sha256(payload).digest()
    seen: list[bytes] = []
    real_load = torch.load

    def spy(f, *args, **kwargs):  # type: ignore[no-untyped-def]
        data = f.getvalue() if isinstance(f, io.BytesIO) else b""
        seen.append(hashlib.sha256(data).digest())
        assert kwargs.get("weights_only") is True, "torch.load without weights_only"
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    loaded = ck.load_latest(open_store(f"file://{tmp_path / 'ck'}"))
    assert loaded is not None and loaded.step == 10
    assert len(seen) == 1 and evil not in seen, "a file whose sha256 did not match reached torch.load"
    assert not (tmp_path / "pwned").exists()


def test_final_result_with_a_malicious_pickle_is_not_executed(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    ck.save_final(store, {"w": torch.ones(2)}, {"weights_sha256": "x"})
    _plant(tmp_path / "final", _evil_torch_file(tmp_path / "pwned"), name="weights.pt")
    ck.load_final(store)  # reads and hashes; must never unpickle
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "a/../../b", "./x", "a//b", ".runner-restore/x", ""])
def test_exec_folder_index_refuses_paths_outside_the_folder(name: str) -> None:
    raw = json.dumps({"files": {name: {"size": 1, "sha256": "0" * 64}}}).encode()
    with pytest.raises(CorruptCheckpoint, match="outside the folder"):
        parse_index(raw, "step-000001/index.json")
