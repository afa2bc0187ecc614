"""``runner report``: a PNG and a self-contained HTML page per job, or a summary of all jobs.

Per job: a timeline since submission (one lane per attempt, its machine time colored by the cost
buckets of :mod:`runner.cost.accounting`, preemptions, notices and checkpoints marked), the
training progress below it, and the cost table. Without a job: every job's spend against what the
same work would cost on demand, and the totals. The HTML embeds the PNG as base64 and opens from
a file. Only the ledger's job and attempt fields, the task's ``progress.json`` timings and the
accounting go in: never ``env`` or other spec values. matplotlib is imported by
:mod:`runner.report.plots` only, when a report is written, so the other commands stay fast; it is
the ``report`` extra (``pip install 'spot-runner[report]'``).

The data (:mod:`runner.report.data`, shared with ``runner ui``), the PNGs
(:mod:`runner.report.plots`) and the pages (:mod:`runner.report.pages`) are apart; this module
writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from runner.errors import RunnerError
from runner.ledger import Ledger
from runner.report.data import JobData, job_data, load_job, timeline, totals
from runner.report.pages import job_html, summary_html


def write_reports(job_ids: Sequence[str], out_dir: Path, ledger: Ledger) -> list[Path]:
    """Write ``<job>.png`` and ``<job>.html`` per job, or ``summary.*`` for all jobs; return the paths."""
    from runner.report.plots import job_png, need_matplotlib, summary_png

    need_matplotlib()
    datas = [load_job(ledger, j) for j in job_ids]
    if not job_ids:
        jobs = ledger.list_jobs()
        if not jobs:
            raise RunnerError(f"no jobs in {ledger.path} yet; submit one with `runner submit`")
    _make_dir(out_dir)
    written: list[Path] = []
    if job_ids:
        for d in datas:
            png = job_png(d)
            written += [_write(out_dir / f"{d.job.id}.png", png),
                        _write(out_dir / f"{d.job.id}.html", job_html(d, png).encode())]
        return written
    from runner.summary import read_progress, summarize

    rows = []
    for job in jobs:
        attempts = ledger.attempts(job.id)
        rows.append({**summarize(job, attempts, read_progress(job)), "name": job.name, "backend": job.backend,
                     "created_at": job.created_at})
    png = summary_png(rows)
    return [_write(out_dir / "summary.png", png), _write(out_dir / "summary.html", summary_html(rows, png).encode())]


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


__all__ = ["JobData", "job_data", "job_html", "load_job", "summary_html", "timeline", "totals", "write_reports"]
