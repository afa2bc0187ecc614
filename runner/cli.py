"""The ``runner`` command: submit, status, logs, cancel, watch.

Every expected error prints one line with the cause and the fix, and exits with the error's
code (2 for bad specs and arguments); only bugs print a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from runner.cost.accounting import format_money
from runner.errors import RunnerError, SpecError
from runner.ledger import Job, Ledger, data_dir
from runner.states import JobState

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Run training containers on spot capacity; survive preemptions.")
# Piped output (scripts, CI logs) gets wide lines rather than 80 columns with truncated job ids.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(exc: RunnerError) -> typer.Exit:
    err.print(f"error: {_printable(str(exc))}", markup=False, soft_wrap=True)
    return typer.Exit(exc.exit_code)


def _printable(text: str) -> str:
    """Escape control characters (from user input in a message): one line, no terminal escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _ledger() -> Ledger:
    return Ledger()


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


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
        code = _watch_jobs([job_id], interval)
    except RunnerError as exc:
        raise _fail(exc) from None
    raise typer.Exit(code)


#: `runner submit`/`resume` in the foreground exit with this when the job was halted meanwhile.
EXIT_PAUSED = 3


def _show(event: Any) -> None:
    out.print(f"{time.strftime('%H:%M:%S')} {event.job_id}: {event.text}", markup=False)


def _watch_jobs(job_ids: list[str] | None, interval: float, once: bool = False, *, service: bool = False,
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
        if service:
            out.print(f"watcher on {ledger.path}: {'jobs ' + ', '.join(job_ids) if job_ids else 'every unfinished job'}"
                      + (f", health http://127.0.0.1:{health_port}/healthz" if health_port is not None else "")
                      + (f", status {status_file}" if status_file else ""), markup=False)
        try:
            why = svc.watch(ledger, job_ids, options, on_event=_show, after_pass=progress)
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
            out.print(f"  attempt {a['number']}: {a['state']} exit {a['exit_code']} {a['reason']}"
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
    return {"number": a.number, "index": a.array_index, "backend": a.backend, "backend_id": a.backend_id,
            "state": a.state.value, "exit_code": a.exit_code, "reason": a.reason,
            "submitted_at": a.submitted_at, "started_at": a.started_at, "ended_at": a.ended_at}


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
        if outcome.job.state == JobState.CANCELLING and wait > 0:
            _watch_jobs([job_id], 2.0, timeout=wait)
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
            _watch_jobs([job_id], 2.0)
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
) -> None:
    """Resume a PAUSED job from its newest checkpoint and, unless --detach, keep it alive until it ends."""
    from runner import service

    try:
        with _ledger() as ledger:
            outcome = service.resume(ledger, job_id)
        out.print(outcome.message, markup=False)
        if not outcome.changed or detach:
            if detach:
                log_path = service.spawn_watcher(job_id, interval)
                out.print(f"watching in the background (log: {log_path})", markup=False)
            return
        code = _watch_jobs([job_id], interval)
    except RunnerError as exc:
        raise _fail(exc) from None
    raise typer.Exit(code)


@app.command()
def watch(
    job_ids: Annotated[Optional[list[str]], typer.Argument(help="only these jobs (default: all active)")] = None,
    once: Annotated[bool, typer.Option(help="one pass, then exit 0 (for cron)")] = False,
    interval: Annotated[float, typer.Option(help="seconds between polls")] = 2.0,
    health_port: Annotated[Optional[int], typer.Option(
        envvar="RUNNER_WATCH_HEALTH_PORT",
        help="serve GET /healthz on 127.0.0.1:PORT (JSON; 503 when the last pass is stale)")] = None,
    status_file: Annotated[Optional[Path], typer.Option(
        envvar="RUNNER_WATCH_STATUS_FILE", help="write the same health JSON here after every pass")] = None,
    lease_ttl: Annotated[float, typer.Option(
        envvar="RUNNER_LEASE_TTL", min=1.0,
        help="seconds a job's lease lasts unless renewed; a dead watcher's jobs are taken over after it")] = 30.0,
) -> None:
    """Keep jobs alive: poll, resubmit after preemptions. With no job ids it watches every unfinished
    job and keeps running, waiting for new ones, until SIGTERM/SIGINT (leases released, exit 0)."""
    try:
        if lease_ttl < 2 * interval:
            raise SpecError(f"--lease-ttl {lease_ttl:g} is shorter than two passes (--interval {interval:g}): "
                            f"the lease would lapse between passes; use --lease-ttl {max(30.0, 3 * interval):g}")
        code = _watch_jobs(job_ids or None, interval, once=once, service=True, health_port=health_port,
                           status_file=status_file, lease_ttl=lease_ttl)
    except RunnerError as exc:
        raise _fail(exc) from None
    raise typer.Exit(code)


@app.command()
def init(
    cloud: Annotated[str, typer.Argument(help="aws or azure: what to create (gcp needs no setup)")],
    spec_file: Annotated[Path, typer.Option("--spec", help="take the cloud's settings from this job spec")] = Path(
        "jobs/cifar.yaml"),
    settings: Annotated[Optional[list[str]], typer.Option(
        "--set", help="override a spec setting, e.g. --set aws.max_vcpus=64 --set aws.subnets=[subnet-1]")] = None,
) -> None:
    """Create or update, idempotently, the cloud resources spot jobs run on (queue, pool, ...)."""
    from runner.backends import backend_class
    from runner.spec import load_spec, parse_settings

    try:
        spec = load_spec(spec_file, {**parse_settings(settings or [], "--set"), "backend": cloud})
        backend_class(cloud).init(spec, lambda line: out.print(line, markup=False))
    except RunnerError as exc:
        raise _fail(exc) from None


@app.command()
def prices(
    cloud: Annotated[Optional[str], typer.Argument(help="aws, gcp or azure")] = None,
    region: Annotated[Optional[str], typer.Argument(help="e.g. us-east-1")] = None,
    instance_type: Annotated[Optional[str], typer.Argument(help="e.g. g4dn.xlarge")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", help="a price file that overrides the table")] = None,
    live: Annotated[bool, typer.Option(help="ask the cloud's price API for one machine (needs credentials)")] = False,
) -> None:
    """List the price table (shipped, then $RUNNER_PRICES, then --file): on-demand and spot per hour."""
    from runner.cost.prices import live_price, price_table

    try:
        table = price_table(file)
        rows = [table.lookup(cloud, region, instance_type)] if cloud and region and instance_type else \
            table.select(cloud, region)
        if live and cloud and region and instance_type:
            rows = [live_price(cloud, region, instance_type) or rows[0]]
    except RunnerError as exc:
        raise _fail(exc) from None
    if not rows:
        raise _fail(SpecError(f"no prices for {' '.join(filter(None, (cloud, region)))}; "
                              "run runner prices to list the clouds and regions"))
    listing = Table(box=None)
    for col in ("cloud", "region", "instance type", "on-demand/h", "spot/h", "saving", "date", "source"):
        listing.add_column(col, no_wrap=col != "source")
    for p in rows:
        listing.add_row(p.cloud, p.region, p.instance_type, f"{p.on_demand_per_hour:.4g} {p.currency}",
                        f"{p.spot_per_hour:.4g} {p.currency}", f"{1 - p.spot_per_hour / p.on_demand_per_hour:.0%}",
                        p.date, p.source)
    out.print(listing)


@app.command()
def report(
    job_ids: Annotated[Optional[list[str]], typer.Argument(
        help="jobs to report on (default: a summary of every job in the ledger)")] = None,
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out", help="folder for the files (default: $RUNNER_HOME/reports)")] = None,
) -> None:
    """Write <job>.png and <job>.html per job (timeline of attempts, preemptions, notices, checkpoints,
    progress; cost table), or summary.png and summary.html for all jobs. Needs matplotlib (the report extra)."""
    from runner.report import write_reports

    try:
        with _ledger() as ledger:
            paths = write_reports(job_ids or [], out_dir or data_dir() / "reports", ledger)
    except RunnerError as exc:
        raise _fail(exc) from None
    for path in paths:
        out.print(f"wrote {path}", markup=False)


@app.command()
def simulate(
    job_id: Annotated[Optional[str], typer.Argument(help="a job whose measured step time, checkpoint cost and "
                                                         "startup are replayed; omit to give --work etc.")] = None,
    mean: Annotated[Optional[str], typer.Option(help="mean time between preemptions, e.g. 1h (default: this "
                                                     "ledger's estimate for the job's machine)")] = None,
    schedule: Annotated[Optional[Path], typer.Option(help="file of preemption times, seconds since start, one per line")] = None,
    coverage: Annotated[Optional[float], typer.Option(help="share of preemptions with a usable notice, 0..1")] = None,
    intervals: Annotated[Optional[str], typer.Option(help="checkpoint intervals to compare, e.g. 1m,5m,15m,1h")] = None,
    trials: Annotated[int, typer.Option(min=1, max=100_000, help="simulated runs per interval")] = 200,
    work: Annotated[Optional[str], typer.Option(help="compute time of the whole job, e.g. 10h")] = None,
    checkpoint_cost: Annotated[Optional[str], typer.Option(help="time lost per checkpoint, e.g. 20s")] = None,
    startup: Annotated[Optional[str], typer.Option(help="machine start to first step, e.g. 90s")] = None,
    resubmit: Annotated[Optional[str], typer.Option(help="preemption to the next machine's start, e.g. 30s")] = None,
    spec_file: Annotated[Optional[Path], typer.Option("--spec", help="price the run as this spec's machine")] = None,
    seed: Annotated[int, typer.Option(help="seed of the preemption draws")] = 0,
) -> None:
    """Predict completion time, spend and v for several checkpoint intervals, the auto one among them."""
    from runner.cost.simulate_cli import run_simulation

    try:
        with _ledger() as ledger:
            table, lines = run_simulation(ledger, job_id=job_id, mean=mean, schedule=schedule, coverage=coverage,
                                          intervals=intervals, trials=trials, work=work,
                                          checkpoint_cost=checkpoint_cost, startup=startup, resubmit=resubmit,
                                          spec_file=spec_file, seed=seed)
    except RunnerError as exc:
        raise _fail(exc) from None
    for line in lines:
        out.print(line, markup=False)
    out.print(table)


@app.command(name="exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
def exec_command(
    command: Annotated[list[str], typer.Argument(help="the training command, after --")],
    folder: Annotated[Optional[str], typer.Option(
        "--dir", help="checkpoint folder to restore and sync (default: RUNNER_SYNC_DIR from the spec's sync.dir)")] = None,
    notice_signal: Annotated[Optional[str], typer.Option(
        "--signal", help="signal the command gets on a notice (default: RUNNER_NOTICE_SIGNAL or SIGTERM)")] = None,
    interval: Annotated[float, typer.Option(help="seconds between looks at the folder")] = 1.0,
    settle: Annotated[float, typer.Option(help="sync once no file in the folder changed for this long")] = 0.5,
    margin: Annotated[float, typer.Option(help="kill a command still running this long before the deadline")] = 2.0,
) -> None:
    """Run an unmodified training command in a task container: restore, sync, forward notices, exit 75."""
    from runner.exec.wrapper import ExecOptions, run, setup_logging

    setup_logging()
    try:
        opts = ExecOptions.build(command, folder, notice_signal, interval, settle, margin)
    except RunnerError as exc:
        raise _fail(exc) from None
    raise typer.Exit(run(opts))


@app.command()
def ui(
    host: Annotated[str, typer.Option(envvar="RUNNER_UI_HOST", help="address to listen on; any other than "
                                      "127.0.0.1/localhost requires the printed token on every request")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="RUNNER_UI_PORT", min=0, max=65535, help="port (0: any free one)")] = 8770,
    token: Annotated[Optional[str], typer.Option(envvar="RUNNER_UI_TOKEN", help="access token (default: a new "
                                                 "random one when the address is not local)")] = None,
    interval: Annotated[float, typer.Option(min=0.2, help="seconds between live updates of an open page")] = 2.0,
    watch_status: Annotated[Optional[Path], typer.Option(envvar="RUNNER_WATCH_STATUS_FILE", help="the watcher's "
                                                         "--status-file, to show its health")] = None,
) -> None:
    """Serve a live dashboard of the ledger: jobs, attempts, preemptions, spend and v; cancel, halt, resume.
    Needs the ui extra (make install and the control image have it)."""
    from runner.ui import serve

    try:
        code = serve(host=host, port=port, token=token, interval=interval, status_file=watch_status,
                     out=lambda line: out.print(line, markup=False))
    except RunnerError as exc:
        raise _fail(exc) from None
    raise typer.Exit(code)


def main() -> None:
    """Entry point of the console script."""
    logging.basicConfig(level=os.environ.get("RUNNER_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from typer._click import exceptions as usage  # typer vendors its own click
    except ImportError:  # older typer: click itself
        from click import exceptions as usage  # type: ignore[no-redef]

    try:
        code = app(standalone_mode=False)
    except usage.NoArgsIsHelpError as exc:
        exc.show()  # no arguments at all: the help, as before
        sys.exit(exc.exit_code)
    except usage.UsageError as exc:  # a wrong option or argument: one line and exit 2, no box
        where = exc.ctx.command_path if exc.ctx else "runner"
        err.print(f"error: {_printable(exc.format_message())} (see {where} --help)", markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except usage.ClickException as exc:
        err.print(f"error: {_printable(exc.format_message())}", markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted", markup=False)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
