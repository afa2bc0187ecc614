"""Fault case ``notice-during-upload``: a preemption notice while a checkpoint is being written, on every store.

The CIFAR task (fork writer, a checkpoint every 10 steps) writes to ``s3://`` (moto), ``gs://``
(the GCS emulator) or ``az://`` (Azurite) through the fault proxy, which fails 30 % of all
requests (at most 2 in a row) and holds every checkpoint upload (any request body of 100 KB or
more) for ``HOLD_S``; or to ``file://`` on a slow disk (``tests/faults/slowdisk``: every fsync
of a checkpoint file under the folder waits ``HOLD_S``). The notice (the halt file or SIGTERM, alternately) comes
while an upload is held. Two variants:

- held ``HOLD_S`` (1.5 s): the task must exit 75 within the 30 s window, with the notice's step
  committed or, if the window ran out, the step committed before it intact and loadable;
- hung: once a step is committed, the holds grow to ``HUNG_S`` (40 s, longer than the window) and
  the window is 8 s (``RUNNER_NOTICE_WINDOW``): the task must give up, exit 75 within the window,
  name the steps it lost, and leave the previous step as the newest committed one.

Timed per trial (``commit_s``): from the notice to the task's exit.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

from benchmarks.faults import WINDOW_S, FaultContext, Row
from runner.stores import open_store
from runner.task import checkpoint as ck
from tests.conftest import ROOT, SMALL_CIFAR, TaskProcess, task_env
from tests.faults.cases import CLOUDS, Tally, newest_committed
from tests.faults.proxy import FaultProxy
from tests.faults.servers import create_bucket, env_for, environ

HOLD_S = 1.5
HUNG_S = 40.0
HUNG_WINDOW_S = 8.0
BIG_BODY = 100_000  # a checkpoint of the small CIFAR model is about 370 KB; manifests are a few KB
SLOW_DISK = ROOT / "tests" / "faults" / "slowdisk"
_NOTICE = re.compile(r"preemption notice from .*: saving step (\d+)")
_LOST = re.compile(r"could not commit step (\d+) before the notice window ends")
_EXCEPTION = re.compile(r"^[A-Za-z_.]*(Error|Exception|Interrupt|Exit)\b")


class _Target:
    """Where one trial writes: a store behind the proxy, or a file:// folder on the slow disk."""

    def __init__(self, ctx: FaultContext, kind: str, trial: int, rng: Any) -> None:
        self.kind, self.folder = kind, ctx.workdir / f"notice-{kind}-{trial}"
        self.folder.mkdir(parents=True)
        self.proxy: FaultProxy | None = None
        if kind == "file":
            self.uri = f"file://{self.folder}/ck"
            self.control = self.folder / "disk-delay"
            self.control.write_text("0")
            self.env = {"RUNNER_TEST_SLOW_DISK": f"{self.folder}/ck:{self.control}",
                        "PYTHONPATH": f"{SLOW_DISK}:{ROOT}"}
            self.clean_env: dict[str, str] = {}
        else:
            server = ctx.emulator(kind)
            self.uri = f"{kind}://{create_bucket(kind, server.env)}/n{trial}"
            self.proxy = FaultProxy(server.url, seed=rng.randrange(1 << 30), rate=0.3, max_in_row=2,
                                    delay=0.0, delay_min_bytes=BIG_BODY).start()
            self.env, self.clean_env = env_for(kind, self.proxy.url), server.env

    def hold(self, seconds: float) -> None:
        if self.proxy is not None:
            self.proxy.set(delay=seconds)
        else:
            self.control.write_text(str(seconds))

    def held(self) -> bool:
        return self.proxy.held.is_set() if self.proxy is not None else Path(f"{self.control}.busy").exists()

    def rearm(self) -> None:
        if self.proxy is not None:
            self.proxy.held.clear()
        else:
            Path(f"{self.control}.busy").unlink(missing_ok=True)

    def committed(self) -> int:
        with environ(self.clean_env):
            return newest_committed(open_store(self.uri))

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()


def _trial(ctx: FaultContext, tally: Tally, kind: str, trial: int, hung: bool, rng: Any) -> None:
    target = _Target(ctx, kind, trial, rng)
    notice_kind = ("halt", "sigterm")[trial % 2]
    halt = target.folder / "halt"
    extra = {"RUNNER_NOTICE_WINDOW": str(HUNG_WINDOW_S)} if hung else {}
    env = task_env(target.uri, RUNNER_CHECKPOINT_EVERY="10", RUNNER_HALT_FILE=str(halt), **target.env, **extra)
    window = HUNG_WINDOW_S if hung else WINDOW_S
    proc = TaskProcess(SMALL_CIFAR, env, target.folder)
    tally.trial()
    try:
        proc.wait_for(lambda line: "from scratch" in line, timeout=180)
        if hung:  # let one step commit, then make every write hang past the window
            deadline = time.monotonic() + 120
            while target.committed() == 0 and time.monotonic() < deadline and proc.proc.poll() is None:
                time.sleep(0.2)
        target.rearm()  # before the hold: a write held from here on is seen
        target.hold(HUNG_S if hung else HOLD_S)
        deadline = time.monotonic() + 120
        while not target.held() and time.monotonic() < deadline and proc.proc.poll() is None:
            time.sleep(0.01)
        if not target.held():
            ended = proc.proc.poll()
            proc.proc.kill()
            proc.finish(30)
            state = f"the task ended (exit {ended}) first" if ended is not None else "in 120 s"
            tally.loss(f"{kind} trial {trial}: no checkpoint write was seen ({state}): {_last_lines(proc.output)}")
            return
        time.sleep(rng.uniform(0.0, 0.3))
        before = target.committed()
        sent = time.monotonic()
        if notice_kind == "halt":
            halt.touch()
        else:
            proc.signal(signal.SIGTERM)
        code = proc.finish(window + 60)
        took = time.monotonic() - sent
        tally.commit(took)
        notice, lost = _NOTICE.search(proc.output), _LOST.search(proc.output)
        with environ(target.clean_env):
            store = open_store(target.uri)
            committed = newest_committed(store)
            loaded = ck.load_latest(store)
        label = f"{kind} trial {trial} ({notice_kind}{', hung' if hung else ''})"
        if code != 75 or "Traceback" in proc.output or notice is None:
            tally.loss(f"{label}: exit {code}: {_last_error(proc.output)}")
        elif took >= window:
            tally.loss(f"{label}: exited {took:.1f} s after the notice, the window is {window:.0f} s")
        elif loaded is None and committed or loaded is not None and loaded.step != committed:
            tally.loss(f"{label}: loads {loaded and loaded.step}, the newest committed step is {committed}")
        elif committed == int(notice.group(1)) and not lost:
            tally.count("the notice's step committed")
        elif lost and committed >= before and committed < int(notice.group(1)):
            tally.count("window ran out: the previous step kept, the loss named")
        else:
            tally.loss(f"{label}: notice at step {notice.group(1)}, committed {committed} (before: {before}), "
                       f"{'loss named' if lost else 'no loss named'}")
        if hung and not lost:
            tally.loss(f"{label}: a commit held {HUNG_S:.0f} s finished inside an {window:.0f} s window?")
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
        target.close()


def _last_lines(output: str, count: int = 3) -> str:
    """The task's last few lines, joined: what it was doing when the trial gave up on it."""
    return " | ".join(line.strip() for line in output.splitlines()[-count:])[-400:]


def _last_error(output: str) -> str:
    """The line that says what went wrong: an exception's last line, or the last ERROR line."""
    lines = [line for line in output.splitlines() if line.strip()]
    found = [line for line in lines if _EXCEPTION.match(line) or " ERROR " in line]
    return (found[-1] if found else (lines[-1] if lines else "no output"))[-300:]


def notice_during_upload(ctx: FaultContext) -> list[Row]:
    """A notice while a checkpoint upload is held (and 30 % of requests fail), on every store."""
    rows = []
    rng = ctx.rng("notice-during-upload")
    quick_hung = rng.choice([*CLOUDS, "file"])
    for kind in (*CLOUDS, "file"):
        tally = Tally(f"notice while a checkpoint uploads, {kind}://")
        normal, hung = (1, int(kind == quick_hung)) if ctx.quick else (3, 1)
        for trial in range(normal + hung):
            try:
                _trial(ctx, tally, kind, trial, trial >= normal, rng)
            except Exception as exc:  # noqa: BLE001 - a harness error in one trial is a loss, not a crash
                tally.loss(f"{kind} trial {trial}: {type(exc).__name__}: {exc}")
        place = "through the proxy: 30% of requests faulted" if kind != "file" else "slow disk: fsync held"
        rows.append(tally.row(f"{place}, checkpoint writes held {HOLD_S} s; {hung} hung ({HUNG_S:.0f} s holds, "
                              f"{HUNG_WINDOW_S:.0f} s window)"))
    return rows
