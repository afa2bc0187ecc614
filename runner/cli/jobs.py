"""``runner submit | status | logs | halt | resume | cancel``: one job's life, in the foreground.

Each command is a thin layer over :mod:`runner.service`; the foreground run loop is
:func:`watch_jobs` (``submit`` and ``resume`` wait in it, as ``runner watch`` does).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from runner.cli.app import _fail, _fmt_s, _ledger, app, out
from runner.cost.accounting import format_money
from runner.errors import RunnerError
from runner.ledger import Job, Ledger
from runner.states import JobState


@app.command()
def submit(
    spec_file: Annotated[Path, typer.Argument(help="the job spec (YAML), e.g. jobs/cifar-smoke.yaml")],
    backend: Annotated[Optional[str], typer.Option(help="run on this backend instead of the spec's")] = None,
    settings: Annotated[Optional[list[str]], typer.Option(
        "--set", help="override a spec setting: --set resources.cpus=4 --set data.cifar10=~/datasets/cifar10")] = None,
    args: Annotated[Optional[str], typer.Option(
        "--args", help="set flags of the spec's args: --args='--epochs 2 --train-size 1000' (replaced where present)")] = None,
    simulate_preemption: Annotated[Optional[str], typer.Option(
        "--simulate-preemption", help="local only: every=20s,notice=5s,mode=mixed[,count=3,seed=1]")] = None,
    detach: Annotated[bool, typer.Option(help="return at once; a background watcher runs the job")] = False,
    interval: Annotated[float, typer.Option(help="seconds between polls")] = 2.0,
) -> None:
    """Submit a job and, unless --detach, keep it alive until it ends; exit 0 only on success."""
    from runner import service

    try:
        with _ledger() as ledger:
            job_id, spec = service.submit(ledger, spec_file, backend=backend, settings=settings or [],
                                          simulate_preemption=simulate_preemption, args=args)
        out.print(f"submitted {job_id} ({spec.backend}, checkpoints at {spec.checkpoint_uri_for(0, job_id)})",
                  markup=False)
        if detach:
            log_path = service.spawn_watcher(job_id, interval)
            out.print(f"watching in the background (log: {log_path}); follow with `runner status {job_id}`",
                      markup=False)
            return
        code = watch_jobs([job_id], interval)
    except RunnerError as exc:
        raise _fail(exc) from None
    raise typer.Exit(code)


#: `runner submit`/`resume` in the foreground exit with this when the job was halted meanwhile.
EXIT_PAUSED = 3


def _show(event: Any) -> None:
    out.print(f"{time.strftime('%H:%M:%S')} {event.job_id}: {event.text}", markup=False)


def watch_jobs(job_ids: list[str] | None, interval: float, once: bool = False, *, service: bool = False,
                health_port: int | None = None, status_file: Path | None = None,
                lease_ttl: float | None = None, timeout: float | None = None) -> int:
    """Run the watcher in the foreground, printing events and progress; return the exit code.

    Foreground (``submit``, ``resume``): 0 when every job SUCCEEDED, 3 when one was PAUSED, 1
    otherwise. ``runner watch`` (``service``): 0 when stopped by a signal, after ``--once``, or when
    its named jobs have ended.
    """
    from runner import service as svc
    from runner.summary import read_progress
    from runner.watcher import Event

    last_progress: dict[str, tuple[Any, ...]] = {}

    def progress(watcher: Any) -> None:
        for job in watcher.active_jobs():
            found = read_progress(job) or {}
            key = (found.get("step"), found.get("attempt"), found.get("state"))
            if found and key != last_progress.get(job.id):
                last_progress[job.id] = key
                _show(Event(job.id, _progress_line(job, found)))

    options = svc.WatchOptions(interval=interval, once=once, service=service, health_port=health_port,
                               status_file=status_file, lease_ttl=lease_ttl, timeout=timeout)
    with _ledger() as ledger:
        def ready(health_url: str | None) -> None:
            if service:  # the health URL once bound: --health-port 0 picks a free port
                out.print(f"watcher on {ledger.path}: "
                          f"{'jobs ' + ', '.join(job_ids) if job_ids else 'every unfinished job'}"
                          + (f", health {health_url}" if health_url else "")
                          + (f", status {status_file}" if status_file else ""), markup=False)
        try:
            why = svc.watch(ledger, job_ids, options, on_event=_show, after_pass=progress, on_ready=ready)
        except KeyboardInterrupt:
            out.print("watcher stopped; the job goes on. Resume watching with `runner watch`")
            return 130
        if why == "signal":
            if service:
                out.print("watcher stopped; its leases are released", markup=False)
            return 0
        if service or job_ids is None:
            return 0
        code = 0
        for job_id in job_ids:
            job = ledger.get_job(job_id)
            if job.state.is_terminal() or job.state == JobState.PAUSED:
                _print_summary(ledger, job)
            if why == "timeout" and job.state.is_active():
                out.print(f"{job_id} is still {job.state.value}; a watcher goes on with it", markup=False)
            if job.state != JobState.SUCCEEDED:
                code = max(code, EXIT_PAUSED if job.state == JobState.PAUSED else 1)
        return code


def _progress_line(job: Job, progress: dict[str, Any]) -> str:
    if progress.get("task") == "exec":  # runner exec: folder syncs, not epochs
        return (f"progress: folder snapshot {progress.get('step')} committed, attempt {progress.get('attempt')}, "
                f"preemptions {job.preemptions_used}")
    metrics = progress.get("metrics") or {}
    loss = metrics.get("loss")
    total = progress.get("total_epochs") or 0
    epoch = min(int(progress.get("epoch") or 0) + 1, int(total))
    return (f"progress: epoch {epoch}/{total}, step "
            f"{progress.get('step')}/{progress.get('total_steps')}, attempt {progress.get('attempt')}, "
            f"preemptions {job.preemptions_used}" + (f", loss {loss:.4f}" if isinstance(loss, float) else ""))


def _print_summary(ledger: Ledger, job: Job) -> None:
    from runner.summary import read_progress, summarize

    s = summarize(job, ledger.attempts(job.id), read_progress(job))
    result = job.result or {}
    out.print(f"{job.id} {job.state.value}: {job.message}", markup=False)
    out.print(f"  wall time {_fmt_s(s['wall_s'])}, attempts {s['attempts']}, preemptions {s['preemptions']}, "
              f"failures {s['failures']}", markup=False)
    out.print(f"  work lost to interruptions {_fmt_s(s['lost_s'])}, restarts {_fmt_s(s['startup_s'])}, "
              f"goodput {s['goodput'] if s['goodput'] is not None else '-'}", markup=False)
    cost = s["cost"]
    if cost["spend"] is not None:
        out.print(f"  {format_money(cost['spend'], cost['currency'])} spent on {_fmt_s(cost['machine_s'])} of machine time; "
                  f"the useful work on demand {format_money(cost['on_demand_cost'], cost['currency'])}; "
                  f"value ratio v {cost['value_ratio'] if cost['value_ratio'] is not None else '-'} "
                  f"({cost['price']['machine']} spot {cost['price']['spot_per_hour']}/h)", markup=False)
    if result.get("weights_sha256"):
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in (result.get("metrics") or {}).items())
        out.print(f"  final weights sha256 {result['weights_sha256']}" + (f" ({metrics})" if metrics else ""),
                  markup=False)


@app.command()
def status(
    job_id: Annotated[Optional[str], typer.Argument(help="one job; all jobs when omitted")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Show jobs, their attempts and results."""
    from runner.summary import read_progress, summarize

    try:
        with _ledger() as ledger:
            jobs = [ledger.get_job(job_id)] if job_id else ledger.list_jobs()
            rows = []
            for job in jobs:
                attempts = ledger.attempts(job.id)
                progress = read_progress(job)
                rows.append({**summarize(job, attempts, progress), "name": job.name, "backend": job.backend,
                             "message": job.message, "result": job.result,
                             "weights_sha256": (job.result or {}).get("weights_sha256"),
                             "attempt_list": [_attempt_dict(a) for a in attempts]})
    except RunnerError as exc:
        raise _fail(exc) from None
    if as_json:
        out.print_json(json.dumps(rows[0] if job_id else rows))
        return
    table = Table(box=None)
    for col in ("job", "state", "backend", "attempts", "preemptions", "step", "wall", "goodput", "spend", "v"):
        table.add_column(col, no_wrap=True)
    table.add_column("message")
    for r in rows:
        step = f"{r['step']}/{r['total_steps']}" if r["step"] is not None else "-"
        cost = r["cost"]
        table.add_row(r["job_id"], r["state"], r["backend"], str(r["attempts"]), str(r["preemptions"]), step,
                      _fmt_s(r["wall_s"]), str(r["goodput"] or "-"), _spend(cost),
                      "-" if cost["value_ratio"] is None else f"{cost['value_ratio']:.2f}", r["message"])
    out.print(table)
    if job_id:
        cost = rows[0]["cost"]
        by_number = {(a["number"], a["index"]): a for a in cost["attempts"]}
        for a in rows[0]["attempt_list"]:
            c = by_number.get((a["number"], a["index"]), {})
            waited = f", waited {_fmt_s(a['waited_s'])} for a machine" if a["waited_s"] else ""
            out.print(f"  attempt {a['number']} ({a['capacity']}{waited}): {a['state']} exit {a['exit_code']} "
                      f"{a['reason']}"
                      + (f" - machine {_fmt_s(c['machine_s'])}, useful {_fmt_s(c['useful_s'])}, "
                         f"lost {_fmt_s(c['lost_s'])}, startup {_fmt_s(c['startup_s'])}, "
                         f"spend {format_money(c['spend'], cost['currency'])}" if c else ""), markup=False)
        if cost["spend"] is not None:
            out.print(f"  spend {format_money(cost['spend'], cost['currency'])}, on demand "
                      f"{format_money(cost['on_demand_cost'], cost['currency'])}, savings "
                      f"{format_money(cost['savings'], cost['currency'])}, v {cost['value_ratio']} "
                      f"(prices: {cost['price']['machine']}, {cost['price']['source']}, {cost['price']['date']})",
                      markup=False)
        units = cost.get("service_units")
        if units:
            out.print(f"  service units: {units['used']:.4g} {units['unit']} used ({units['per_hour']:g} per hour), "
                      f"useful {units['useful']:.4g}, the useful work on demand {units['on_demand']:.4g}", markup=False)
        for note in cost["notes"]:
            out.print(f"  note: {note}", markup=False)


def _spend(cost: dict[str, Any]) -> str:
    """Money spent, or the service units used where a cluster bills in them and gives no price."""
    units = cost.get("service_units")
    if cost["spend"] is None and units:
        return f"{units['used']:.3g} {units['unit']}"
    return format_money(cost["spend"], cost["currency"])


def _attempt_dict(a: Any) -> dict[str, Any]:
    waited = (a.started_at - a.submitted_at) if a.started_at and a.submitted_at else None
    return {"number": a.number, "index": a.array_index, "backend": a.backend, "backend_id": a.backend_id,
            "capacity": a.capacity, "state": a.state.value, "exit_code": a.exit_code, "reason": a.reason,
            "submitted_at": a.submitted_at, "started_at": a.started_at, "ended_at": a.ended_at,
            "waited_s": None if waited is None else round(max(0.0, waited), 3), "stop_requested": a.stop_requested}


@app.command()
def logs(
    job_id: Annotated[str, typer.Argument(help="the job")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines")] = False,
    attempt: Annotated[Optional[int], typer.Option(help="attempt number (default: the newest)")] = None,
) -> None:
    """Print the log of a job's attempt."""
    from runner.backends import get_backend

    try:
        with _ledger() as ledger:
            ledger.get_job(job_id)  # an unknown job says so, not "no submitted attempt"
            attempts = [a for a in ledger.attempts(job_id) if a.backend_id]
        if attempt is not None:
            attempts = [a for a in attempts if a.number == attempt]
        if not attempts:
            raise RunnerError(f"job {job_id} has no submitted attempt{'' if attempt is None else f' {attempt}'} yet")
        chosen = attempts[-1]
        for line in get_backend(chosen.backend).logs(chosen.backend_id or "", follow=follow):
            sys.stdout.write(line if line.endswith("\n") else line + "\n")
    except RunnerError as exc:
        raise _fail(exc) from None


@app.command()
def cancel(
    job_id: Annotated[str, typer.Argument(help="the job")],
    wait: Annotated[float, typer.Option(help="seconds to wait for the backend to confirm every attempt stopped")] = 120,
) -> None:
    """Cancel a job: stop its attempts (confirmed by the backend), then it is CANCELLED, never resubmitted."""
    from runner import service

    try:
        with _ledger() as ledger:
            outcome = service.cancel(ledger, job_id)
        out.print(outcome.message, markup=False)
        if outcome.job.state == JobState.CANCELLING:  # not confirmed yet: wait (--wait), else exit non-zero
            if wait > 0:
                watch_jobs([job_id], 2.0, timeout=wait)
            with _ledger() as ledger:
                state = ledger.get_job(job_id).state
            if state != JobState.CANCELLED:
                raise RunnerError(f"{job_id} is still {state.value}: not every attempt is confirmed stopped; "
                                  "watchers keep trying, and `runner cancel` again retries now")
            out.print(f"cancelled {job_id}", markup=False)
    except RunnerError as exc:
        raise _fail(exc) from None


@app.command()
def halt(
    job_id: Annotated[str, typer.Argument(help="the job")],
    wait: Annotated[bool, typer.Option(help="wait until the attempt has committed and stopped (PAUSED)")] = True,
) -> None:
    """Pause a job: its running attempt commits a checkpoint and stops, as after a preemption notice."""
    from runner import service

    try:
        with _ledger() as ledger:
            outcome = service.halt(ledger, job_id)
        out.print(outcome.message, markup=False)
        if wait and outcome.job.state == JobState.PAUSING:
            watch_jobs([job_id], 2.0)
            with _ledger() as ledger:
                job = ledger.get_job(job_id)
            if job.state != JobState.PAUSED:
                out.print(f"{job_id} is {job.state.value}: {job.message}", markup=False)
    except RunnerError as exc:
        raise _fail(exc) from None


@app.command()
def resume(
    job_id: Annotated[str, typer.Argument(help="a PAUSED job")],
    detach: Annotated[bool, typer.Option(help="return at once; a background watcher runs the job")] = False,
    interval: Annotated[float, typer.Option(help="seconds between polls")] = 2.0,
    budget: Annotated[Optional[float], typer.Option(
        help="the job's new budget (in its price currency): for a job its budget paused")] = None,
) -> None:
    """Resume a PAUSED job from its newest checkpoint and, unless --detach, keep it alive until it ends."""
    from runner import service

    try:
        with _ledger() as ledger:
            outcome = service.resume(ledger, job_id, budget=budget)
        out.print(outcome.message, markup=False)
        if not outcome.changed or detach:
            if detach:
                log_path = service.spawn_watcher(job_id, interval)
                out.print(f"watching in the background (log: {log_path})", markup=False)
            return
        code = watch_jobs([job_id], interval)
    except RunnerError as exc:
        raise _fail(exc) from None
    raise typer.Exit(code)
