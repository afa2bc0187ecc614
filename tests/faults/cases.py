"""The fault cases of ``benchmarks/faults.py``: each a function of a FaultContext returning table rows.

A trial that goes wrong is counted as a loss, with its first reason kept for the notes; a case
never raises for a loss. What "the newest committed step" is comes from :func:`newest_committed`,
an oracle that reads manifests and checks sha256 without deleting anything, independently of
``checkpoint.load_latest`` (the code under test).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from benchmarks.faults import WINDOW_S, CaseUnavailable, FaultContext, Row
from runner.errors import CorruptCheckpoint, RunnerError
from runner.stores import open_store
from runner.stores.base import Store
from runner.task import checkpoint as ck
from runner.task import manifest as mf
from runner.task.writer import CheckpointWriter
from tests.conftest import SMALL_CIFAR, TaskProcess, final_sha, task_env
from tests.faults.proxy import FaultProxy
from tests.faults.servers import create_bucket, env_for, environ
from tests.integration.test_store_contract import _writer_child, state_for

CLOUDS = ("s3", "gs", "az")
#: A store call this long under the proxy's faults is a loss: it would eat a third of a 30 s notice window.
MAX_STORE_CALL_S = 10.0


def GCS_EMULATOR_RESUMABLE(method: str, path: str) -> bool:  # noqa: N802 - a constant predicate
    """A chunk of a resumable upload (objects above 8 MiB) on the GCS emulator: its answer is never lost.

    Once the emulator has finalised an object it drops the connection on any later request to that
    upload session, where GCS answers 200 with the object; so the library's own recovery (send the
    chunk again) cannot work against the emulator when the final chunk's answer was lost.
    """
    return method == "PUT" and "upload_id=" in path
_RESUME = re.compile(r"resuming \w+ from step (\d+)")


class Tally:
    """Trials and losses of one row, with the first few reasons for the notes."""

    def __init__(self, case: str) -> None:
        self.case, self.trials, self.losses, self.reasons = case, 0, 0, []  # type: ignore[var-annotated]
        self.facts: dict[str, int] = {}
        self.stats: dict[str, float] = {}

    def trial(self) -> None:
        self.trials += 1

    def loss(self, reason: str) -> None:
        self.losses += 1
        if len(self.reasons) < 3:
            self.reasons.append(" ".join(reason.split())[:160])

    def count(self, fact: str, n: int = 1) -> None:
        self.facts[fact] = self.facts.get(fact, 0) + n

    def store_call(self, seconds: float) -> None:
        """Note a store call's duration (the row keeps the longest)."""
        self.stats["store_call_s"] = max(self.stats.get("store_call_s", 0.0), seconds)

    def commit(self, seconds: float) -> None:
        """Note one commit's duration: the longest, how many, how many inside the 30 s window."""
        self.stats["commit_s"] = max(self.stats.get("commit_s", 0.0), seconds)
        self.stats["commits"] = self.stats.get("commits", 0) + 1
        self.stats["commits_30s"] = self.stats.get("commits_30s", 0) + (seconds < WINDOW_S)

    def row(self, notes: str = "") -> Row:
        parts = [notes] if notes else []
        parts += [f"{k} {v}" for k, v in self.facts.items()]
        parts += [f"LOST: {r}" for r in self.reasons]
        return Row(self.case, self.trials, self.losses, "; ".join(parts), dict(self.stats) or None)


def newest_committed(store: Store) -> int:
    """Return the highest step whose manifest exists and whose files match it (0 if none); read only."""
    for step in mf.list_steps(store).newest_first():
        prefix = mf.step_prefix(step)
        try:
            manifest = mf.read_manifest(store, prefix)
            for name in manifest["files"]:
                mf.read_verified(store, prefix, manifest, name)
        except (FileNotFoundError, CorruptCheckpoint):
            continue
        return step
    return 0


def partial_steps(store: Store) -> list[int]:
    """Return the steps that hold keys but no manifest."""
    return sorted(s for s, keys in mf.list_steps(store).steps.items()
                  if not any(k.endswith("/" + mf.MANIFEST) for k in keys))


def _one_line_error(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, RunnerError) and bool(text) and "\n" not in text and "Traceback" not in text


# -- SIGKILL of a process committing steps -------------------------------------------------------
def _kill_writer(uri: str, numel: int, sleep: float) -> int:
    """Fork a child committing steps 1, 2, ... to ``uri``; SIGKILL it after ``sleep``; return the last printed."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        os.close(read_fd)
        os.dup2(write_fd, 1)
        try:
            _writer_child(uri, numel)
        finally:
            os._exit(1)
    os.close(write_fd)
    time.sleep(sleep)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    with os.fdopen(read_fd) as fh:
        printed = [int(x) for x in fh.read().split()]
    return printed[-1] if printed else 0


def _sigkill_row(case: str, base_uri: str, trials: int, rng: Any, sizes: list[int], sleep: tuple[float, float]) -> Row:
    tally = Tally(case)
    for trial in range(trials):
        uri = f"{base_uri}/t{trial}"
        numel = rng.choice(sizes)
        last = _kill_writer(uri, numel, rng.uniform(*sleep))
        tally.trial()
        try:
            store = open_store(uri)
            if partial_steps(store):
                tally.count("killed mid-commit")
            oracle = newest_committed(store)
            loaded = ck.load_latest(store)
            step = loaded.step if loaded else 0
            # The kill may land after a commit and before its line was printed: N or N+1.
            if step != oracle or step not in (last, last + 1):
                tally.loss(f"trial {trial}: loaded {step}, newest committed {oracle}, printed {last}")
            elif loaded is not None and not torch.equal(loaded.state["w"], torch.full((numel,), float(step))):
                tally.loss(f"trial {trial}: step {step} holds other values")
            elif partial_steps(store):
                tally.loss(f"trial {trial}: partial steps {partial_steps(store)} left after the load")
        except Exception as exc:  # noqa: BLE001 - an escaped error is a loss
            tally.loss(f"trial {trial}: {type(exc).__name__}: {exc}")
    return tally.row(f"state {min(sizes) * 4 / 1e6:.1f}-{max(sizes) * 4 / 1e6:.1f} MB, kill after "
                     f"{sleep[0]}-{sleep[1]} s")


def sigkill_writer(ctx: FaultContext) -> list[Row]:
    """SIGKILL a process that commits steps, at random instants (mid-persist, mid-upload)."""
    rows = [_sigkill_row("sigkill mid-persist, file://", f"file://{ctx.workdir}/sigkill-file",
                         30 if ctx.quick else 150, ctx.rng("sigkill-file"), [200_000, 1_000_000], (0.0, 0.3))]
    for kind in CLOUDS:
        server = ctx.emulator(kind)
        bucket = create_bucket(kind, server.env)
        with environ(server.env):
            rows.append(_sigkill_row(f"sigkill mid-upload, {kind}://", f"{kind}://{bucket}/j",
                                     6 if ctx.quick else 20, ctx.rng(f"sigkill-{kind}"),
                                     [200_000, 1_000_000, 3_000_000], (0.2, 1.5)))
    return rows


# -- SIGKILL of the CIFAR task -----------------------------------------------------------------
_REFERENCE: dict[tuple[str, ...], str] = {}


def reference_sha(args: list[str], workdir: Path) -> str:
    """The final weights' sha256 of an uninterrupted run with ``args`` (computed once)."""
    key = tuple(args)
    if key not in _REFERENCE:
        folder = workdir / f"reference-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        proc = TaskProcess(args, task_env(f"file://{folder}/ck"), folder)
        if proc.finish(600) != 0:
            raise RuntimeError(f"the reference run failed:\n{proc.output[-2000:]}")
        _REFERENCE[key] = final_sha(folder / "ck")
    return _REFERENCE[key]


def _start_attempt(args: list[str], env: dict[str, str], cwd: Path) -> tuple[TaskProcess, int]:
    """Start an attempt; return it and the step it resumed from (0: from scratch)."""
    proc = TaskProcess(args, env, cwd)
    line = proc.wait_for(lambda line: "resuming " in line or "from scratch" in line, timeout=180)
    m = _RESUME.search(line)
    return proc, int(m.group(1)) if m else 0


def sigkill_task(ctx: FaultContext) -> list[Row]:
    """SIGKILL the CIFAR task again and again (half the kills just after a checkpoint hand-off, so
    inside the forked writer's persist); each next attempt must resume from the newest committed step,
    and the last one must end with the uninterrupted run's weights."""
    kills = 5 if ctx.quick else 12
    args = [*SMALL_CIFAR]
    args[args.index("--epochs") + 1] = "2" if ctx.quick else "4"
    rng = ctx.rng("sigkill-task")
    folder = ctx.workdir / "sigkill-task"
    folder.mkdir()
    uri = f"file://{folder}/ck"
    env = task_env(uri, RUNNER_CHECKPOINT_EVERY="10")
    tally = Tally("sigkill the task, file:// (fork writer)")
    store = open_store(uri)
    reference = reference_sha(args, ctx.workdir)
    done = False
    for _ in range(kills + 30):  # a kill before any progress is still a trial; give up eventually
        if partial_steps(store):
            tally.count("killed mid-persist (a step without manifest left)")
        oracle = newest_committed(store)
        proc, resumed = _start_attempt(args, env, folder)
        if tally.trials >= kills:
            break
        if resumed != oracle:
            tally.loss(f"resumed from {resumed}, the newest committed step is {oracle}")
        try:
            if rng.random() < 0.5:  # inside the writer's persist
                proc.wait_for(lambda line: "handed to the" in line, timeout=120)
                time.sleep(rng.uniform(0.0, 0.05))
                tally.count("kills just after a hand-off")
            else:
                proc.wait_step(resumed + rng.randint(1, 30))
                time.sleep(rng.uniform(0.0, 0.1))
        except AssertionError:  # it finished before the kill
            done = proc.finish() == 0
            break
        proc.signal(signal.SIGKILL)
        proc.finish()
        tally.trial()
    else:
        raise RuntimeError("the task made no progress under the kills")
    if not done:
        oracle = newest_committed(store)
        code = proc.finish(600)
        if code != 0 or "Traceback" in proc.output:
            tally.loss(f"the last attempt exited {code}: {proc.output[-300:]}")
    try:
        sha = final_sha(folder / "ck")
        if sha != reference:
            tally.loss(f"final sha256 {sha[:12]} differs from the uninterrupted run's {reference[:12]}")
    except (OSError, KeyError, ValueError) as exc:
        tally.loss(f"no final result: {exc}")
    return [tally.row(f"then resumed to the end: same sha256 as uninterrupted ({'2' if ctx.quick else '4'} epochs)")]


# -- store faults through the proxy ---------------------------------------------------------------
def store_faults(ctx: FaultContext) -> list[Row]:
    """5xx, 429, SlowDown, resets, truncated bodies and late 500s on every request to each emulator,
    with the stores' own retry settings (the SDKs', as shipped): every store call and commit is timed."""
    rows = []
    trials = 4 if ctx.quick else 16
    for kind in CLOUDS:
        server = ctx.emulator(kind)
        bucket = create_bucket(kind, server.env)
        tally = Tally(f"store faults, {kind}:// (proxy)")
        rng = ctx.rng(f"store-{kind}")
        requests = 0
        with FaultProxy(server.url, seed=rng.randrange(1 << 30), rate=0.3, max_in_row=2,
                        answer_kept=GCS_EMULATOR_RESUMABLE if kind == "gs" else None) as proxy:
            for trial in range(trials):
                uri = f"{kind}://{bucket}/t{trial}"
                # every 4th trial: 10 MB states (a multipart upload on S3, chunked on Azure)
                numel = 2_600_000 if trial % 4 == 3 else rng.choice([1000, 100_000])
                tally.trial()
                faulty: Any = None
                try:
                    with environ(env_for(kind, proxy.url)):
                        faulty = open_store(uri)
                        for step in range(1, 5):
                            started = time.monotonic()
                            ck.write_step(faulty, step, state_for(step, numel),
                                          {"epoch": 0, "progress": {"step": step}}, keep=2)
                            tally.commit(time.monotonic() - started)
                        loaded = ck.load_latest(faulty)
                    with environ(server.env):
                        clean = open_store(uri)
                        oracle = newest_committed(clean)
                        if loaded is None or loaded.step != 4 or oracle != 4:
                            tally.loss(f"trial {trial}: loaded {loaded and loaded.step}, committed {oracle}")
                        elif not torch.equal(loaded.state["w"], torch.full((numel,), 4.0)):
                            tally.loss(f"trial {trial}: step 4 holds other values")
                        elif partial_steps(clean) or sorted(mf.list_steps(clean).steps) != [3, 4]:
                            tally.loss(f"trial {trial}: steps left {sorted(mf.list_steps(clean).steps)}")
                except Exception as exc:  # noqa: BLE001 - any escaped error is a loss
                    tally.loss(f"trial {trial}: {type(exc).__name__}: {exc}")
                finally:
                    if faulty is not None:  # failed calls are timed too
                        tally.store_call(faulty.times.longest)
            requests = proxy.requests
            injected = proxy.summary()
        if tally.stats.get("store_call_s", 0.0) > MAX_STORE_CALL_S:
            tally.loss(f"a store call took {tally.stats['store_call_s']:.1f} s (a loss from {MAX_STORE_CALL_S:.0f} s)")
        rows.append(tally.row(f"{requests} requests, 30% faulted, at most 2 in a row: {injected}"))
    return rows


# -- disk full -------------------------------------------------------------------------------------
@contextlib.contextmanager
def tmpfs(path: Path, size_kb: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size_kb`` at ``path``; CaseUnavailable when this machine cannot."""
    path.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise CaseUnavailable(f"cannot mount a tmpfs (needs root): {out.stderr.strip()[:120]}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def disk_full(ctx: FaultContext) -> list[Row]:
    """Fill the checkpoint filesystem (a small tmpfs) during a commit, with each writer and in the task."""
    writers = Tally("disk full during a commit (sync/thread/fork writers)")
    rounds = 2 if ctx.quick else 6
    for i in range(rounds * 3):
        mode = ("sync", "thread", "fork")[i % 3]
        with tmpfs(ctx.workdir / f"full-{i}", 1024) as mount:
            uri = f"file://{mount}/ck"
            writers.trial()
            try:
                writer = CheckpointWriter(uri, keep=3, mode=mode)
                writer.submit(1, state_for(1, 50_000), {"epoch": 0, "progress": {"step": 1}})
                writer.flush()
                big = 300_000 + 50_000 * (i % 4)  # 1.2-1.8 MB: it cannot fit
                error: BaseException | None = None
                try:
                    writer.submit(2, state_for(2, big), {"epoch": 0, "progress": {"step": 2}})
                    writer.flush()
                except Exception as exc:  # noqa: BLE001 - judged below
                    error = exc
                store = open_store(uri)
                loaded = ck.load_latest(store)
                leftovers = [k for k in store.list() if k.endswith(".tmp")]
                if error is None:
                    writers.loss(f"{mode}: a step bigger than the disk was committed without an error")
                elif not (_one_line_error(error) and "No space left" in str(error)):
                    writers.loss(f"{mode}: unclear error {type(error).__name__}: {error}")
                elif loaded is None or loaded.step != 1 or not torch.equal(loaded.state["w"], torch.full((50_000,), 1.0)):
                    writers.loss(f"{mode}: the previous step is not intact ({loaded and loaded.step})")
                elif leftovers or partial_steps(store):
                    writers.loss(f"{mode}: leftovers {leftovers or partial_steps(store)}")
                else:  # space is back (the failed write cleaned up): the next commit works
                    writer.submit(3, state_for(3, 50_000), {"epoch": 0, "progress": {"step": 3}})
                    writer.flush()
                    if newest_committed(store) != 3:
                        writers.loss(f"{mode}: no commit after the disk-full error")
            except Exception as exc:  # noqa: BLE001
                writers.loss(f"{mode}: {type(exc).__name__}: {exc}")
    task = Tally("disk full in the CIFAR task (file://)")
    seen_error = ""
    for i in range(1 if ctx.quick else 3):
        folder = ctx.workdir / f"full-task-{i}"
        with tmpfs(folder / "mnt", 700 + 100 * i) as mount:  # one checkpoint (~370 KB) fits, not two
            task.trial()
            uri = f"file://{mount}/ck"
            proc = TaskProcess(SMALL_CIFAR, task_env(uri, RUNNER_CHECKPOINT_EVERY="10"), folder)
            code = proc.finish(300)
            errors = [line for line in proc.lines if "ERROR" in line]
            store = open_store(uri)
            committed = newest_committed(store)
            if code in (0, 75) or "Traceback" in proc.output:
                task.loss(f"exit {code}: {proc.output[-300:]}")
            elif not errors or "No space left" not in errors[-1]:
                task.loss(f"no clear error line: {proc.output[-300:]}")
            elif committed < 10 or (ck.load_latest(store) or ck.Loaded(0, {}, {})).step != committed:
                task.loss(f"the previous step is not loadable (newest committed {committed})")
            else:
                task.count(f"exit {code} with one error line")
                seen_error = "... failed: " + errors[-1].split("failed: ", 1)[-1].strip()
    notes = "tmpfs of 700-900 KB" + (f", e.g. '{seen_error[:110]}'" if seen_error else "")
    return [writers.row("1 MB tmpfs, step 2 needs more"), task.row(notes)]


