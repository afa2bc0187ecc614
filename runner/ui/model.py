"""What the dashboard shows, computed by the same code as ``runner status`` and ``runner report``.

Each page update reads the ledger once (:meth:`LedgerView.snapshot`) and accounts every job with
:func:`runner.summary.summarize` (the overview) or :func:`runner.report.job_data` and
:func:`runner.report.timeline` (a job's page); totals come from :func:`runner.report.totals`.
A finished job's figures never change, so they are kept, keyed by everything the ledger says
about the job; a running job is accounted afresh on every update (its clock moves). Nothing
secret is shown: the ledger stores specs redacted, and :func:`scrub` masks anything that still
looks secret in specs, messages and log lines.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import RunnerError
from runner.ledger import REDACTED, SECRET_NAME, SECRET_VALUE, Attempt, Job, Lease
from runner.states import JobState
from runner.ui.ledger_view import LedgerView, Snapshot

#: Lines of an attempt's log on its page.
LOG_LINES = 200
#: A running attempt's log is read from its backend at most this often.
LOG_EVERY_S = 5.0
_SECRET_WORD = re.compile(r"\S*(?:" + SECRET_VALUE.pattern + r")\S*")
_SECRET_SETTING = re.compile(r"(\b\w*(?:" + SECRET_NAME.pattern + r")\w*\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)",
                             re.IGNORECASE)


def scrub_text(text: str, known: tuple[str, ...] = ()) -> str:
    """Mask what looks secret in free text: ``NAME_KEY=value``, AWS key ids, ``AccountKey=``, URL passwords,
    and the values of this process's own secret-named environment variables (``known``)."""
    for value in known:
        text = text.replace(value, REDACTED)
    text = _SECRET_SETTING.sub(lambda m: m.group(1) + REDACTED, text)
    return _SECRET_WORD.sub(REDACTED, text)


def scrub(value: Any, key: str = "") -> Any:
    """A spec (or any JSON) with every secret-named field and secret-looking string masked."""
    if isinstance(value, dict):
        return {k: scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, key) for v in value]
    if isinstance(value, str) and ((key and SECRET_NAME.search(key)) or SECRET_VALUE.search(value)):
        return REDACTED
    if isinstance(value, str):
        return scrub_text(value)
    return value


def own_secrets() -> tuple[str, ...]:
    """Values of this process's environment variables whose names look secret (never shown)."""
    return tuple(v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 6)


def watcher_of(job: Job, lease: Lease | None, now: float) -> dict[str, Any]:
    """Who keeps the job alive: a live lease is a watcher at work; an active job without one has none."""
    active = getattr(job.state, "is_active", None)  # PAUSED: nothing runs, nothing to watch
    if not (active() if active is not None else not job.state.is_terminal()):
        text = "-" if job.state.is_terminal() else f"{job.state.value.lower()}: nothing runs"
        return {"state": "done", "text": text}
    if lease is not None and lease.expires_at > now:
        return {"state": "ok", "text": f"{lease.owner} (lease {lease.expires_at - now:.0f}s left)",
                "owner": lease.owner}
    if lease is not None:
        return {"state": "lost", "text": f"lease of {lease.owner} expired {now - lease.expires_at:.0f}s ago"}
    return {"state": "none", "text": "no watcher: run `runner watch`"}


def watch_status(path: Path | None, now: float) -> dict[str, Any] | None:
    """The watcher's ``--status-file`` (its /healthz JSON), judged afresh: stale when its last pass is old."""
    if path is None:
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {"ok": False, "text": f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"}
    last = doc.get("last_tick_at") if isinstance(doc, dict) else None
    if not isinstance(last, (int, float)):
        return {"ok": False, "text": f"{path}: no pass yet"}
    age, limit = now - last, float(doc.get("stale_after_s") or 10.0)
    error = doc.get("last_error") or ""
    text = f"{doc.get('owner')}: last pass {age:.0f}s ago" + (f", error: {scrub_text(error)}" if error else "")
    return {"ok": age <= limit and not error, "owner": doc.get("owner"), "age_s": round(age, 1), "text": text}


@dataclass
class _Kept:
    key: tuple[Any, ...]
    value: Any


class Dashboard:
    """The pages' data from one ledger; thread-safe; finished jobs' figures kept between updates."""

    def __init__(self, ledger_path: Path, status_file: Path | None = None) -> None:
        self.view = LedgerView(ledger_path)
        self.status_file = status_file
        self._rows: dict[str, _Kept] = {}
        self._pages: dict[str, _Kept] = {}
        self._attempts: dict[str, tuple[float, list[Attempt]]] = {}
        self._logs: dict[str, tuple[float, list[str], str]] = {}
        self._backends: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._secrets = own_secrets()

    def close(self) -> None:
        self.view.close()
        for backend in self._backends.values():
            try:
                backend.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    # ------------------------------------------------------------------ overview

    def overview(self, state: str | None = None, backend: str | None = None) -> dict[str, Any]:
        """Every job's row (filtered), the totals of the rows shown, the watchers' health. One query."""
        from runner.report import totals

        snap = self.view.snapshot()
        now = snap.at
        rows = [self._row(job, snap, now) for job in snap.jobs]
        states = {r["state"] for r in rows} | {s.value for s in JobState}
        backends = sorted({r["backend"] for r in rows})
        shown = [r for r in rows if (not state or r["state"] == state) and (not backend or r["backend"] == backend)]
        priced = [r for r in shown if r["cost"]["spend"] is not None]
        money = [{"currency": c, **totals(priced, c)} for c in sorted({r["cost"]["currency"] for r in priced})]
        watchers = sorted({r["watcher"]["owner"] for r in rows if r["watcher"]["state"] == "ok"})
        return {
            "ledger": str(self.view.path), "exists": snap.exists, "at": now, "jobs": shown,
            "counts": {s: sum(r["state"] == s for r in shown) for s in sorted(states)},
            "total_jobs": len(rows), "states": sorted(states), "backends": backends,
            "filters": {"state": state or "", "backend": backend or ""}, "money": money,
            "unpriced": len(shown) - len(priced),
            "attempts": sum(r["attempts"] for r in shown), "preemptions": sum(r["preemptions"] for r in shown),
            "watchers": watchers, "unwatched": sum(r["watcher"]["state"] in ("none", "lost") for r in rows),
            "watch_status": watch_status(self.status_file, now),
        }

    def _row(self, job: Job, snap: Snapshot, now: float) -> dict[str, Any]:
        attempts = snap.attempts.get(job.id, [])
        key = _fingerprint(job, attempts)
        kept = self._rows.get(job.id)
        if kept is not None and kept.key == key and job.state.is_terminal():
            row = kept.value
        else:
            row = self._account(job, attempts)
            with self._lock:
                self._rows[job.id] = _Kept(key, row)
        return {**row, "watcher": watcher_of(job, snap.leases.get(job.id), now)}

    def _account(self, job: Job, attempts: list[Attempt]) -> dict[str, Any]:
        from runner.summary import read_progress, summarize

        base = {"job_id": job.id, "name": job.name, "backend": job.backend, "state": job.state.value,
                "message": scrub_text(job.message, self._secrets), "created_at": job.created_at,
                "array_size": job.array_size, "terminal": job.state.is_terminal()}
        try:
            spec = job.spec()  # parsed once: the progress file, the price, the capacity
            summary = summarize(job, attempts, read_progress(job, 0, spec), spec=spec)
            policy = spec.capacity_policy
        except RunnerError as exc:  # a spec this version cannot read: show the job, say why
            return {**base, "capacity": "?", "attempts": len(attempts), "preemptions": 0, "failures": 0,
                    "wall_s": 0.0, "goodput": None, "step": None, "total_steps": None, "progress": None,
                    "cost": {"spend": None, "on_demand_cost": None, "value_ratio": None, "currency": None,
                             "savings": None, "machine_s": 0.0, "notes": [str(exc)]}, "error": scrub_text(str(exc))}
        step, total = summary["step"], summary["total_steps"]
        progress = (min(1.0, step / total) if isinstance(step, (int, float)) and isinstance(total, (int, float))
                    and total > 0 else None)
        if job.state == JobState.SUCCEEDED:
            progress = 1.0
        cost = {k: v for k, v in summary["cost"].items() if k != "attempts"}
        return {**base, **{k: summary[k] for k in ("attempts", "preemptions", "failures", "wall_s", "goodput",
                                                    "step", "total_steps", "useful_s", "lost_s")},
                "capacity": _capacity(policy, attempts), "progress": progress, "cost": cost}

    # ------------------------------------------------------------------ one job

    def job(self, job_id: str) -> dict[str, Any] | None:
        """One job's page: facts, accounting, timeline, attempts, redacted spec. One query; None if unknown."""
        from runner.report import job_data, timeline

        snap = self.view.snapshot(job_id)
        if not snap.jobs:
            return None
        job, now = snap.jobs[0], snap.at
        attempts = snap.attempts.get(job.id, [])
        with self._lock:
            self._attempts[job.id] = (now, attempts)
        key = _fingerprint(job, attempts)
        kept = self._pages.get(job.id)
        if kept is not None and kept.key == key and job.state.is_terminal():
            page = kept.value
        else:
            page = self._page(job, attempts, job_data, timeline)
            with self._lock:
                self._pages[job.id] = _Kept(key, page)
        return {**page, "watcher": watcher_of(job, snap.leases.get(job.id), now), "at": now}

    def _page(self, job: Job, attempts: list[Attempt], job_data: Any, timeline: Any) -> dict[str, Any]:
        row = self._account(job, attempts)
        spec = scrub(json.loads(job.spec_json))
        page: dict[str, Any] = {"job": row, "spec": json.dumps(spec, indent=2, sort_keys=True),
                                "spec_path": job.spec_path, "budgets": {
                                    "preemptions": f"{job.preemptions_used} of {job.preemption_budget}",
                                    "failures": f"{job.failures_used} of {job.failure_budget}"},
                                "timeline": None, "attempts": [], "notes": list(row["cost"].get("notes") or [])}
        if not attempts or "error" in row:
            return page
        d = job_data(job, attempts)
        by_key = {(r["index"], r["number"]): r for r in d.summary["cost"]["attempts"]}
        page["timeline"] = timeline(d)
        page["attempts"] = [{
            "number": a.number, "index": a.array_index, "backend": a.backend, "state": a.state.value,
            "exit_code": a.exit_code, "reason": scrub_text(a.reason, self._secrets),
            "submitted_at": a.submitted_at, "started_at": a.started_at, "ended_at": a.ended_at,
            "since": {k: None if t is None else t - job.created_at
                      for k, t in (("started", a.started_at), ("ended", a.ended_at))},
            **{k: v for k, v in by_key.get((a.array_index, a.number), {}).items()
               if k.endswith("_s") or k in ("spend", "on_demand_cost")},
        } for a in attempts]
        return page

    # ------------------------------------------------------------------ logs

    def logs(self, job_id: str) -> dict[str, Any]:
        """The tail of the newest submitted attempt's log, scrubbed. Uses the attempts the job's page
        read last (no query); a finished attempt's log is read once, a running one every LOG_EVERY_S."""
        with self._lock:
            held = self._attempts.get(job_id)
        if held is None:
            self.job(job_id)
            with self._lock:
                held = self._attempts.get(job_id)
        attempts = [a for a in (held[1] if held else []) if a.backend_id]
        if not attempts:
            return {"attempt": None, "lines": [], "note": "no attempt submitted yet"}
        a = attempts[-1]
        cache_key = f"{a.backend}:{a.backend_id}"
        now = time.time()
        cached = self._logs.get(cache_key)
        if cached is not None and (a.state.is_terminal() or now - cached[0] < LOG_EVERY_S):
            _, lines, note = cached
        else:
            lines, note = self._read_log(a)
            if cached is not None and note and not lines:
                lines = cached[1]  # the container is gone: keep what was read before
            with self._lock:
                self._logs[cache_key] = (now, lines, note)
        return {"attempt": a.number, "index": a.array_index, "state": a.state.value, "lines": lines, "note": note}

    def _read_log(self, a: Attempt) -> tuple[list[str], str]:
        from runner.backends import get_backend

        try:
            backend = self._backends.get(a.backend)
            if backend is None:
                backend = self._backends[a.backend] = get_backend(a.backend)
            tail = deque(backend.logs(a.backend_id or "", follow=False), maxlen=LOG_LINES)
        except RunnerError as exc:
            return [], scrub_text(str(exc), self._secrets)
        return [scrub_text(line, self._secrets) for line in tail], ""


def _fingerprint(job: Job, attempts: list[Attempt]) -> tuple[Any, ...]:
    """Everything the ledger says about a job: equal fingerprints, equal figures (for a finished job)."""
    return (job.state, job.updated_at, job.message, job.preemptions_used, job.failures_used,
            tuple((a.id, a.state, a.started_at, a.ended_at, a.exit_code, a.reason, a.backend_id) for a in attempts))


def _capacity(policy: str, attempts: list[Attempt]) -> str:
    """What the job runs on: its newest attempt's capacity, and the policy when one chooses it."""
    current = attempts[-1].capacity if attempts else ("on-demand" if policy == "on-demand" else "spot")
    return current if policy in ("spot-only", "on-demand") else f"{current} ({policy})"
