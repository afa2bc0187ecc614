"""The dashboard's data without a browser: watcher health, masking of secrets in free text."""

from __future__ import annotations

import time
from pathlib import Path

from runner.health import write_status
from runner.ledger import Lease
from runner.ui.model import scrub, scrub_text, watch_status, watcher_of
from tests.ui.conftest import FAKE_ENV


def test_the_watchers_status_file_is_judged_afresh(tmp_path: Path) -> None:
    path = tmp_path / "watch-status.json"
    now = time.time()
    write_status(path, {"ok": True, "owner": "vm:1:abc", "last_tick_at": now - 3, "stale_after_s": 10.0,
                        "last_error": ""})
    fresh = watch_status(path, now)
    assert fresh is not None and fresh["ok"] and "vm:1:abc: last pass 3s ago" == fresh["text"]
    stale = watch_status(path, now + 60)  # the file says ok, but its last pass is a minute old
    assert stale is not None and not stale["ok"]
    write_status(path, {"owner": "vm:1:abc", "last_tick_at": now, "last_error": "cannot reach AWS_SECRET_ACCESS_KEY="
                        + FAKE_ENV["AWS_SECRET_ACCESS_KEY"]})
    failing = watch_status(path, now)
    assert failing is not None and not failing["ok"] and FAKE_ENV["AWS_SECRET_ACCESS_KEY"] not in failing["text"]
    missing = watch_status(tmp_path / "nope.json", now)
    assert missing is not None and not missing["ok"] and "cannot read" in missing["text"]
    assert watch_status(None, now) is None


def test_who_watches_a_job_from_its_lease() -> None:
    from runner.ledger import Job
    from runner.states import JobState

    now = time.time()
    job = Job("j-1", "j", "{}", None, "local", 1, JobState.RUNNING, now, now, 0, 0, 1, 1, "", None)
    assert watcher_of(job, Lease("j-1", "vm:1:abc", now - 5, now + 25), now)["state"] == "ok"
    assert watcher_of(job, Lease("j-1", "vm:1:abc", now - 60, now - 30), now)["state"] == "lost"
    assert watcher_of(job, None, now)["state"] == "none"
    done = Job("j-1", "j", "{}", None, "local", 1, JobState.SUCCEEDED, now, now, 0, 0, 1, 1, "", None)
    assert watcher_of(done, None, now)["state"] == "done"


def test_free_text_and_specs_lose_whatever_looks_secret() -> None:
    lines = "\n".join(f"{k}={v}" for k, v in FAKE_ENV.items()) + "\nexport API_PASSWORD: 'hunter2 two'\nloss 0.25"
    masked = scrub_text(lines, known=("my-own-secret-value",)) + scrub_text("echo my-own-secret-value",
                                                                           known=("my-own-secret-value",))
    for value in [*FAKE_ENV.values(), "hunter2", "my-own-secret-value"]:
        assert value not in masked, value
    assert "loss 0.25" in masked and "AWS_SECRET_ACCESS_KEY=***" in masked
    spec = scrub({"name": "x", "env": {"PLAIN": "1", "DB": FAKE_ENV["DATABASE_URL"]},
                  "args": ["--token", "--url", FAKE_ENV["DATABASE_URL"]], "azure": {"account_key": "abc"}})
    assert spec == {"name": "x", "env": {"PLAIN": "1", "DB": "***"}, "args": ["--token", "--url", "***"],
                    "azure": {"account_key": "***"}}
