"""``runner report``: a PNG and a self-contained HTML page per job, or a summary of all jobs.

Per job: a timeline since submission (one lane per attempt, its machine time colored by the cost
buckets of :mod:`runner.cost.accounting`, preemptions, notices and checkpoints marked), the
training progress below it, and the cost table. Without a job: every job's spend against what the
same work would cost on demand, and the totals. The HTML embeds the PNG as base64 and opens from
a file. Only the ledger's job and attempt fields, the task's ``progress.json`` timings and the
accounting go in: never ``env`` or other spec values. matplotlib is imported here only, so the
other commands stay fast; it is the ``report`` extra (``pip install 'spot-runner[report]'``).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.cost.accounting import format_money
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


def write_reports(job_ids: Sequence[str], out_dir: Path, ledger: Ledger) -> list[Path]:
    """Write ``<job>.png`` and ``<job>.html`` per job, or ``summary.*`` for all jobs; return the paths."""
    _need_matplotlib()
    datas = [load_job(ledger, j) for j in job_ids]
    if not job_ids:
        jobs = ledger.list_jobs()
        if not jobs:
            raise RunnerError(f"no jobs in {ledger.path} yet; submit one with `runner submit`")
    _make_dir(out_dir)
    written: list[Path] = []
    if job_ids:
        for d in datas:
            png = _job_png(d)
            written += [_write(out_dir / f"{d.job.id}.png", png),
                        _write(out_dir / f"{d.job.id}.html", job_html(d, png).encode())]
        return written
    from runner.summary import read_progress, summarize

    rows = []
    for job in jobs:
        attempts = ledger.attempts(job.id)
        rows.append({**summarize(job, attempts, read_progress(job)), "name": job.name, "backend": job.backend,
                     "created_at": job.created_at})
    png = _summary_png(rows)
    return [_write(out_dir / "summary.png", png), _write(out_dir / "summary.html", summary_html(rows, png).encode())]


# ------------------------------------------------------------------------------------ plots

def _job_png(d: JobData) -> bytes:
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    cost = d.summary["cost"]
    rows = sorted((r for r in cost["attempts"] if (r["index"], r["number"]) in d.lanes),
                  key=lambda r: (r["index"], r["number"]))
    by_key = {(a.array_index, a.number): a for a in d.attempts}
    t0 = d.job.created_at
    span = max([d.summary["wall_s"], 1.0] + [(r["ended_at"] or t0) - t0 for r in rows])
    scale, unit = (60.0, "min") if span > 180 else (1.0, "s")
    x = (lambda t: (t - t0) / scale)
    array = d.job.array_size > 1

    fig = Figure(figsize=(12, 4.6 + 0.38 * len(rows)), dpi=100, layout="constrained")
    lanes_ax, prog_ax = fig.subplots(2, 1, sharex=True, height_ratios=[max(2.0, 0.5 * len(rows)), 2.2])
    for lane, r in enumerate(rows):
        a = by_key.get((r["index"], r["number"]))
        hist = _history(d.progress.get(r["index"]), r["number"])
        if a is not None and a.submitted_at and r["started_at"] and r["started_at"] > a.submitted_at:
            lanes_ax.barh(lane, (r["started_at"] - a.submitted_at) / scale, left=x(a.submitted_at), height=0.25,
                          color=WAIT_COLOR, edgecolor="none")
        if r["started_at"] is None:
            lanes_ax.text(x(a.submitted_at or t0) if a else 0, lane, "  never started", va="center", fontsize=10)
            continue
        left = r["started_at"]
        order = ["startup", "useful", "stall", "lost" if r["lost_s"] else "other"]
        for bucket in order:
            width = r[f"{bucket}_s"]
            if width > 0:
                lanes_ax.barh(lane, width / scale, left=x(left), height=0.6, color=BUCKET_COLORS[bucket],
                              edgecolor="white", linewidth=0.5)
                left += width
        end = r["ended_at"]
        for t, _step in _marks(hist):
            lanes_ax.plot([x(t)] * 2, [lane - 0.34, lane + 0.34], color="black", linewidth=1)
        if isinstance(hist.get("notice_at"), (int, float)):
            lanes_ax.plot(x(hist["notice_at"]), lane + 0.45, marker="v", color="#e07b00", markersize=11,
                          markeredgecolor="black")
            lanes_ax.text(x(hist["notice_at"]), lane + 0.45, f"notice ({hist.get('notice_source') or '?'})  ",
                          ha="right", va="center", fontsize=9, parse_math=False)
        if end is not None:
            if r["state"] in END_MARKERS:
                marker, color, size = END_MARKERS[r["state"]]
                lanes_ax.plot(x(end), lane, marker=marker, color=color, markersize=size, markeredgecolor="black",
                              zorder=5)
    labels = [f"{'index ' + str(r['index']) + ', ' if array else ''}attempt {r['number']}\n{r['state']}" for r in rows]
    lanes_ax.set_yticks(range(len(rows)), labels, fontsize=10)
    lanes_ax.set_ylim(len(rows) - 0.4, -0.75)
    lanes_ax.set_ylabel("attempts", fontsize=11)
    lanes_ax.grid(axis="x", alpha=0.3)
    if d.hidden:
        lanes_ax.text(1.0, -0.01, f"{d.hidden} more attempts{_past(d)} not drawn (in the totals)",
                      transform=lanes_ax.transAxes, ha="right", va="top", fontsize=9, style="italic")

    total_steps = None
    for lane, r in enumerate(rows):
        prog = d.progress.get(r["index"]) or {}
        total_steps = total_steps or prog.get("total_steps")
        hist = _history(prog, r["number"])
        if not hist:
            continue
        pts = []
        start = next((hist.get(k) for k in ("first_step_at", "loaded_at") if isinstance(hist.get(k), (int, float))),
                     r["started_at"])
        if start is not None:
            pts.append((x(start), hist.get("resumed_from") or 0))
        pts += [(x(t), s) for t, s in _marks(hist)]
        if pts:
            color = f"C{d.indexes.index(r['index']) if array else lane}"
            first = not any(q["index"] == r["index"] for q in rows[:lane])
            label = (f"index {r['index']}" if first else None) if array else f"attempt {r['number']}"
            prog_ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="|", markersize=9, color=color,
                         drawstyle="steps-post", linewidth=2, label=label)
    if total_steps:
        prog_ax.axhline(total_steps, linestyle="--", color="black", linewidth=1)
        prog_ax.text(0.995, total_steps, f"total {total_steps} steps", va="bottom", ha="right", fontsize=10,
                     transform=prog_ax.get_yaxis_transform())
        prog_ax.set_ylim(0, total_steps * 1.12)
    prog_ax.set_ylabel("training step (checkpointed)", fontsize=11)
    prog_ax.set_xlabel(f"time since submission ({unit})", fontsize=11)
    prog_ax.grid(alpha=0.3)
    starts = [x(r["started_at"]) for r in rows if r["started_at"] is not None]
    prog_ax.set_xlim(left=min([0.0] + starts))  # below 0: the backend's clock is behind the ledger's
    if not prog_ax.lines:
        prog_ax.text(0.5, 0.5, "no progress.json from the task yet", transform=prog_ax.transAxes, ha="center",
                     fontsize=10, style="italic")
    if not total_steps:
        prog_ax.set_ylim(bottom=0)
    if prog_ax.lines:
        prog_ax.legend(loc="lower right", fontsize=9, ncols=min(6, len(rows)), title="progress of", title_fontsize=9)
    for ax in (lanes_ax, prog_ax):
        ax.tick_params(labelsize=10)

    handles = [Patch(color=BUCKET_COLORS[b], label=BUCKET_LABELS[b]) for b in BUCKET_COLORS]
    handles += [Patch(color=WAIT_COLOR, label="waiting for a machine"),
                Line2D([], [], color="black", marker="|", linestyle="none", markersize=12, label="checkpoint"),
                Line2D([], [], color="#e07b00", marker="v", linestyle="none", markersize=10, markeredgecolor="black",
                       label="preemption notice"),
                *(Line2D([], [], color=color, marker=marker, linestyle="none", markersize=size - 2,
                         markeredgecolor="black", label=state.lower())
                  for state, (marker, color, size) in END_MARKERS.items()
                  if state in ("PREEMPTED", "SUCCEEDED") or any(r["state"] == state for r in rows))]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=9.5, frameon=False)
    goodput = f"goodput {_pct(cost['goodput'])}" + (f" (over {d.job.array_size} indexes)" if array else "")
    fig.suptitle(f"{d.job.id}: {d.job.state.value}, {d.summary['attempts']} attempts, "
                 f"{d.summary['preemptions']} preemptions, v {_num(cost['value_ratio'], '.2f')}, {goodput}",
                 fontsize=13, parse_math=False)
    return _png(fig)


def _summary_png(rows: list[dict[str, Any]]) -> bytes:
    from matplotlib.figure import Figure

    priced = [r for r in rows if r["cost"]["spend"] is not None]
    currency = max({r["cost"]["currency"] for r in priced}, key=lambda c: sum(r["cost"]["currency"] == c for r in priced),
                   default=None)
    shown = [r for r in priced if r["cost"]["currency"] == currency][-MAX_PLOTTED_JOBS:]
    fig = Figure(figsize=(11, 2.2 + 0.42 * max(1, len(shown))), dpi=100, layout="constrained")
    ax = fig.subplots()
    for i, r in enumerate(shown):
        c = r["cost"]
        ax.barh(i - 0.2, c["spend"], height=0.38, color="#2a9d55", label="spend (spot)" if i == 0 else None)
        ax.barh(i + 0.2, c["on_demand_cost"], height=0.38, color="#9aa5b1",
                label="the useful work on demand" if i == 0 else None)
        ax.text(max(c["spend"], c["on_demand_cost"]), i, f"  v {_num(c['value_ratio'], '.2f')}", va="center",
                fontsize=10)
    ax.set_yticks(range(len(shown)), [f"{r['job_id']}\n{r['state']}" for r in shown], fontsize=10)
    ax.invert_yaxis()
    ax.set_xlabel(f"cost ({currency or 'no prices'})", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    ax.margins(x=0.15)
    if shown:
        ax.legend(loc="lower right", fontsize=10)
    else:
        ax.text(0.5, 0.5, "no job has a price (see docs/prices.md)", transform=ax.transAxes, ha="center")
    t = totals(priced, currency)
    note = f"; {len(rows) - len(shown)} jobs not drawn" if len(rows) > len(shown) else ""
    fig.suptitle(f"{len(rows)} jobs: spend {format_money(t['spend'], currency)}, savings {format_money(t['savings'], currency)}, "
                 f"overall v {_num(t['v'], '.2f')}{note}", fontsize=13, parse_math=False)
    return _png(fig)


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
        hist = _history(prog, r["number"])
        label = f"{'index ' + str(r['index']) + ', ' if d.job.array_size > 1 else ''}attempt {r['number']}"
        segments, left = [], r["started_at"]
        for bucket in ("startup", "useful", "stall", "lost" if r["lost_s"] else "other"):
            if left is not None and r[f"{bucket}_s"] > 0:
                segments.append([bucket, rel(left), rel(left + r[f"{bucket}_s"])])
                left += r[f"{bucket}_s"]
        marks = [[rel(t), step] for t, step in _marks(hist)]
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


# ------------------------------------------------------------------------------------ HTML

_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.2em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f5f7}td.t,th.t{text-align:left}tr.total td{font-weight:bold;background:#f8f8f8}
img{max-width:100%;border:1px solid #ddd}.note{color:#555;font-style:italic}"""


def job_html(d: JobData, png: bytes) -> str:
    """Return one job's self-contained page: facts, the timeline PNG, the cost table."""
    job, s, cost = d.job, d.summary, d.summary["cost"]
    cur, price = cost["currency"], cost["price"] or {}
    facts = [("job", job.id), ("spec name", job.name), ("spec file", job.spec_path or "-"), ("backend", job.backend),
             ("machine", price.get("machine") or "-"), ("created", _when(job.created_at)),
             ("state", job.state.value), ("message", job.message or "-"), ("wall time", _dur(s["wall_s"])),
             ("attempts", s["attempts"]), ("preemptions", s["preemptions"]), ("failures", s["failures"]),
             ("progress", f"step {s['step']} of {s['total_steps']}" if s["step"] is not None else "-")]
    units = cost.get("service_units")
    if units:  # a cluster bills in core- or GPU-hours
        facts.append(("service units", f"{units.get('used', 0):.4g} {units.get('unit')} used "
                                       f"({units.get('per_hour')} per hour)"))
    head = ["attempt", "index", "capacity", "state", "waited (s)", "started (s)", "ended (s)", "machine (s)",
            "useful (s)", "startup (s)", "stall (s)", "lost (s)", "other (s)", f"spend ({cur or '-'})",
            f"on demand ({cur or '-'})", "notice", "reason"]
    by_key = {(a.array_index, a.number): a for a in d.attempts}
    rows = []
    waited_total = 0.0
    for r in sorted(cost["attempts"], key=lambda r: (r["index"], r["number"])):
        h = _history(d.progress.get(r["index"]), r["number"])
        a = by_key.get((r["index"], r["number"]))
        notice = (f"{_since(h['notice_at'], job.created_at)} s ({h.get('notice_source') or '?'})"
                  if isinstance(h.get("notice_at"), (int, float)) else "-")
        waited = (r["started_at"] - a.submitted_at) if a and a.submitted_at and r["started_at"] else None
        waited_total += max(0.0, waited or 0.0)
        rows.append([f"attempt {r['number']}", r["index"], a.capacity if a else "-", r["state"],
                     "-" if waited is None else f"{max(0.0, waited):.1f}", _since(r["started_at"], job.created_at),
                     _since(r["ended_at"], job.created_at)] + [f"{r[k]:.1f}" for k in _SECONDS]
                    + [format_money(r["spend"], cur), format_money(r["on_demand_cost"], cur), notice, r["reason"] or "-"])
    total = ["total", "", "", job.state.value, f"{waited_total:.1f}", "", ""] + [f"{cost[k]:.1f}" for k in _SECONDS] + [
        format_money(cost["spend"], cur), format_money(cost["on_demand_cost"], cur), "", ""]
    money = [("spend (spot)", format_money(cost["spend"], cur)), ("on demand (the useful work)", format_money(cost["on_demand_cost"], cur)),
             ("savings", format_money(cost["savings"], cur)), ("value ratio v", _num(cost["value_ratio"], ".3f")),
             ("goodput", _pct(cost["goodput"])), ("wasted machine time (s)", f"{cost['wasted_s']:.1f}")]
    price_line = (f"Prices: {price.get('machine')}, spot {price.get('spot_per_hour')}/h, on demand "
                  f"{price.get('on_demand_per_hour')}/h {price.get('currency')}; source {price.get('source')}, "
                  f"{price.get('date')}." if price else "No price: spend and v are unknown (see docs/prices.md).")
    notes = "".join(f"<p class=note>note: {_e(n)}</p>" for n in cost["notes"])
    if d.hidden:
        notes += f"<p class=note>{d.hidden} attempts{_past(d)} are in the table, not the timeline.</p>"
    return _page(f"{job.id}: report", (
        f"<h1>{_e(job.id)} <small>{_e(job.state.value)}</small></h1>{_kv(facts)}"
        f"<img alt=\"timeline of {_e(job.id)}\" src=\"data:image/png;base64,{base64.b64encode(png).decode()}\">"
        f"<h2>Cost</h2>{_kv(money)}<p>{_e(price_line)}</p>"
        f"<h2>Attempts</h2>{_table(head, rows, total, text=(0, 1, 2, 3))}"
        f"<p class=note>Times in seconds since submission ({_e(_when(job.created_at))}); every second of machine "
        f"time is in one of useful, startup, stall, lost and other; waiting for a machine (submitted to started) "
        f"is apart: no machine is billed for it.</p>{notes}"))


def summary_html(rows: list[dict[str, Any]], png: bytes) -> str:
    """Return the all-jobs page: the plot, one row per job, the totals per currency."""
    head = ["job", "name", "state", "backend", "attempts", "preemptions", "machine (s)", "spend", "on demand",
            "savings", "v", "goodput"]
    body = [[r["job_id"], r["name"], r["state"], r["backend"], r["attempts"], r["preemptions"],
             f"{r['cost']['machine_s']:.1f}", format_money(r["cost"]["spend"], r["cost"]["currency"]),
             format_money(r["cost"]["on_demand_cost"], r["cost"]["currency"]),
             format_money(r["cost"]["savings"], r["cost"]["currency"]), _num(r["cost"]["value_ratio"], ".3f"),
             _pct(r["cost"]["goodput"])] for r in rows]
    priced = [r for r in rows if r["cost"]["spend"] is not None]
    total_rows = []
    for cur in sorted({r["cost"]["currency"] for r in priced}):
        t = totals(priced, cur)
        total_rows.append([f"total ({cur}, {t['jobs']} jobs)", "", "", "", t["attempts"], t["preemptions"],
                       f"{t['machine_s']:.1f}", format_money(t["spend"], cur), format_money(t["on_demand"], cur),
                       format_money(t["savings"], cur), _num(t["v"], ".3f"), ""])
    unpriced = len(rows) - len(priced)
    note = f"<p class=note>{unpriced} jobs have no price and are left out of the totals.</p>" if unpriced else ""
    return _page("spot-runner: all jobs", (
        f"<h1>All jobs <small>{len(rows)}</small></h1>"
        f"<img alt=\"spend and on-demand cost per job\" src=\"data:image/png;base64,{base64.b64encode(png).decode()}\">"
        f"<h2>Jobs</h2>{_table(head, body, *total_rows)}{note}"
        "<p class=note>v = on-demand cost of the useful work / spend; overall v = total on-demand cost / total "
        f"spend. Written {_e(_when(None))}.</p>"))


# ------------------------------------------------------------------------------------ helpers

_SECONDS = ("machine_s", "useful_s", "startup_s", "stall_s", "lost_s", "other_s")


def _need_matplotlib() -> None:
    try:
        import matplotlib
    except ImportError:
        raise RunnerError("runner report needs matplotlib: pip install 'spot-runner[report]' "
                          "(or pip install matplotlib)") from None
    matplotlib.use("Agg")


def _make_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".runner-report-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunnerError(f"cannot write reports to {out_dir}: {exc.strerror or exc}; pick a folder with --out") from None


def _write(path: Path, data: bytes) -> Path:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise RunnerError(f"cannot write {path}: {exc.strerror or exc}; pick a folder with --out") from None
    return path


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _past(d: JobData) -> str:
    return f" (array indexes past {d.indexes[-1]})" if len(d.indexes) < len({a.array_index for a in d.attempts}) \
        and len(d.lanes) == sum(a.array_index in d.indexes for a in d.attempts) else ""


def _marks(hist: dict[str, Any]) -> list[tuple[float, int]]:
    """An attempt's checkpoints as (time, step): the log, plus the last commit when the log lacks it
    (the checkpoint after a notice is committed at once, without a log entry)."""
    marks = [(float(t), int(s)) for t, s in hist.get("checkpoint_log") or []
             if isinstance(t, (int, float)) and isinstance(s, int)]
    at, step = hist.get("checkpoint_at"), hist.get("checkpoint_step")
    if isinstance(at, (int, float)) and isinstance(step, int) and (not marks or step > marks[-1][1]):
        marks.append((float(at), step))
    return marks


def _history(progress: dict[str, Any] | None, number: int) -> dict[str, Any]:
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




def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _dur(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def _since(t: float | None, t0: float) -> str:
    return "-" if t is None else f"{t - t0:.1f}"


def _when(t: float | None) -> str:
    when = dt.datetime.now(dt.timezone.utc) if t is None else dt.datetime.fromtimestamp(t, dt.timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _kv(pairs: Sequence[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th class=t>{_e(k)}</th><td class=t>{_e(v)}</td></tr>" for k, v in pairs) + "</table>"


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], *totals: Sequence[Any],
           text: Sequence[int] = (0, 1, 2)) -> str:
    cls = (lambda i: " class=t" if i in text or i == len(head) - 1 else "")
    out = ["<table><tr>" + "".join(f"<th{cls(i)}>{_e(h)}</th>" for i, h in enumerate(head)) + "</tr>"]
    out += ["<tr>" + "".join(f"<td{cls(i)}>{_e(v)}</td>" for i, v in enumerate(r)) + "</tr>" for r in rows]
    out += ["<tr class=total>" + "".join(f"<td{cls(i)}>{_e(v)}</td>" for i, v in enumerate(t)) + "</tr>" for t in totals]
    return "".join(out) + "</table>"


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{body}</body></html>\n")

