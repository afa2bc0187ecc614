"""Run an unmodified training command under the container contract.

    runner exec --dir /workspace/checkpoints -- python train.py --epochs 3

1. Restore the newest valid snapshot of the folder from ``RUNNER_CHECKPOINT_URI`` (``sync``); a
   folder this user cannot create is one line naming it and the fix.
2. Start the command as a child process, with ``RUNNER_NOTICE_FILE`` and ``RUNNER_SYNC_DIR`` in
   its environment.
3. While it runs, commit the folder's whole files whenever no save is in progress and the folder
   stayed quiet for ``settle`` seconds; watch every notice source of the contract.
4. On a notice: write the notice file (source, deadline, seconds left); if the command is in the
   middle of a save (a file of the folder open for writing, or one changed less than ``settle``
   seconds ago: a save of several files has gaps), let the save finish first; then send
   the configured signal (``RUNNER_NOTICE_SIGNAL``, SIGTERM by default). The window ends at the
   notice's deadline, or ``RUNNER_NOTICE_WINDOW`` seconds (30) after a notice that names none. A
   command still running when only the final sync's reserve is left (at least ``margin``) is killed.
5. When the child exits: a final sync, bounded by the window's end minus 2 s (a fifth of a shorter
   window), which leaves out what a save the signal cut short wrote (the child died of a signal
   after the notice: the files changed since the signal, or since the last snapshot if it was
   still saving then); exit 75 (76 after ``runner halt``'s HALT object, ``contract.exit_after``)
   after a notice (the snapshot the final sync made, or the one before it when the window ran out:
   the log says what was lost), else the child's own exit code (128 + N when killed by signal N).
   A command that failed right after a restore without committing anything new marks the
   restored step, so the next attempt restores the one before it.

No torch, no typer: the standard library and the store's SDK. ``runner exec`` (the CLI) and
``python -m runner.exec`` both end up in :func:`run`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from runner.contract import (
    NOTICE_FILE,
    NOTICE_SIGNAL,
    SYNC_DIR,
    exit_after,
    progress_state,
)
from runner.errors import ConfigError, RunnerError
from runner.exec.openfiles import open_for_writing, process_tree
from runner.exec.options import (
    DEFAULT_SIGNAL,
    ExecOptions,
    die_with_parent,
    exit_code_of,
    parse_signal,
)
from runner.exec.sync import FolderChanged, FolderSync, SyncResult
from runner.stores import open_store
from runner.stores.base import DeadlineExceeded, StoreUnavailable
from runner.stores.deadline import exit_margin, run_bounded, window_end
from runner.task.context import EXIT_DONE, EXIT_FAILED, RunContext
from runner.task.manifest import mark_restore_failed, read_progress, write_progress
from runner.task.notices import Notice, NoticeWatcher
from runner.task.staging import stage_data

log = logging.getLogger("runner.exec")

FINAL_SYNC_TRIES = 5
#: Seconds a command gets between the signal and the kill, even when its save ran long.
SIGNAL_GRACE_S = 2.0
#: The longest pause between two files of one save that a notice waits out (or twice ``settle``).
SAVE_GAP_S = 1.0


class _Wrapper:
    def __init__(self, opts: ExecOptions, ctx: RunContext) -> None:
        self.opts, self.ctx = opts, ctx
        self.store = open_store(ctx.checkpoint_uri)
        self.sync = FolderSync(self.store, opts.folder, ctx.keep, opts.settle, open_files=open_for_writing,
                               meta={"attempt": ctx.attempt, "job_id": ctx.job_id, "command": opts.command[:8]})
        self.timing: dict[str, Any] = {"started_at": time.time()}
        self.history: dict[str, Any] = {}
        self.longest_sync = 0.0
        self.commit_by: float | None = None  # monotonic: the final sync's deadline, after a notice
        self.abandoned = False  # a store call was left running at its deadline
        #: When the notice's signal went out (``_supervise``): the folder, if it was quiet then.
        self.signalled = False
        self.at_signal: dict[str, os.stat_result] | None = None
        self._stop_syncing = threading.Event()
        self._last_warning = 0.0

    def run(self) -> int:
        try:
            return self._run()
        finally:  # the notice file means something only while the child runs: none is left in /tmp
            self._clear_stale(str(self.opts.notice_file), "")

    def _run(self) -> int:
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
        stage_data()  # the spec's data: prefixes in object stores, into /data/<name>
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
            code = exit_code_of(child.returncode)
            log.info("%s exited with %d%s", self.opts.command[0], code,
                     " after the notice" if notice is not None else "")
            synced_while_running = self.sync.syncs
            committed = self._final_sync(progress_state(notice.source) if notice is not None
                                         else "done" if code == 0 else "failed", self._torn_by_signal(child, notice))
            if notice is None:
                if code != 0 and synced_while_running == 0 and self.sync.restored_step is not None:
                    self._mark_failed_restore(code)
                if committed is not True and code == 0:
                    log.error("the command finished but its folder could not be saved; exiting %d", EXIT_FAILED)
                    return EXIT_FAILED
                return code
            if committed is False:
                log.error("the child stopped after the notice but the final sync failed; exiting %d", EXIT_FAILED)
                return EXIT_FAILED
            if committed is None:  # the window ran out (or the store stayed down): the previous snapshot stands
                log.error("the final sync did not finish before the notice window ends: what the command saved "
                          "after %s is lost; the next attempt restores %s; exiting %d",
                          self._step_name(), self._step_name(), exit_after(notice.source))
                return exit_after(notice.source)
            notices.acknowledge()
            if notice.source == "halt-file" and self.ctx.halt_file:
                self._clear_stale(self.ctx.halt_file, "")
            log.info("folder committed as step %s %.2f s after the notice; exiting %d", self.sync.last_step,
                     time.monotonic() - notice.received_at, exit_after(notice.source))
            return exit_after(notice.source)

    def _step_name(self) -> str:
        return "nothing" if self.sync.last_step is None else f"step {self.sync.last_step}"

    def _start_child(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, SYNC_DIR: str(self.opts.folder), NOTICE_FILE: str(self.opts.notice_file),
               NOTICE_SIGNAL: self.opts.signal.name}
        try:
            child = subprocess.Popen(self.opts.command, env=env, preexec_fn=die_with_parent)  # noqa: PLW1509
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
        """Wait for the child; on a notice let a save in progress finish, signal, kill when only the reserve is left."""
        forwarded: Notice | None = None
        said_waiting = False
        kill_at = signal_by = end = 0.0
        quiet_from: float | None = None  # since when no file was open, the folder still changing
        while child.poll() is None:
            notice = notices.notice
            if notice is not None and forwarded is None:
                forwarded = notice
                end = window_end(notice.received_at, notice.deadline)
                self.commit_by = end - exit_margin(end - notice.received_at)
                reserve = min(max(self.opts.margin, 2 * self.longest_sync), (end - time.monotonic()) / 2)
                kill_at = self.commit_by - reserve
                signal_by = kill_at - SIGNAL_GRACE_S
                left = None if notice.deadline is None else notice.deadline - time.time()
                self._write_notice_file(notice, left)
                log.warning("preemption notice from %s (%.1f s left in the window): %s gets %s, and is killed "
                            "%.1f s before the window ends if it still runs", notice.source, end - time.monotonic(),
                            self.opts.command[0], self.opts.signal.name, end - kill_at)
            if forwarded is not None and not self.signalled:
                saving = self.sync.saving(process_tree(child.pid))  # a log held open for long does not count
                # A save of several files pauses between them: a folder changed less than `settle` ago may be
                # in one, for a gap's length at most (a script that saves every second never settles).
                unsettled = [] if saving else self.sync.unsettled()
                quiet_from = None if saving or not unsettled else quiet_from or time.monotonic()
                in_gap = quiet_from is not None and time.monotonic() - quiet_from < max(SAVE_GAP_S, 2 * self.opts.settle)
                busy = saving or (unsettled if in_gap else [])
                if busy and time.monotonic() < signal_by:
                    if not said_waiting:
                        said_waiting = True
                        log.info("%s %s being written: letting the save finish before the signal",
                                 _some(busy), "is" if len(busy) == 1 else "are")
                else:
                    self.signalled = True
                    # What a save started after this point wrote is torn if the signal kills it; in a save
                    # (a file open for writing, the folder still changing), what it wrote before too.
                    self.at_signal = None if saving or unsettled else self.sync.scan()
                    try:
                        os.kill(child.pid, self.opts.signal)
                    except ProcessLookupError:
                        pass
                    log.info("sent %s to %s", self.opts.signal.name, self.opts.command[0])
            if forwarded is not None and time.monotonic() >= kill_at:
                log.warning("%s still runs %.1f s before the window ends: killing it to save the folder in time",
                            self.opts.command[0], end - time.monotonic())
                child.kill()
                child.wait()
                break
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
            started = time.monotonic()
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
                self.longest_sync = max(self.longest_sync, time.monotonic() - started)
                self._report(result, "running")

    def _torn_by_signal(self, child: subprocess.Popen[bytes], notice: Notice | None) -> dict[str, str]:
        """After a notice, when a signal killed the command (it did not handle it, or it was killed at the
        deadline): the files it wrote after the signal, or since the last snapshot if it was saving when
        the signal went out. A save of several files (a ``checkpoint-N/`` folder) cut there is not whole."""
        if notice is None or child.returncode is None or child.returncode >= 0:
            return {}
        try:
            if self.signalled:
                torn = sorted(self.sync.changed_since(self.at_signal))
            else:  # killed before the signal went out (a signal sent to every process): saving then?
                torn = sorted(self.sync.changed_since(None)) if self.sync.unsettled() else []
        except OSError as exc:
            log.warning("could not look at %s after the command was killed (%s)", self.opts.folder, exc)
            return {}
        if not torn:
            return {}
        try:
            how = signal.Signals(-child.returncode).name
        except ValueError:
            how = f"signal {-child.returncode}"
        since = "the signal" if self.at_signal is not None else "the last snapshot"
        log.warning("%s was killed by %s while it was saving: not committing the %d file%s it wrote since %s (%s); "
                    "the snapshot keeps their last good versions", self.opts.command[0], how, len(torn),
                    "" if len(torn) == 1 else "s", since, _some(torn))
        return dict.fromkeys(torn, f"written by a save that {how} cut short")

    def _final_sync(self, state: str, hold: dict[str, str] | None = None) -> bool | None:
        """Sync once more; True when done, None when the notice window ran out or the store stayed down."""
        for try_ in range(1, FINAL_SYNC_TRIES + 1):
            try:
                if self.commit_by is None:
                    result = self.sync.sync(final=True, hold=hold)
                else:
                    with self.store.deadline_at(self.commit_by):
                        result = run_bounded(lambda: self.sync.sync(final=True, hold=hold), self.commit_by,
                                             "the final sync")
            except FolderChanged as exc:  # a process still writing: give it a moment
                log.warning("final sync: %s (try %d of %d)", exc, try_, FINAL_SYNC_TRIES)
                time.sleep(0.5)
                continue
            except StoreUnavailable as exc:
                log.error("final sync failed: %s", exc)
                self.abandoned = isinstance(exc, DeadlineExceeded)
                return None if self.commit_by is not None else False
            except (RunnerError, OSError) as exc:
                log.error("final sync failed: %s", exc)
                return False
            self._report(result, state)
            return True
        return False

    def _mark_failed_restore(self, code: int) -> None:
        steps = sorted({s for s in (self.sync.restored_step, self.sync.last_step) if s is not None})
        try:
            for step in steps:
                mark_restore_failed(self.store, step, {"attempt": self.ctx.attempt, "exit_code": code})
        except (RunnerError, OSError) as exc:
            log.warning("could not mark step %s as failing: %s", steps, exc)
            return
        log.warning("the command failed (exit %d) right after step %d was restored and saved nothing new: "
                    "the next attempt restores the step before it", code, self.sync.restored_step)

    def _report(self, result: SyncResult, state: str) -> None:
        if result.status == "committed":
            self.timing.update(checkpoint_step=result.step, checkpoint_at=time.time())
            log.info("committed %s folder as step %d: %d files, %d bytes (%d new, %d bytes uploaded)%s",
                     self.opts.folder, result.step, result.files, result.bytes, result.uploaded,
                     result.uploaded_bytes, f"; held back: {', '.join(sorted(result.held))}" if result.held else "")
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


def _some(names: list[str]) -> str:
    """The first three names, and how many more."""
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def run(opts: ExecOptions, ctx: RunContext | None = None) -> int:
    """Run the command under the contract; return the wrapper's exit code. Errors become one line.

    When the final sync was abandoned at the end of a notice window, the process exits here at
    once (``os._exit``): the SDK's own worker threads, still uploading, would otherwise hold the
    interpreter's exit past the window.
    """
    try:
        wrapper = _Wrapper(opts, ctx or RunContext.from_env())
        code = wrapper.run()
        if wrapper.abandoned:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
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
                        help="seconds kept for the final sync at least, before the notice window ends")
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


__all__ = ["DEFAULT_SIGNAL", "EXIT_DONE", "ExecOptions", "exit_code_of", "main", "parse_signal", "run"]
