"""``runner watch | init | prices | report | simulate | exec | ui``: the service and the tools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from runner.cli.app import _fail, _ledger, app, out
from runner.cli.jobs import watch_jobs
from runner.errors import RunnerError, SpecError
from runner.ledger import data_dir


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
    """Keep jobs alive: poll, resubmit after preemptions.

    With no job ids: every unfinished job, and new ones as they come, until SIGTERM/SIGINT (exit 0).
    """
    try:
        if lease_ttl < 2 * interval:
            raise SpecError(f"--lease-ttl {lease_ttl:g} is shorter than two passes (--interval {interval:g}): "
                            f"the lease would lapse between passes; use --lease-ttl {max(30.0, 3 * interval):g}")
        code = watch_jobs(job_ids or None, interval, once=once, service=True, health_port=health_port,
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
    """Write a PNG and an HTML report per job, or a summary of all jobs.

    <job>.png and <job>.html: attempts, preemptions, notices, checkpoints, progress and costs.

    With no job ids: summary.png and summary.html. Needs matplotlib (the report extra).
    """
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
    trace: Annotated[Optional[Path], typer.Option(help="replay spot availability from this CSV trace (time,available) "
                                                       "and compare capacity policies")] = None,
    deadline: Annotated[Optional[str], typer.Option(help="with --trace: the job's deadline after submission, e.g. 15h")] = None,
    policies: Annotated[Optional[str], typer.Option(help="with --trace: policies to compare, e.g. greedy,auto "
                                                         "(default: spot-only,greedy,uniform-progress,auto)")] = None,
    offsets: Annotated[int, typer.Option(min=1, max=100_000, help="with --trace: start offsets spread over the trace")] = 100,
    poll: Annotated[str, typer.Option(help="with --trace: how often the watcher asks the policy")] = "60s",
    spot_price: Annotated[Optional[float], typer.Option(help="spot price per hour (with --on-demand-price)")] = None,
    on_demand_price: Annotated[Optional[float], typer.Option(help="on-demand price per hour (with --spot-price)")] = None,
) -> None:
    """Predict completion time, spend and v for several checkpoint intervals, the auto one among them.

    With --trace: replay spot availability and compare the capacity policies against a deadline.
    """
    from runner.cost.simulate_cli import run_simulation, run_trace_simulation

    try:
        with _ledger() as ledger:
            if trace is not None:
                if mean is not None or schedule is not None:
                    raise SpecError("--trace replays availability: give it without --mean or --schedule")
                table, lines = run_trace_simulation(
                    ledger, trace_file=trace, deadline=deadline, policies=policies, offsets=offsets, job_id=job_id,
                    work=work, checkpoint_cost=checkpoint_cost, startup=startup, resubmit=resubmit, coverage=coverage,
                    intervals=intervals, poll=poll, spot_price=spot_price, on_demand_price=on_demand_price,
                    spec_file=spec_file, seed=seed)
            elif deadline is not None or policies is not None or spot_price is not None or on_demand_price is not None:
                raise SpecError("--deadline, --policies and the prices compare capacity policies: give a --trace too")
            else:
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
    margin: Annotated[float, typer.Option(
        help="seconds kept for the final sync at least (or twice the longest sync so far) before the notice "
             "window ends; a command still running then is killed")] = 2.0,
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
    """Serve a live dashboard of the ledger: jobs, attempts, preemptions, spend; cancel, halt, resume.

    Needs the ui extra (make install and the control image have it)."""
    from runner.ui import serve

    try:
        code = serve(host=host, port=port, token=token, interval=interval, status_file=watch_status,
                     out=lambda line: out.print(line, markup=False))
    except RunnerError as exc:
        raise _fail(exc) from None
    raise typer.Exit(code)
