"""Run an unmodified training command under the container contract.

    runner exec --dir /workspace/checkpoints -- python train.py --epochs 3

1. Restore the newest valid snapshot of the folder from ``RUNNER_CHECKPOINT_URI`` (``sync``).
2. Start the command as a child process, with ``RUNNER_NOTICE_FILE`` and ``RUNNER_SYNC_DIR`` in
   its environment.
3. While it runs, commit the folder whenever it changed and then stayed quiet for ``settle``
   seconds; watch every notice source of the contract (``runner.task.notices``).
4. On a notice: write the notice file (source, deadline, seconds left), send the child the
   configured signal (``RUNNER_NOTICE_SIGNAL``, SIGTERM by default); if the notice names a
   deadline and the child still runs ``margin`` seconds before it, kill the child so that the
   final sync fits.
5. When the child exits: a final sync, then exit 75 if the child was signalled and the sync
   committed, else the child's own exit code (128 + N for a child killed by signal N).

No torch, no typer: standard library, tenacity and the store's SDK. ``runner exec`` (the CLI)
and ``python -m runner.exec`` both end up in :func:`run`.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.errors import ConfigError, RunnerError
from runner.exec.sync import FolderChanged, FolderSync, SyncResult
from runner.stores import open_store
from runner.task.context import EXIT_DONE, EXIT_FAILED, EXIT_PREEMPTED, RunContext
from runner.task.manifest import read_progress, write_progress
from runner.task.notices import Notice, NoticeWatcher

log = logging.getLogger("runner.exec")

DEFAULT_SIGNAL = "SIGTERM"
FINAL_SYNC_TRIES = 5
_PR_SET_PDEATHSIG = 1
_UNCATCHABLE = {signal.SIGKILL, signal.SIGSTOP}


def parse_signal(text: str) -> signal.Signals:
    """Parse ``SIGTERM``, ``TERM``, ``usr1`` or ``15`` into a signal the child can catch."""
    name = str(text).strip().upper()
    try:
        sig = signal.Signals(int(name)) if name.isdigit() else signal.Signals[
            name if name.startswith("SIG") else "SIG" + name]
    except (KeyError, ValueError):
        sig = None
    if sig is None or sig in _UNCATCHABLE:
        raise ConfigError(f"notice signal {text!r} is not a signal a program can catch: use SIGTERM (default), "
                          "SIGINT, SIGUSR1, SIGUSR2 or SIGHUP")
    return sig


@dataclass(frozen=True)
class ExecOptions:
    """How to run the child and sync its folder."""

    command: list[str]
    folder: Path
    signal: signal.Signals = signal.SIGTERM
    interval: float = 1.0  # seconds between looks at the folder while the child runs
    settle: float = 0.5  # a folder is synced once no file changed for this long
    margin: float = 2.0  # before a known deadline: kill a child still running, keep this for the sync
    notice_file: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "runner-notice.json")

    @classmethod
    def build(cls, command: Sequence[str], folder: str | None = None, signal_name: str | None = None,
              interval: float = 1.0, settle: float = 0.5, margin: float = 2.0,
              environ: Mapping[str, str] | None = None) -> ExecOptions:
        """Return options from the arguments, falling back to ``RUNNER_SYNC_DIR``/``RUNNER_NOTICE_SIGNAL``."""
        env = os.environ if environ is None else environ
        if not command:
            raise ConfigError("no command to run: put it after --, e.g. runner exec -- python train.py")
        folder = folder or env.get("RUNNER_SYNC_DIR")
        if not folder:
            raise ConfigError("no checkpoint folder to sync: pass --dir /workspace/checkpoints or set "
                              "sync.dir in the job spec (RUNNER_SYNC_DIR)")
        if not os.path.isabs(folder):
            raise ConfigError(f"checkpoint folder {folder!r} is not an absolute path: use e.g. /workspace/checkpoints")
        for name, value in (("interval", interval), ("settle", settle), ("margin", margin)):
            if not value >= 0 or (name == "interval" and value == 0):
                raise ConfigError(f"--{name} {value} must be a positive number of seconds")
        sig = parse_signal(signal_name or env.get("RUNNER_NOTICE_SIGNAL") or DEFAULT_SIGNAL)
        notice_file = env.get("RUNNER_NOTICE_FILE") or os.path.join(tempfile.gettempdir(),
                                                                    f"runner-notice-{os.getpid()}.json")
        return cls(list(command), Path(folder), sig, interval, settle, margin, Path(notice_file))


def _die_with_parent() -> None:
    """In the child, before exec: die when the wrapper dies (outside a container too)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def exit_code_of(returncode: int) -> int:
    """Map a Popen return code to a process exit code: killed by signal N -> 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class _Wrapper:
    def __init__(self, opts: ExecOptions, ctx: RunContext) -> None:
        self.opts, self.ctx = opts, ctx
        self.store = open_store(ctx.checkpoint_uri)
        self.sync = FolderSync(self.store, opts.folder, ctx.keep, opts.settle,
                               meta={"attempt": ctx.attempt, "job_id": ctx.job_id, "command": opts.command[:8]})
        self.timing: dict[str, Any] = {"started_at": time.time()}
        self.history: dict[str, Any] = {}
        self._stop_syncing = threading.Event()
        self._last_warning = 0.0

    def run(self) -> int:
        previous = read_progress(self.store) or {}
        attempts = previous.get("attempts")
        if isinstance(attempts, dict):
            self.history = {k: v for k, v in attempts.items() if isinstance(v, dict) and k != str(self.ctx.attempt)}
        self.history[str(self.ctx.attempt)] = self.timing
        step = self.sync.restore()
        self.timing.update(loaded_at=time.time(), resumed_from=step)
        if step is None:
            log.info("no snapshot at %s: %s starts empty (attempt %d)", self.ctx.checkpoint_uri,
                     self.opts.folder, self.ctx.attempt)
        self._clear_stale(self.ctx.halt_file, "halt file")
        self._clear_stale(str(self.opts.notice_file), "notice file")
        with NoticeWatcher(self.ctx.notice, self.ctx.metadata_url, self.ctx.halt_file,
                           halt_uri=self.ctx.checkpoint_uri) as notices:
            child = self._start_child()
            syncer = threading.Thread(target=self._sync_loop, name="runner-exec-sync", daemon=True)
            syncer.start()
            try:
                notice = self._supervise(child, notices)
            except KeyboardInterrupt:
                child.kill()
                child.wait()
                raise
            finally:
                self._stop_syncing.set()
                syncer.join()
            code = exit_code_of(child.returncode)
            log.info("%s exited with %d%s", self.opts.command[0], code,
                     " after the notice" if notice is not None else "")
            committed = self._final_sync("preempted" if notice is not None else "done" if code == 0 else "failed")
            if notice is None:
                if not committed and code == 0:
                    log.error("the command finished but its folder could not be saved; exiting %d", EXIT_FAILED)
                    return EXIT_FAILED
                return code
            if not committed:
                log.error("the child stopped after the notice but the final sync failed; exiting %d", EXIT_FAILED)
                return EXIT_FAILED
            notices.acknowledge()
            if notice.source == "halt-file" and self.ctx.halt_file:
                self._clear_stale(self.ctx.halt_file, "")
            log.info("folder committed as step %s %.2f s after the notice; exiting %d", self.sync.last_step,
                     time.monotonic() - notice.received_at, EXIT_PREEMPTED)
            return EXIT_PREEMPTED

    def _start_child(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "RUNNER_SYNC_DIR": str(self.opts.folder),
               "RUNNER_NOTICE_FILE": str(self.opts.notice_file),
               "RUNNER_NOTICE_SIGNAL": self.opts.signal.name}
        try:
            child = subprocess.Popen(self.opts.command, env=env, preexec_fn=_die_with_parent)  # noqa: PLW1509
        except FileNotFoundError:
            raise ConfigError(f"command {self.opts.command[0]!r} not found: check the image's PATH "
                              "or give the full path after --") from None
        except PermissionError:
            raise ConfigError(f"command {self.opts.command[0]!r} is not executable: chmod +x it "
                              "or run it through its interpreter") from None
        self.timing["first_step_at"] = time.time()
        log.info("started %s (pid %d); syncing %s to %s", " ".join(self.opts.command), child.pid,
                 self.opts.folder, self.ctx.checkpoint_uri)
        return child

    def _supervise(self, child: subprocess.Popen[bytes], notices: NoticeWatcher) -> Notice | None:
        """Wait for the child; forward the first notice; kill it when a known deadline is near."""
        forwarded: Notice | None = None
        kill_at: float | None = None
        while child.poll() is None:
            notice = notices.notice
            if notice is not None and forwarded is None:
                forwarded = notice
                left = None if notice.deadline is None else notice.deadline - time.time()
                self._write_notice_file(notice, left)
                try:
                    os.kill(child.pid, self.opts.signal)
                except ProcessLookupError:
                    pass
                log.warning("preemption notice from %s: sent %s to %s%s", notice.source, self.opts.signal.name,
                            self.opts.command[0], "" if left is None else f" ({left:.1f}s left)")
                if left is not None:
                    kill_at = time.monotonic() + max(0.0, left - self.opts.margin)
            if kill_at is not None and time.monotonic() >= kill_at:
                log.warning("%s still runs %.1fs before the deadline: killing it to save the folder in time",
                            self.opts.command[0], self.opts.margin)
                child.kill()
                kill_at = None
            if forwarded is None:
                notices.wait(0.1)
            else:
                time.sleep(0.05)
        return forwarded

    def _write_notice_file(self, notice: Notice, left: float | None) -> None:
        doc = {"source": notice.source, "detail": notice.detail, "deadline": notice.deadline,
               "seconds_left": None if left is None else round(left, 3), "signal": self.opts.signal.name,
               "written_at": time.time()}
        path = self.opts.notice_file
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("could not write the notice file %s (%s); the signal still goes out", path, exc.strerror)

    def _sync_loop(self) -> None:
        while not self._stop_syncing.wait(self.opts.interval):
            try:
                result = self.sync.sync(final=False)
            except FolderChanged as exc:
                log.debug("folder still changing (%s); trying again", exc)
                continue
            except RunnerError as exc:
                self._warn(f"sync failed: {exc}; trying again")
                continue
            except OSError as exc:
                self._warn(f"sync failed reading the folder: {exc}; trying again")
                continue
            if result.status == "committed":
                self._report(result, "running")

    def _final_sync(self, state: str) -> bool:
        for try_ in range(1, FINAL_SYNC_TRIES + 1):
            try:
                result = self.sync.sync(final=True)
            except FolderChanged as exc:  # a grandchild still writing: give it a moment
                log.warning("final sync: %s (try %d of %d)", exc, try_, FINAL_SYNC_TRIES)
                time.sleep(0.5)
                continue
            except (RunnerError, OSError) as exc:
                log.error("final sync failed: %s", exc)
                return False
            self._report(result, state)
            return True
        return False

    def _report(self, result: SyncResult, state: str) -> None:
        if result.status == "committed":
            self.timing.update(checkpoint_step=result.step, checkpoint_at=time.time())
            log.info("committed %s folder as step %d: %d files, %d bytes (%d new, %d bytes uploaded)",
                     self.opts.folder, result.step, result.files, result.bytes, result.uploaded,
                     result.uploaded_bytes)
        progress = {"task": "exec", "command": self.opts.command[:8], "state": state,
                    "step": self.sync.last_step or 0, "syncs": self.sync.syncs, "files": result.files,
                    "bytes": result.bytes, "attempt": self.ctx.attempt, "job_id": self.ctx.job_id,
                    "epoch": 0, "total_epochs": 0, "total_steps": None, "metrics": {},
                    "attempts": {k: dict(v) for k, v in self.history.items()}}
        try:
            write_progress(self.store, progress)
        except (RunnerError, OSError) as exc:
            self._warn(f"could not write progress.json: {exc}")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 60:
            self._last_warning = now
            log.warning("%s", message)
        else:
            log.debug("%s", message)

    @staticmethod
    def _clear_stale(path: str | None, what: str) -> None:
        if path and os.path.exists(path):
            if what:
                log.warning("removing a stale %s %s left by an earlier run", what, path)
            try:
                os.unlink(path)
            except OSError:
                pass


def run(opts: ExecOptions, ctx: RunContext | None = None) -> int:
    """Run the command under the contract; return the wrapper's exit code. Errors become one line."""
    try:
        return _Wrapper(opts, ctx or RunContext.from_env()).run()
    except RunnerError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m runner.exec [--dir D] [--signal S] ... -- command ...``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m runner.exec", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", help="the checkpoint folder to restore and sync (default: RUNNER_SYNC_DIR)")
    parser.add_argument("--signal", help="signal sent to the command on a notice (default: RUNNER_NOTICE_SIGNAL "
                                         "or SIGTERM)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between looks at the folder")
    parser.add_argument("--settle", type=float, default=0.5, help="sync once no file changed for this long")
    parser.add_argument("--margin", type=float, default=2.0,
                        help="seconds before a notice's deadline at which a still running command is killed")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    setup_logging()
    try:
        opts = ExecOptions.build(command, args.dir, args.signal, args.interval, args.settle, args.margin)
    except RunnerError as exc:
        log.error("%s", exc)
        return exc.exit_code
    return run(opts)


def setup_logging() -> None:
    """One line per event on stderr, as containers log; ``RUNNER_LOG_LEVEL`` changes the level."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=os.environ.get("RUNNER_LOG_LEVEL", "INFO"),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    else:
        logging.getLogger("runner").setLevel(os.environ.get("RUNNER_LOG_LEVEL", "INFO"))


__all__ = ["EXIT_DONE", "ExecOptions", "exit_code_of", "main", "parse_signal", "run"]
