"""A job's report as data: the ledger's rows, the accounting, the task's progress, and the timeline.

:func:`job_data` gathers what one job's report shows; :func:`timeline` is what its PNG draws, as
data for a browser (``runner ui``); :func:`totals` sums the summary's priced rows. No matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runner.errors import RunnerError
from runner.ledger import Attempt, Job, Ledger

#: Array jobs: lanes for the attempts of the first this many indexes; the rest is summed in a note.
MAX_INDEXES = 4
#: At most this many lanes (attempts) in a timeline; the table lists every attempt.
MAX_LANES = 30
#: Summary plot: at most this many (newest) jobs; the table lists all.
MAX_PLOTTED_JOBS = 30
BUCKET_COLORS = {"startup": "#f2a541", "useful": "#2a9d55", "stall": "#7b6fd0", "lost": "#d1495b",
                 "other": "#9aa5b1"}
BUCKET_LABELS = {"startup": "startup (machine start to first step)", "useful": "useful (committed training)",
                 "stall": "checkpoint stall (total)", "lost": "lost (after the last checkpoint)",
                 "other": "other (evaluation, exit, uncommitted)"}
WAIT_COLOR = "#d9dee4"
#: How an attempt's end is marked: state -> (marker, color, size).
END_MARKERS = {"PREEMPTED": ("X", "#d1495b", 13), "FAILED": ("s", "black", 11), "SUCCEEDED": ("*", "#2a9d55", 17),
               "CANCELLED": ("o", "#555555", 11)}


@dataclass
class JobData:
    """What one job's report shows: the ledger's rows, the accounting and the task's progress."""

    job: Job
    attempts: list[Attempt]
    summary: dict[str, Any]
    progress: dict[int, dict[str, Any]]   # array index -> progress.json (shown indexes only)
    indexes: list[int]                    # the indexes with lanes
    lanes: list[tuple[int, int]]          # (index, number) of the attempts drawn, in lane order

    @property
    def hidden(self) -> int:
        """How many attempts the timeline leaves out (the table and the totals keep them)."""
        return len(self.attempts) - len(self.lanes)


def load_job(ledger: Ledger, job_id: str) -> JobData:
    """Gather one job's report inputs; a job with no attempt yet is an error."""
    job = ledger.get_job(job_id)
    attempts = ledger.attempts(job.id)
    if not attempts:
        raise RunnerError(f"job {job.id} has no attempts yet, so there is nothing to draw; "
                          f"report on it once it started (runner status {job.id})")
    return job_data(job, attempts)


def job_data(job: Job, attempts: list[Attempt]) -> JobData:
    """Gather one job's report inputs from rows already read (``runner ui`` reads them in one query)."""
    from runner.summary import read_progress, summarize

    all_indexes = sorted({a.array_index for a in attempts})
    indexes = all_indexes[:MAX_INDEXES]
    progress = {i: p for i in indexes if (p := read_progress(job, i)) is not None}
    summary = summarize(job, attempts, progress.get(0))
    lanes = sorted((a.array_index, a.number) for a in attempts if a.array_index in indexes)[:MAX_LANES]
    return JobData(job, attempts, summary, progress, indexes, lanes)


def timeline(d: JobData) -> dict[str, Any]:
    """What the timeline PNG draws, as data for a browser (``runner ui``), in seconds since submission:
    one lane per attempt (the wait for a machine, then its machine time in cost buckets, checkpoints,
    the notice, the end) and the committed step of each lane over time."""
    t0, by_key = d.job.created_at, {(a.array_index, a.number): a for a in d.attempts}
    rel = (lambda t: None if t is None else round(t - t0, 3))
    lanes: list[dict[str, Any]] = []
    progress: list[dict[str, Any]] = []
    total_steps = None
    for r in sorted((r for r in d.summary["cost"]["attempts"] if (r["index"], r["number"]) in d.lanes),
                    key=lambda r: (r["index"], r["number"])):
        a, prog = by_key.get((r["index"], r["number"])), d.progress.get(r["index"]) or {}
        total_steps = total_steps or prog.get("total_steps")
        hist = attempt_history(prog, r["number"])
        label = f"{'index ' + str(r['index']) + ', ' if d.job.array_size > 1 else ''}attempt {r['number']}"
        segments, left = [], r["started_at"]
        for bucket in ("startup", "useful", "stall", "lost" if r["lost_s"] else "other"):
            if left is not None and r[f"{bucket}_s"] > 0:
                segments.append([bucket, rel(left), rel(left + r[f"{bucket}_s"])])
                left += r[f"{bucket}_s"]
        marks = [[rel(t), step] for t, step in checkpoint_marks(hist)]
        waited = a is not None and a.submitted_at and r["started_at"] and r["started_at"] > a.submitted_at
        notice = hist.get("notice_at")
        lanes.append({"label": label, "state": r["state"], "reason": r["reason"], "segments": segments,
                      "wait": [rel(a.submitted_at), rel(r["started_at"])] if waited and a else None,
                      "checkpoints": marks, "end": rel(r["ended_at"]),
                      "notice": {"at": rel(notice), "source": hist.get("notice_source") or "?"}
                      if isinstance(notice, (int, float)) else None})
        start = next((hist[k] for k in ("first_step_at", "loaded_at") if isinstance(hist.get(k), (int, float))),
                     r["started_at"])
        points = ([[rel(start), hist.get("resumed_from") or 0]] if start is not None else []) + marks
        if hist and points:
            progress.append({"label": label, "points": points})
    return {"wall_s": d.summary["wall_s"], "lanes": lanes, "progress": progress, "total_steps": total_steps,
            "hidden": d.hidden, "colors": {**BUCKET_COLORS, "wait": WAIT_COLOR}, "labels": BUCKET_LABELS}


def past_note(d: JobData) -> str:
    return f" (array indexes past {d.indexes[-1]})" if len(d.indexes) < len({a.array_index for a in d.attempts}) \
        and len(d.lanes) == sum(a.array_index in d.indexes for a in d.attempts) else ""


def checkpoint_marks(hist: dict[str, Any]) -> list[tuple[float, int]]:
    """An attempt's checkpoints as (time, step): the log, plus the last commit when the log lacks it
    (the checkpoint after a notice is committed at once, without a log entry)."""
    marks = [(float(t), int(s)) for t, s in hist.get("checkpoint_log") or []
             if isinstance(t, (int, float)) and isinstance(s, int)]
    at, step = hist.get("checkpoint_at"), hist.get("checkpoint_step")
    if isinstance(at, (int, float)) and isinstance(step, int) and (not marks or step > marks[-1][1]):
        marks.append((float(at), step))
    return marks


def attempt_history(progress: dict[str, Any] | None, number: int) -> dict[str, Any]:
    attempts = (progress or {}).get("attempts")
    h = attempts.get(str(number)) if isinstance(attempts, dict) else None
    return h if isinstance(h, dict) else {}


def totals(priced: list[dict[str, Any]], currency: str | None) -> dict[str, Any]:
    """Totals over the priced rows in one currency: spend, on-demand cost, savings, overall v, counts."""
    rows = [r for r in priced if r["cost"]["currency"] == currency]
    spend = sum(r["cost"]["spend"] for r in rows)
    od = sum(r["cost"]["on_demand_cost"] for r in rows)
    return {"jobs": len(rows), "spend": spend, "on_demand": od, "savings": od - spend, "v": od / spend if spend else None,
            "attempts": sum(r["attempts"] for r in rows), "preemptions": sum(r["preemptions"] for r in rows),
            "machine_s": sum(r["cost"]["machine_s"] for r in rows)}


def num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def dur(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
