"""The report's self-contained HTML pages (the PNG embedded as base64)."""

from __future__ import annotations

import base64
import datetime as dt
import html
from collections.abc import Sequence
from typing import Any

from runner.cost.accounting import format_money
from runner.report.data import (
    JobData,
    attempt_history,
    dur,
    num,
    past_note,
    pct,
    totals,
)

_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.2em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f5f7}td.t,th.t{text-align:left}tr.total td{font-weight:bold;background:#f8f8f8}
img{max-width:100%;border:1px solid #ddd}.note{color:#555;font-style:italic}"""


_SECONDS = ("machine_s", "useful_s", "startup_s", "stall_s", "lost_s", "other_s")


def job_html(d: JobData, png: bytes) -> str:
    """Return one job's self-contained page: facts, the timeline PNG, the cost table."""
    job, s, cost = d.job, d.summary, d.summary["cost"]
    cur, price = cost["currency"], cost["price"] or {}
    facts = [("job", job.id), ("spec name", job.name), ("spec file", job.spec_path or "-"), ("backend", job.backend),
             ("machine", price.get("machine") or "-"), ("created", _when(job.created_at)),
             ("state", job.state.value), ("message", job.message or "-"), ("wall time", dur(s["wall_s"])),
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
        h = attempt_history(d.progress.get(r["index"]), r["number"])
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
             ("savings", format_money(cost["savings"], cur)), ("value ratio v", num(cost["value_ratio"], ".3f")),
             ("goodput", pct(cost["goodput"])), ("wasted machine time (s)", f"{cost['wasted_s']:.1f}")]
    price_line = (f"Prices: {price.get('machine')}, spot {price.get('spot_per_hour')}/h, on demand "
                  f"{price.get('on_demand_per_hour')}/h {price.get('currency')}; source {price.get('source')}, "
                  f"{price.get('date')}." if price else "No price: spend and v are unknown (see docs/prices.md).")
    notes = "".join(f"<p class=note>note: {_e(n)}</p>" for n in cost["notes"])
    if d.hidden:
        notes += f"<p class=note>{d.hidden} attempts{past_note(d)} are in the table, not the timeline.</p>"
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
             format_money(r["cost"]["savings"], r["cost"]["currency"]), num(r["cost"]["value_ratio"], ".3f"),
             pct(r["cost"]["goodput"])] for r in rows]
    priced = [r for r in rows if r["cost"]["spend"] is not None]
    total_rows = []
    for cur in sorted({r["cost"]["currency"] for r in priced}):
        t = totals(priced, cur)
        total_rows.append([f"total ({cur}, {t['jobs']} jobs)", "", "", "", t["attempts"], t["preemptions"],
                       f"{t['machine_s']:.1f}", format_money(t["spend"], cur), format_money(t["on_demand"], cur),
                       format_money(t["savings"], cur), num(t["v"], ".3f"), ""])
    unpriced = len(rows) - len(priced)
    note = f"<p class=note>{unpriced} jobs have no price and are left out of the totals.</p>" if unpriced else ""
    return _page("spot-runner: all jobs", (
        f"<h1>All jobs <small>{len(rows)}</small></h1>"
        f"<img alt=\"spend and on-demand cost per job\" src=\"data:image/png;base64,{base64.b64encode(png).decode()}\">"
        f"<h2>Jobs</h2>{_table(head, body, *total_rows)}{note}"
        "<p class=note>v = on-demand cost of the useful work / spend; overall v = total on-demand cost / total "
        f"spend. Written {_e(_when(None))}.</p>"))


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
