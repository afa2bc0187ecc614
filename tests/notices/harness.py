"""Run notice cases: the real ``NoticeWatcher`` against the metadata simulator, all cases at once.

A :class:`Case` drives one simulator namespace (``play``) while a watcher with the listener's
defaults (poll every 1 s, 2 s request timeout) polls it in ``auto`` mode or the case's mode.
Each case runs in its own thread; all run concurrently, so the whole table takes about as long
as its longest case. :func:`judge` turns what was seen into a verdict:

- ``notice`` cases: a notice of the expected kind, seen with at least ``MIN_LEFT`` of its
  documented window left (a service that is healthy), or at most ``MAX_RECOVERY_S`` after the
  service recovered (``ctx.recovered()``), and a reported deadline never later than the
  simulator's (1 s of slack for whole-second times);
- ``none`` cases: no notice during the whole case;
- ``sdk`` rows: an SDK client check that passed.
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from runner.sim.metadata import MetadataSimulator
from runner.task.notices import Notice, NoticeWatcher

MIN_LEFT = 0.80
MAX_RECOVERY_S = 5.0
DEADLINE_SLACK_S = 1.0
QUICK_S = 2.5  # a notice without warning (hibernate, a Started event): seen this soon after it is posted
WALL_OFFSET = time.time() - time.monotonic()


@dataclass
class Ctx:
    """What a case's ``play`` uses: the simulator, its namespace, a clock from the watcher's start."""

    sim: MetadataSimulator
    ns: str
    url: str
    t0: float = 0.0
    post_at: float | None = None
    deadline: float | None = None
    window: float = 0.0
    recovered_at: float | None = None
    ready_delay: float = 0.0
    fault_ends: float | None = None

    def at(self, seconds: float) -> None:
        """Sleep until ``seconds`` after the watcher started."""
        time.sleep(max(0.0, self.t0 + seconds - time.time()))

    def ready(self, cloud: str, timeout: float = 30.0) -> None:
        """Wait until the watcher polls ``cloud`` steadily (it has identified it); move the clock on.

        A busy machine can slow the start; cases time their faults and notices from here.
        """
        steady = {"aws": "/latest/meta-data/spot/instance-action", "gcp": "wait_for_change=true",
                  "azure": "/metadata/scheduledevents"}[cloud]
        give_up = time.time() + timeout
        while sum(steady in path for _, path in self.sim.requests(self.ns)) < 2 and time.time() < give_up:
            time.sleep(0.05)
        self.ready_delay = max(0.0, time.time() - self.t0 - 1.0)
        self.t0 += self.ready_delay  # what was planned at 3 s happens 3 s after readiness, less 1 s

    def post(self, cloud: str, window: float, **how: Any) -> None:
        """Announce the notice; remember when, and when the machine goes away."""
        self.post_at, self.window = time.time(), window
        self.deadline = self.post_at + window
        self.sim.preempt(cloud, window, self.ns, **how)

    def recovered(self, at: float | None = None) -> None:
        """The service works again (now, or at the wall-clock time ``at`` when a fault ran out)."""
        self.recovered_at = time.time() if at is None else at

    def configure(self, cloud: str | None = None, **options: Any) -> None:
        self.sim.configure(self.ns, cloud, **options)

    def fault(self, kind: str, seconds: float, **how: Any) -> float:
        """Start a fault of ``seconds``; return the wall-clock time it ends."""
        self.sim.fault(self.ns, kind, seconds, **how)
        self.fault_ends = time.time() + seconds
        return self.fault_ends


@dataclass
class Case:
    """One row of the table."""

    id: str
    cloud: str
    condition: str
    expected: str  # what the cloud's documentation (or SDK) says happens, and so what must happen
    source: str  # where that is written
    expect: str  # "notice", "none" or "sdk"
    play: Callable[[Ctx], None]
    setup: Callable[[Ctx], None] | None = None  # before the watcher starts
    mode: str = "auto"
    until: float = 12.0  # seconds after the start to stop watching
    kind: str = ""  # the notice's expected kind
    recovery: bool | str = False  # judged by the time from recovery ("either": or by the window, if seen before)
    own_server: bool = False  # a simulator of its own (it is stopped and started: connections refused)
    proxy: bool = False  # requests go through a proxy that adds X-Forwarded-For
    check: Callable[[Result], str | None] | None = None  # more to check; returns what is wrong
    sdk: Callable[[MetadataSimulator], str] | None = None  # sdk rows: returns what was observed


@dataclass
class Result:
    case: Case
    notice: Notice | None = None
    seen_at: float | None = None
    ctx: Ctx | None = None
    hints: list[tuple[str, str]] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    observed: str = ""
    verdict: str = ""  # "ok", "missed", "false", "late", "wrong", "error"
    left: float | None = None  # fraction of the window left when seen
    after_recovery: float | None = None
    deadline_error: float | None = None  # reported - true deadline, seconds (negative: reported early)


class _XffProxy(BaseHTTPRequestHandler):
    """Forward every request to ``target``, adding X-Forwarded-For as an HTTP proxy on the path would."""

    target = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        headers["X-Forwarded-For"] = "172.17.0.2"
        request = urllib.request.Request(self.target + self.path, data=body, headers=headers, method=self.command)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=30) as response:
                status, rheaders, data = response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            status, rheaders, data = exc.code, exc.headers, exc.read()
        except OSError:
            self.close_connection = True
            return
        self.send_response(status)
        for key, value in rheaders.items():
            if key.lower() not in ("content-length", "connection", "server", "date"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client gave up waiting
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = _forward


@contextlib.contextmanager
def xff_proxy(target: str) -> Iterator[str]:
    handler = type("Proxy", (_XffProxy,), {"target": target})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run_case(case: Case, shared: MetadataSimulator) -> Result:
    """Play one case against a watcher; never raises."""
    result = Result(case)
    own = MetadataSimulator().start() if case.own_server else None
    sim = own or shared
    try:
        if case.sdk is not None:
            result.observed = case.sdk(sim)
            result.verdict = "ok"
            return result
        with contextlib.ExitStack() as stack:
            url = f"{sim.url}/ns/{case.id}"
            if case.proxy:
                url = stack.enter_context(xff_proxy(sim.url)) + f"/ns/{case.id}"
            ctx = result.ctx = Ctx(sim, case.id, url)
            sim.configure(case.id, case.cloud)
            if case.setup:
                case.setup(ctx)
            watcher = NoticeWatcher(case.mode, url, install_signals=False)
            ctx.t0 = time.time()
            watcher.start()
            try:
                case.play(ctx)
                left = ctx.t0 + case.until - time.time()
                notice = watcher.wait(max(0.0, left)) if case.expect == "notice" else None
                if case.expect != "notice":
                    time.sleep(max(0.0, left))
                    notice = watcher.notice
                result.notice = notice
                result.hints = list(watcher.hints)
                if notice is not None:
                    result.seen_at = WALL_OFFSET + notice.received_at
                    watcher.acknowledge()
                result.acknowledged = sim.acknowledged(case.id)
            finally:
                watcher.stop()
        judge(result)
    except Exception as exc:  # a broken case is a failed row, never a crashed table
        result.verdict, result.observed = "error", f"{type(exc).__name__}: {exc}"
        result.observed += " | " + traceback.format_exc().replace("\n", " ")[-300:]
    finally:
        if own is not None:
            own.stop()
    return result


def judge(result: Result) -> None:
    case, notice, ctx = result.case, result.notice, result.ctx
    assert ctx is not None
    hints = f"; hint: {', '.join(d for _, d in result.hints)}" if result.hints else ""
    if notice is None:
        result.verdict = "ok" if case.expect == "none" else "missed"
        result.observed = f"no notice in {case.until:g} s{hints}"
        return
    seen = result.seen_at or 0.0
    what = f"notice {notice.source}/{notice.kind or notice.detail}"
    if case.expect == "none":
        result.verdict, result.observed = "false", f"FALSE {what} at {seen - ctx.t0:.1f} s"
        return
    problems = []
    if case.kind and notice.kind != case.kind:
        problems.append(f"kind {notice.kind!r}, not {case.kind!r}")
    if ctx.deadline is not None and notice.deadline is not None and ctx.window > 0:
        result.deadline_error = notice.deadline - ctx.deadline
        if result.deadline_error > DEADLINE_SLACK_S:
            problems.append(f"deadline reported {result.deadline_error:.1f} s later than the service's")
    parts = [what]
    early = case.recovery == "either" and ctx.recovered_at is not None and seen < ctx.recovered_at
    if case.recovery and not early:
        if ctx.recovered_at is None:
            problems.append("the case never recovered")
        else:
            result.after_recovery = seen - ctx.recovered_at
            parts.append(f"{result.after_recovery:.1f} s after recovery")
            if not -0.1 <= result.after_recovery <= MAX_RECOVERY_S:
                problems.append(f"seen {result.after_recovery:.1f} s after recovery (at most {MAX_RECOVERY_S:g})")
    elif ctx.post_at is not None:  # a healthy service (or a slow one that still answered in time)
        latency = seen - ctx.post_at
        if ctx.window > 0 and ctx.deadline is not None:
            result.left = (ctx.deadline - seen) / ctx.window
            parts.append(f"{latency:.1f} s after posting, {result.left:.0%} of {ctx.window:g} s left")
            if result.left < MIN_LEFT:
                problems.append(f"only {result.left:.0%} of the window left")
        else:
            parts.append(f"{latency:.1f} s after posting (no warning time)")
            if latency > QUICK_S:
                problems.append(f"seen {latency:.1f} s after posting")
    if result.deadline_error is not None:
        parts.append(f"deadline {abs(result.deadline_error):.1f} s {'early' if result.deadline_error < 0 else 'late'}")
    if case.check is not None and (extra := case.check(result)):
        problems.append(extra)
    result.observed = ", ".join(parts) + hints + (f" -- {'; '.join(problems)}" if problems else "")
    result.verdict = "late" if problems else "ok"


def run_all(cases: list[Case]) -> list[Result]:
    """Run every case at once (one thread each); return the results in the cases' order."""
    results: list[Result | None] = [None] * len(cases)
    with MetadataSimulator() as shared:
        def one(i: int) -> None:
            results[i] = run_case(cases[i], shared)

        threads = [threading.Thread(target=one, args=(i,), name=f"case-{c.id}", daemon=True)
                   for i, c in enumerate(cases)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return [r for r in results if r is not None]


def totals(results: list[Result]) -> dict[str, Any]:
    notices = [r for r in results if r.case.expect == "notice"]
    healthy = [r.left for r in notices if r.left is not None]
    recoveries = [r.after_recovery for r in notices if r.after_recovery is not None]
    return {
        "cases": len(results),
        "listener cases": sum(r.case.expect != "sdk" for r in results),
        "sdk checks": sum(r.case.expect == "sdk" for r in results),
        "notices expected": len(notices),
        "notices seen": sum(r.notice is not None for r in notices),
        "missed": sum(r.verdict == "missed" for r in results),
        "false": sum(r.verdict == "false" for r in results),
        "late or wrong": sum(r.verdict == "late" for r in results),
        "errors": sum(r.verdict == "error" for r in results),
        "least window left (healthy)": min(healthy) if healthy else None,
        "longest time after recovery (s)": max(recoveries) if recoveries else None,
    }
