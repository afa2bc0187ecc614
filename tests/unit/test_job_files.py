"""What the runner reads beside a job's attempts: a succeeded `runner exec` job's result is its last folder
snapshot, not an error; a task job's is its final manifest."""

from __future__ import annotations

import json
from pathlib import Path

from runner.job_files import clear_halt, read_result, write_halt
from runner.ledger import Ledger
from runner.spec import spec_from_dict


def _job(tmp_path: Path, uri: str):  # type: ignore[no-untyped-def]
    ledger = Ledger(tmp_path / "ledger.db")
    job_id = ledger.create_job(spec_from_dict({"name": "x", "image": "i", "checkpoint": {"uri": uri}}))
    return ledger.get_job(job_id)


def test_a_runner_exec_job_that_is_done_has_its_folder_snapshot_as_result(tmp_path: Path) -> None:
    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "progress.json").write_text(json.dumps({"task": "exec", "state": "done", "step": 7, "files": 3,
                                                      "bytes": 1234}))
    result = read_result(_job(tmp_path, f"file://{folder}"))
    assert result == {"checkpoint_uri": f"file://{folder}", "kind": "exec-folder", "step": 7, "files": 3,
                      "bytes": 1234, "metrics": {}}
    assert "error" not in result


def test_no_final_result_is_said_plainly(tmp_path: Path) -> None:
    result = read_result(_job(tmp_path, f"file://{tmp_path}/empty"))
    assert result["error"].startswith("no final result")


def test_halt_requests_are_written_with_why_and_removed(tmp_path: Path) -> None:
    job = _job(tmp_path, f"file://{tmp_path}/ck")
    write_halt(job, None, "budget")
    assert json.loads((tmp_path / "ck" / "HALT").read_text())["why"] == "budget"
    clear_halt(job)
    assert not (tmp_path / "ck" / "HALT").exists()
