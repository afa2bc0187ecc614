"""runner report through the real CLI: a ledger with preempted and finished attempts and the task's
progress.json in a file:// store -> PNG + self-contained HTML per job that agree with runner status."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.ledger import Ledger
from runner.spec import spec_from_dict
from runner.states import AttemptState, AttemptStatus, JobState
from runner.stores import open_store
from runner.task.manifest import write_progress

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_790_000_000.0  # the job's submission time; every other time is relative to it
SOURCE = 'list price <a href="https://aws.amazon.com/ec2/spot/pricing/">'  # must come out escaped
# (number, state, reason, exit code, submitted, started, ended, task-side history relative to T0)
ATTEMPTS = [
    (1, "PREEMPTED", "notice, checkpoint, exit 75", 75, 1.0, 6.0, 298.0,
     {"first_step_at": 20.0, "resumed_from": 0, "ckpt": [(80.0, 60), (140.0, 120), (200.0, 180), (260.0, 240),
                                                         (292.0, 272)], "stall_s": 2.5, "notice_at": 288.0,
      "notice_source": "aws"}),
    (2, "PREEMPTED", "killed without notice (bus)", 137, 300.0, 318.0, 590.0,
     {"first_step_at": 333.0, "resumed_from": 272, "ckpt": [(393.0, 332), (453.0, 392), (513.0, 452)],
      "stall_s": 1.5}),
    (3, "SUCCEEDED", "exit 0", 0, 592.0, 605.0, 870.0,
     {"first_step_at": 619.0, "resumed_from": 452, "ckpt": [(679.0, 512), (739.0, 572), (799.0, 632),
                                                           (859.0, 692), (862.0, 700)], "stall_s": 2.0}),
]


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "runner.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def make_job(home: Path, name: str = "report-demo", attempts=ATTEMPTS, array: int = 1, t0: float = T0,
             state: JobState = JobState.SUCCEEDED) -> str:
    """A job as a watcher leaves it: attempts in the ledger, each attempt's timings in progress.json."""
    spec = spec_from_dict({
        "name": name, "image": "localhost/runner-cifar:latest", "backend": "local", "array": array,
        "checkpoint": {"uri": f"file://{home / 'ckpt' / name}"},
        "local": {"imitates": "aws:us-east-1:g4dn.xlarge", "price_per_hour": 0.21},
        "cost": {"source": SOURCE, "date": "2026-11-01"},
        "env": {"API_TOKEN": "hunter2-secret"}})
    with Ledger(home / "ledger.db") as ledger:
        job_id = ledger.create_job(spec, home / f"{name}.yaml")
        for index in range(array):
            history = {}
            for _, st, reason, code, sub, start, end, h in attempts:
                a = ledger.reserve_attempt(job_id, index)
                number = a.number
                ledger.record_submitted(a.id, f"{job_id}-{index}-{number}")
                ledger.update_attempt(a.id, AttemptStatus(AttemptState(st), reason, code, t0 + start, t0 + end))
                with sqlite3.connect(ledger.path) as db:
                    db.execute("UPDATE attempts SET submitted_at = ?, reserved_at = ? WHERE id = ?",
                               (t0 + sub, t0 + sub, a.id))
                marks = [[t0 + t, s] for t, s in h["ckpt"]]
                history[str(number)] = {
                    "started_at": t0 + start + 1, "first_step_at": t0 + h["first_step_at"],
                    "resumed_from": h["resumed_from"], "checkpoint_log": marks, "checkpoint_at": marks[-1][0],
                    "checkpoint_step": marks[-1][1], "stall_s": h["stall_s"], "checkpoints": len(marks),
                    **({"notice_at": t0 + h["notice_at"], "notice_source": h["notice_source"]}
                       if "notice_at" in h else {})}
            write_progress(open_store(spec.checkpoint_uri_for(index, job_id)),
                           {"attempts": history, "task": "cifar", "state": "done", "step": 700, "total_steps": 700,
                            "attempt": len(attempts), "job_id": job_id})
        ledger.set_job_state(job_id, state, "done <b>ok</b> & finished")
        with sqlite3.connect(ledger.path) as db:
            db.execute("UPDATE jobs SET created_at = ? WHERE id = ?", (t0, job_id))
    return job_id


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def money(amount: float, currency: str = "USD") -> str:
    """What runner status prints: two decimals from 1 up, four below."""
    assert currency == "USD"
    return "$" + (f"{amount:.2f}" if abs(amount) >= 1 else f"{amount:.4f}")


def assert_self_contained(page: str) -> None:
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I), "external link or source"
    assert not re.search(r"<(?:script|link|iframe)\b", page, re.I)
    assert "hunter2" not in page and "API_TOKEN" not in page


def test_job_report_shows_every_attempt_and_agrees_with_status(tmp_path: Path):
    job_id = make_job(tmp_path)
    out = tmp_path / "out"
    proc = run_cli("report", job_id, "--out", str(out), home=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    png, page_path = out / f"{job_id}.png", out / f"{job_id}.html"
    assert f"wrote {png}" in proc.stdout and f"wrote {page_path}" in proc.stdout
    width, height = png_size(png)
    assert 1000 <= width <= 2000 and 500 <= height <= 1500, (width, height)
    assert 30_000 < png.stat().st_size < 1_000_000

    page = page_path.read_text()
    assert_self_contained(page)
    assert page.count('src="data:image/png;base64,') == 1
    # every attempt and both preemptions (one after an aws notice at 288 s, one without)
    for number in (1, 2, 3):
        assert f"<td class=t>attempt {number}</td>" in page
    assert page.count("<td class=t>PREEMPTED</td>") == 2
    assert page.count("<td class=t>SUCCEEDED</td>") == 3  # attempt 3, the job's facts, the total row
    assert "288.0 s (aws)" in page and "killed without notice (bus)" in page
    # strings from the ledger and the spec are escaped
    assert "done &lt;b&gt;ok&lt;/b&gt; &amp; finished" in page and "<b>ok</b>" not in page
    assert html_escaped(SOURCE) in page and SOURCE not in page

    status = json.loads(run_cli("status", job_id, "--json", home=tmp_path).stdout)
    cost = status["cost"]
    assert cost["spend"] and cost["on_demand_cost"] and status["preemptions"] == 2
    for label, value in (("spend (spot)", money(cost["spend"])), ("on demand (the useful work)",
                                                                  money(cost["on_demand_cost"])),
                         ("savings", money(cost["savings"])), ("value ratio v", f"{cost['value_ratio']:.3f}")):
        assert f"<th class=t>{html_escaped(label)}</th><td class=t>{html_escaped(value)}</td>" in page, label
    total_row = re.search(r"<tr class=total>(.*?)</tr>", page).group(1)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", total_row)
    assert [float(c) for c in cells[7:13]] == pytest.approx(
        [cost[k] for k in ("machine_s", "useful_s", "startup_s", "stall_s", "lost_s", "other_s")], abs=0.051)
    assert cells[13:15] == [html_escaped(money(cost["spend"])), html_escaped(money(cost["on_demand_cost"]))]
    for a in cost["attempts"]:  # each attempt's row carries its accounting
        row = re.search(rf"<tr><td class=t>attempt {a['number']}</td>(.*?)</tr>", page).group(1)
        assert f"<td>{a['machine_s']:.1f}</td>" in row and f"<td>{a['lost_s']:.1f}</td>" in row
    assert "2026-11-01" in page and "g4dn.xlarge" in page and "report-demo" in page


def html_escaped(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_summary_of_all_jobs_totals_spend_savings_and_v(tmp_path: Path):
    first = make_job(tmp_path, "demo-a")
    second = make_job(tmp_path, "demo-b", attempts=ATTEMPTS[2:], t0=T0 + 1000)
    with Ledger(tmp_path / "ledger.db") as ledger:  # a job with no attempt yet is listed, costs nothing
        waiting = ledger.create_job(spec_from_dict({"name": "queued", "image": "localhost/runner-cifar:latest"}))
    proc = run_cli("report", "--out", str(tmp_path / "r"), home=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    png_size(tmp_path / "r" / "summary.png")
    page = (tmp_path / "r" / "summary.html").read_text()
    assert_self_contained(page)
    rows = json.loads(run_cli("status", "--json", home=tmp_path).stdout)
    priced = [r["cost"] for r in rows if r["cost"]["spend"] is not None]
    spend, od = sum(c["spend"] for c in priced), sum(c["on_demand_cost"] for c in priced)
    assert len(priced) == 2 and od > spend
    for job in (first, second, waiting):
        assert f"<td class=t>{job}</td>" in page
    total = re.search(r"<tr class=total>(.*?)</tr>", page).group(1)
    assert "total (USD, 2 jobs)" in total and "<td>4</td><td>2</td>" in total  # attempts, preemptions
    assert f"<td>{money(spend)}</td><td>{money(od)}</td><td>{money(od - spend)}</td>" in total
    assert f"<td>{od / spend:.3f}</td>" in total
    assert "1 jobs have no price" in page


def test_array_job_draws_the_first_indexes_and_notes_the_rest(tmp_path: Path):
    job_id = make_job(tmp_path, "demo-array", attempts=ATTEMPTS[1:], array=6)
    proc = run_cli("report", job_id, "--out", str(tmp_path / "r"), home=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = (tmp_path / "r" / f"{job_id}.html").read_text()
    assert page.count("<td class=t>attempt 2</td>") == 6  # every attempt is in the table
    assert "4 attempts (array indexes past 3) are in the table, not the timeline" in page
    png_size(tmp_path / "r" / f"{job_id}.png")


@pytest.mark.parametrize("case", ["unknown-job", "no-attempts", "unwritable", "empty-ledger"])
def test_errors_are_one_line_without_traceback(tmp_path: Path, case: str):
    home = tmp_path / "home"
    home.mkdir()
    args = ["report"]
    if case != "empty-ledger":
        make_job(home)
    if case == "unknown-job":
        args.append("nosuch-123456")
    elif case == "no-attempts":
        with Ledger(home / "ledger.db") as ledger:
            args.append(ledger.create_job(spec_from_dict({"name": "idle", "image": "localhost/runner-cifar:latest"})))
    elif case == "unwritable":
        blocker = tmp_path / "a-file"
        blocker.write_text("x")
        args += ["--out", str(blocker / "reports")]
    proc = run_cli(*args, home=home)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    expected = {"unknown-job": "no job 'nosuch-123456'", "no-attempts": "has no attempts yet",
                "unwritable": "cannot write reports to", "empty-ledger": "no jobs in"}[case]
    assert expected in lines[0]


def test_default_folder_is_under_runner_home(tmp_path: Path):
    job_id = make_job(tmp_path)
    proc = run_cli("report", job_id, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "reports" / f"{job_id}.png").exists() and (tmp_path / "reports" / f"{job_id}.html").exists()


def test_without_matplotlib_it_says_how_to_install_it(tmp_path: Path):
    job_id = make_job(tmp_path)
    fake = tmp_path / "fake"  # a matplotlib that fails to import, first on the path
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    env = {**os.environ, "RUNNER_HOME": str(tmp_path), "PYTHONPATH": f"{fake}{os.pathsep}{ROOT}"}
    proc = subprocess.run([sys.executable, "-m", "runner.cli", "report", job_id], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == ("error: runner report needs matplotlib: pip install 'spot-runner[report]' "
                                   "(or pip install matplotlib)")
    assert proc.stdout.strip() == "" and not (tmp_path / "reports").exists()
    status = subprocess.run([sys.executable, "-m", "runner.cli", "status", job_id], capture_output=True, text=True,
                            env=env, timeout=60)
    assert status.returncode == 0, status.stderr  # the other commands never import it


def test_a_long_history_is_capped_in_the_timeline_but_complete_in_the_table(tmp_path: Path, monkeypatch):
    from runner import report

    job_id = make_job(tmp_path, attempts=ATTEMPTS)
    monkeypatch.setattr("runner.report.data.MAX_LANES", 2)
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path))
    with Ledger(tmp_path / "ledger.db") as ledger:
        data = report.load_job(ledger, job_id)
        paths = report.write_reports([job_id], tmp_path / "r", ledger)
    assert data.lanes == [(0, 1), (0, 2)] and data.hidden == 1
    page = paths[1].read_text()
    assert "1 attempts are in the table, not the timeline" in page and "<td class=t>attempt 3</td>" in page
    png_size(paths[0])


def test_a_running_job_with_a_failure_and_an_attempt_not_started_yet(tmp_path: Path, monkeypatch):
    from runner import report

    monkeypatch.setenv("RUNNER_HOME", str(tmp_path))
    spec = spec_from_dict({"name": "live", "image": "localhost/runner-cifar:latest", "array": 2,
                           "checkpoint": {"uri": f"file://{tmp_path / 'ckpt'}"}})  # no price: money is "-"
    with Ledger(tmp_path / "ledger.db") as ledger:
        job_id = ledger.create_job(spec)
        now = time.time()
        failed = ledger.reserve_attempt(job_id, 0)
        ledger.update_attempt(failed.id, AttemptStatus(AttemptState.FAILED, "exit 1: boom", 1, now - 100, now - 60))
        running = ledger.reserve_attempt(job_id, 0)
        ledger.update_attempt(running.id, AttemptStatus(AttemptState.RUNNING, "", None, now - 50))
        ledger.reserve_attempt(job_id, 1)  # reserved, never started
        ledger.set_job_state(job_id, JobState.RUNNING)
        with sqlite3.connect(ledger.path) as db:
            db.execute("UPDATE jobs SET created_at = ? WHERE id = ?", (now - 120, job_id))
        png, page = report.write_reports([job_id], tmp_path / "r", ledger)
    text = page.read_text()
    assert "<td class=t>FAILED</td>" in text and "<td class=t>RUNNING</td>" in text and "<td class=t>PENDING</td>" in text
    assert "No price: spend and v are unknown" in text and "exit 1: boom" in text
    png_size(png)
