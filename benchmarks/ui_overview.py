"""How fast `runner ui` renders the overview of a big ledger, and what an update costs the ledger.

Builds a ledger of 1,000 jobs and 10,000 attempts (local jobs imitating priced machines, each with a
progress.json history like a real task's), serves it with the same app `runner ui` serves (uvicorn,
in a thread) and times `GET /` (the whole overview page, every job accounted and rendered) cold and
warm, and `GET /fragment/overview` (one live update). The baseline, in the same process, is what
`runner status --json` does for the same ledger (list the jobs, read each one's attempts, account
each with runner.summary.summarize). Also counts the SQL statements each update costs (sqlite3's
trace callback): one. Runs pinned to 2 CPUs. Exits 1 if the cold overview (median of --repeat fresh
dashboards) takes 1 s or more, or an update costs more than one query.

    .venv/bin/python benchmarks/ui_overview.py [--jobs 1000] [--attempts 10] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_ledger(home: Path, jobs: int, attempts: int, seed: int = 7) -> Path:
    """A ledger of ``jobs`` jobs with ``attempts`` attempts each, written in one transaction."""
    from runner.ledger import Ledger, redact_spec
    from runner.spec import load_spec

    rng = random.Random(seed)
    path = home / "ledger.db"
    Ledger(path).close()  # the schema, as the runner makes it
    base = load_spec(ROOT / "jobs" / "cifar-smoke.yaml")
    machines = ["g4dn.xlarge", "aws:us-east-1:p3.2xlarge", "aws:us-west-2:g5.xlarge", "aws:us-east-1:c5.2xlarge"]
    specs = [json.dumps(redact_spec(base.model_copy(update={"local": base.local.model_copy(update={
        "imitates": m, "price_per_hour": None})}).model_dump(mode="json")), sort_keys=True) for m in machines]
    now = time.time()
    job_rows, attempt_rows = [], []
    for n in range(jobs):
        job_id = f"bench-{n:05d}"
        created = now - 86400 * 3 + n * 200.0
        running = n >= jobs - jobs // 20  # the newest 5% still run
        t = created + 30
        history = {}
        for number in range(1, attempts + 1):
            last = number == attempts
            started, length = t + rng.uniform(5, 60), rng.uniform(300, 3000)
            ended = None if (last and running) else started + length
            state = ("RUNNING" if running else rng.choice(["SUCCEEDED"] * 8 + ["FAILED", "CANCELLED"])) if last \
                else rng.choice(["PREEMPTED"] * 5 + ["FAILED"])
            reason = {"PREEMPTED": "exit 75: stopped after a preemption notice", "FAILED": "exit 1",
                      "SUCCEEDED": "exit 0", "CANCELLED": "cancelled by the user", "RUNNING": ""}[state]
            attempt_rows.append((job_id, number, 0, "local", f"c{n}-{number}", state, t, t + 1, started, ended,
                                 None if ended is None else {"SUCCEEDED": 0, "PREEMPTED": 75}.get(state, 1), reason))
            first = started + rng.uniform(20, 90)
            end = ended if ended is not None else now
            saved = first + (end - first) * rng.uniform(0.6, 0.95)
            history[str(number)] = {"started_at": started, "first_step_at": first, "checkpoint_at": saved,
                                    "stall_s": rng.uniform(1, 20), "checkpoint_step": number * 500,
                                    "checkpoint_log": [[first + k * 60.0, number * 500 - 20 + k] for k in range(20)]}
            t = (ended or now) + rng.uniform(10, 120)
        state = "RUNNING" if running else attempt_rows[-1][5]
        job_rows.append((job_id, "bench", specs[n % len(specs)], None, "local", 1, state, created, t,
                         sum(r[5] == "PREEMPTED" for r in attempt_rows[-attempts:]),
                         sum(r[5] == "FAILED" for r in attempt_rows[-attempts:]), 20, 20,
                         "all attempts done" if state == "SUCCEEDED" else "", None))
        folder = home / "checkpoints" / job_id
        folder.mkdir(parents=True)
        (folder / "progress.json").write_text(json.dumps({
            "task": "cifar", "attempt": attempts, "step": attempts * 500, "total_steps": attempts * 520,
            "epoch": attempts, "attempts": history}))
    db = sqlite3.connect(path)
    with db:
        db.executemany("INSERT INTO jobs (id, name, spec_json, spec_path, backend, array_size, state, created_at,"
                       " updated_at, preemptions_used, failures_used, preemption_budget, failure_budget, message,"
                       " result_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", job_rows)
        db.executemany("INSERT INTO attempts (job_id, number, array_index, backend, backend_id, state, reserved_at,"
                       " submitted_at, started_at, ended_at, exit_code, reason)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", attempt_rows)
    db.close()
    return path


def baseline(path: Path) -> float:
    """Seconds `runner status --json` spends on the same ledger (its loop, in this process)."""
    from runner.ledger import Ledger
    from runner.summary import read_progress, summarize

    t0 = time.perf_counter()
    with Ledger(path) as ledger:
        rows = [summarize(job, ledger.attempts(job.id), read_progress(job)) for job in ledger.list_jobs()]
    json.dumps(rows)
    return time.perf_counter() - t0


def serve(path: Path) -> tuple[str, object, threading.Thread]:
    import uvicorn

    from runner.ui.app import create_app
    from runner.ui.model import Dashboard
    from runner.ui.server import bind

    sock = bind("127.0.0.1", 0)
    dashboard = Dashboard(path)
    app = create_app(dashboard, token=None, csrf="bench", port=sock.getsockname()[1], loopback=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    app.state.server = server
    return f"http://127.0.0.1:{sock.getsockname()[1]}", app, thread


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--attempts", type=int, default=10, help="per job")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))[:2]
    os.sched_setaffinity(0, cpus)
    os.environ["RUNNER_LIVE_PRICES"] = "0"
    import requests

    with tempfile.TemporaryDirectory(prefix="ui-bench-") as tmp:
        home = Path(tmp)
        os.environ["RUNNER_HOME"] = str(home)
        t0 = time.perf_counter()
        path = build_ledger(home, args.jobs, args.attempts)
        print(f"ledger: {args.jobs} jobs, {args.jobs * args.attempts} attempts, {path.stat().st_size / 1e6:.1f} MB, "
              f"built in {time.perf_counter() - t0:.1f}s; CPUs {cpus}")
        base = [baseline(path) for _ in range(args.repeat)]
        session = requests.Session()
        colds: list[float] = []
        for round_ in range(args.repeat):  # a fresh dashboard each round: nothing cached
            url, app, thread = serve(path)
            dashboard = app.state.dashboard

            def get(page: str) -> tuple[float, int, int]:
                q = dashboard.view.queries  # noqa: B023 - this round's dashboard
                start = time.perf_counter()
                answer = session.get(url + page, timeout=60)  # noqa: B023
                took = time.perf_counter() - start
                assert answer.status_code == 200, answer.status_code
                return took, dashboard.view.queries - q, len(answer.content)  # noqa: B023

            took, cold_q, size = get("/")
            colds.append(took)
            if round_ == 0:
                assert f"bench-{args.jobs - 1:05d}" in session.get(url + "/").text
                warm = [get("/") for _ in range(args.repeat)]
                updates = [get("/fragment/overview") for _ in range(args.repeat)]
                job = [get(f"/jobs/bench-{args.jobs - 1:05d}") for _ in range(args.repeat)]
            app.state.server.should_exit = True
            thread.join(10)
            dashboard.close()

    b = statistics.median(base)
    w = statistics.median(t for t, _, _ in warm)
    u = statistics.median(t for t, _, _ in updates)
    print(f"baseline (runner status --json, {args.jobs} jobs): median {b * 1000:.0f} ms")
    cold = statistics.median(colds)
    each = ", ".join(f"{c * 1000:.0f}" for c in colds)
    print(f"GET /  cold (nothing cached yet): median {cold * 1000:.0f} ms (of {each}), "
          f"{cold_q} query, {size / 1e6:.2f} MB of HTML (x{cold / b:.2f} the baseline)")
    print(f"GET /  warm (finished jobs kept): median {w * 1000:.0f} ms, queries {[q for _, q, _ in warm]} "
          f"(x{w / b:.2f} the baseline)")
    print(f"GET /fragment/overview (one live update): median {u * 1000:.0f} ms, queries {[q for _, q, _ in updates]}")
    print(f"GET /jobs/<running job> (10 attempts): median {statistics.median(t for t, _, _ in job) * 1000:.0f} ms, "
          f"queries {[q for _, q, _ in job]}")
    queries = [cold_q] + [q for _, q, _ in warm + updates + job]
    ok = cold < 1.0 and all(q == 1 for q in queries)
    print(f"{'PASS' if ok else 'FAIL'}: overview under 1 s on {len(cpus)} CPUs ({cold:.2f} s cold), "
          f"one query per update ({max(queries)} at most)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
