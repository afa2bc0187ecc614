"""Fault case ``exec-torn-saves``: ``runner exec`` around a script that saves non-atomically.

``examples/plain-pytorch/naive_train.py`` writes ``torch.save(state, "last.pt")`` straight to the
final name (52 MB) every 20 steps, loads it on start without a try, and handles no signal. It
runs under ``python -m runner.exec`` as real processes, each attempt in a fresh folder restored
from the store, as on a new machine:

- notices: the notice (SIGTERM to the wrapper, or the halt file) is sent the moment the script
  has ``last.pt`` open for writing, inside its save; the attempt must exit 75;
- kills: the wrapper and the script are SIGKILLed, half the time inside a save, half at a random
  moment; there is no final sync.

After every trial each committed snapshot in the store is checked: every file is whole (its
format, ``runner.exec.formats``) and ``last.pt`` loads with ``torch.load``. After the last trial
the job runs to the end: ``result.json`` must hold the uninterrupted run's weights sha256.
Timed (``commit_s``): from each notice to the wrapper's exit.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.faults import FaultContext, Row
from runner.exec import formats
from runner.exec.index import parse_index
from runner.exec.openfiles import OpenForWriting, open_for_writing
from runner.exec.sync import BLOBS, INDEX
from runner.stores import open_store
from runner.task import manifest as mf
from tests.conftest import ROOT
from tests.faults.cases import Tally

SCRIPT = ROOT / "examples" / "plain-pytorch" / "naive_train.py"
#: 52 MB saved every 20 steps: a torch.save that lasts long enough (about 0.15 s here) for a notice to land in it.
ARGS = ["--steps", "200", "--save-every", "20", "--hidden", "2048"]
QUICK_ARGS = ["--steps", "100", "--save-every", "20", "--hidden", "2048"]


def _attempt(store_uri: str, folder: Path, attempt: int, halt: Path, args: list[str]) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env.update(RUNNER_CHECKPOINT_URI=store_uri, RUNNER_NOTICE="none", RUNNER_ATTEMPT=str(attempt),
               RUNNER_HALT_FILE=str(halt), RUNNER_CHECKPOINT_KEEP="2", PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "runner.exec", "--dir", str(folder), "--", sys.executable,
                             str(SCRIPT), "--out", str(folder), *args], cwd=folder.parent, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def reference(workdir: Path, args: list[str]) -> str:
    """The weights sha256 of the script run alone, uninterrupted."""
    out = workdir / "exec-reference"
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], check=True, capture_output=True,
                   timeout=600)
    return str(json.loads((out / "result.json").read_text())["weights_sha256"])


def torn_snapshots(uri: str) -> list[str]:
    """Return what is wrong with the committed snapshots: a file that is not whole, a last.pt that does not load."""
    store = open_store(uri)
    problems = []
    for step, keys in sorted(mf.list_steps(store).steps.items()):
        if not mf.is_committed(keys):
            continue
        prefix = mf.step_prefix(step)
        manifest = mf.read_manifest(store, prefix)
        for rel, entry in parse_index(mf.read_verified(store, prefix, manifest, INDEX), prefix).items():
            data = store.read_bytes(BLOBS + entry.sha256)
            path = Path("/tmp") / f"check-{os.getpid()}-{Path(rel).name}"
            path.write_bytes(data)
            try:
                why = formats.problem(path, formats.sniff(path), len(data))
            finally:
                path.unlink()
            if why:
                problems.append(f"{prefix}: {rel} {why}")
            elif rel == "last.pt":
                try:
                    torch.load(io.BytesIO(data))
                except Exception as exc:  # noqa: BLE001 - the script's own load would die of it
                    problems.append(f"{prefix}: last.pt does not load ({type(exc).__name__})")
    return problems


def _holds(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open now (one process's fds: a look of well under a millisecond)."""
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def _wait_for_save(folder: Path, proc: subprocess.Popen[str], timeout: float = 120) -> OpenForWriting | None:
    """Wait until the script has last.pt open for writing; return who holds it, None when the attempt ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        holder = open_for_writing(folder).get("last.pt")
        if holder is not None:
            return holder
        time.sleep(0.002)
    return None


def _job(ctx: FaultContext, kind: str, trials: int, rng: Any, expected: str, args: list[str]) -> Row:
    tally = Tally(f"runner exec, non-atomic torch.save: {'notices inside a save' if kind == 'notice' else 'SIGKILLs'}")
    base = ctx.workdir / f"exec-{kind}"
    base.mkdir(parents=True)
    uri, halt = f"file://{base}/store", base / "halt"
    attempt, finished = 0, False
    while not finished and attempt < trials + 20:
        attempt += 1
        folder = base / f"attempt-{attempt}"  # a fresh machine each time: restored from the store
        proc = _attempt(uri, folder, attempt, halt, args)
        if tally.trials >= trials:
            out, _ = proc.communicate(timeout=600)
            finished = proc.returncode == 0
            if not finished:
                tally.loss(f"the last attempt exited {proc.returncode}: {out[-300:]}")
            break
        inside = rng.random() < 0.5 or kind == "notice"
        saver = None
        if inside:
            saver = _wait_for_save(folder, proc)
            started = saver is not None
        else:
            time.sleep(rng.uniform(1.0, 6.0))
            started = proc.poll() is None
        if not started:  # it finished before the fault
            out, _ = proc.communicate(timeout=600)
            finished = proc.returncode == 0
            if not finished:
                tally.loss(f"attempt {attempt} exited {proc.returncode}: {out[-300:]}")
            break
        sent = time.monotonic()
        if kind == "kill":
            proc.kill()
        elif attempt % 2:
            proc.send_signal(signal.SIGTERM)
        else:
            halt.touch()
        if saver is not None and _holds(saver.pid, (folder / "last.pt").resolve()):
            tally.count("sent while the script was inside torch.save")
        out, _ = proc.communicate(timeout=600)
        tally.trial()
        if kind == "notice" and "letting the save finish before the signal" in out:
            tally.count("the wrapper saw the save in progress and let it finish")
        local = folder / "last.pt"
        if kind == "kill" and local.exists() and formats.problem(local, "zip", local.stat().st_size):
            tally.count("left a torn last.pt behind")
        if kind == "notice":
            tally.commit(time.monotonic() - sent)
            if proc.returncode != 75 or "Traceback" in out:
                tally.loss(f"attempt {attempt}: exit {proc.returncode} after the notice: {out[-300:]}")
        halt.unlink(missing_ok=True)
        for problem in torn_snapshots(uri):
            tally.loss(f"attempt {attempt}: a torn file was committed: {problem}")
    result = base / f"attempt-{attempt}" / "result.json"
    if finished and json.loads(result.read_text())["weights_sha256"] != expected:
        tally.loss("the job ended with other weights than the uninterrupted run")
    elif not finished and not tally.losses:
        tally.loss(f"the job did not finish in {attempt} attempts")
    return tally.row(f"{SCRIPT.name} {' '.join(args)}, 52 MB last.pt; job finished with the uninterrupted "
                     f"run's weights: {'yes' if finished and not tally.losses else 'NO'}")


def exec_torn_saves(ctx: FaultContext) -> list[Row]:
    """Notices inside a non-atomic save, and SIGKILLs, under runner exec: nothing torn committed, exact weights."""
    args = QUICK_ARGS if ctx.quick else ARGS
    expected = reference(ctx.workdir, args)
    rng = ctx.rng("exec-torn-saves")
    trials = 2 if ctx.quick else 5
    return [_job(ctx, "notice", trials, rng, expected, args), _job(ctx, "kill", trials, rng, expected, args)]
