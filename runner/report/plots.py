"""The report's PNGs, drawn with matplotlib (imported here only: the ``report`` extra)."""

from __future__ import annotations

import io
from typing import Any

from runner.cost.accounting import format_money
from runner.errors import RunnerError
from runner.report.data import (
    BUCKET_COLORS,
    BUCKET_LABELS,
    END_MARKERS,
    MAX_PLOTTED_JOBS,
    WAIT_COLOR,
    JobData,
    attempt_history,
    checkpoint_marks,
    num,
    past_note,
    pct,
    totals,
)


def need_matplotlib() -> None:
    try:
        import matplotlib
    except ImportError:
        raise RunnerError("runner report needs matplotlib: pip install 'spot-runner[report]' "
                          "(or pip install matplotlib)") from None
    matplotlib.use("Agg")


def job_png(d: JobData) -> bytes:
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
        hist = attempt_history(d.progress.get(r["index"]), r["number"])
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
        for t, _step in checkpoint_marks(hist):
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
        lanes_ax.text(1.0, -0.01, f"{d.hidden} more attempts{past_note(d)} not drawn (in the totals)",
                      transform=lanes_ax.transAxes, ha="right", va="top", fontsize=9, style="italic")

    total_steps = None
    for lane, r in enumerate(rows):
        prog = d.progress.get(r["index"]) or {}
        total_steps = total_steps or prog.get("total_steps")
        hist = attempt_history(prog, r["number"])
        if not hist:
            continue
        pts = []
        start = next((hist.get(k) for k in ("first_step_at", "loaded_at") if isinstance(hist.get(k), (int, float))),
                     r["started_at"])
        if start is not None:
            pts.append((x(start), hist.get("resumed_from") or 0))
        pts += [(x(t), s) for t, s in checkpoint_marks(hist)]
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
    goodput = f"goodput {pct(cost['goodput'])}" + (f" (over {d.job.array_size} indexes)" if array else "")
    fig.suptitle(f"{d.job.id}: {d.job.state.value}, {d.summary['attempts']} attempts, "
                 f"{d.summary['preemptions']} preemptions, v {num(cost['value_ratio'], '.2f')}, {goodput}",
                 fontsize=13, parse_math=False)
    return _png(fig)


def summary_png(rows: list[dict[str, Any]]) -> bytes:
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
        ax.text(max(c["spend"], c["on_demand_cost"]), i, f"  v {num(c['value_ratio'], '.2f')}", va="center",
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
                 f"overall v {num(t['v'], '.2f')}{note}", fontsize=13, parse_math=False)
    return _png(fig)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
