"""Asynchronous checkpoint writing: the training loop stops only to hand the state over.

Modes:
- ``auto`` (default): ``thread`` when the state lives on a GPU, else ``fork``. Measured on an
  H100 with a ResNet-50 state: fork stalls 179 ms (forking a process that holds a CUDA context),
  thread 34 ms (the device-to-host copy), sync 475 ms.
- ``fork`` (CPU): ``os.fork()`` gives a child a copy-on-write view of memory at that
  instant; the child (at nice ``WRITER_NICE``, killed with its parent) writes and exits. The loop
  stalls only for the fork (and the device-to-host copy on GPU). No GIL contention.
- ``thread``: the state is cloned to CPU memory and a background thread writes it.
- ``sync``: written inline; the baseline the benchmark compares against.

Why the forked writer is niced (``WRITER_NICE``), not ``SCHED_IDLE`` as it was: an idle-class
process gets about 0.3 % of a CPU while anything else in its scheduling group is busy (measured
here: 0.5 s of CPU took 58 s beside four busy processes). Beside CPU-bound neighbours (data-loader
workers, a build, other work in the same session) a 370 KB upload waited 44 s and more, the loop
stalled as long at the next checkpoint, and a writer killed at a notice's deadline took 13 s more
to die, past the window. Leaving ``SCHED_IDLE`` or lowering a nice value needs ``CAP_SYS_NICE``,
which a Docker container lacks by default, so it could not be sped up there. At nice 10 the child
still yields to training (weight 110 against 1024), keeps about a tenth of a CPU against each busy
neighbour, and dies at once when killed; ``benchmarks/checkpoint_stall.py`` measures that it costs
training no more time per checkpoint than ``SCHED_IDLE`` did (a child that lives longer makes
training take more copy-on-write faults). When the loop waits for it, a checkpoint comes due while
it still writes, or a notice comes, every thread of the child is set back to nice 0 where the
process may (``CAP_SYS_NICE``: root outside a container).

One write is in flight at a time; a new one waits for the previous (that wait counts as stall).

After a notice (``urgent``) every wait has a deadline, the notice window's end minus a margin
(``runner.stores.deadline``): the write in flight gets until then, and so does the notice's own
step; a write still running at the deadline is abandoned (a forked writer is killed) and
:class:`~runner.stores.base.DeadlineExceeded` says so. Abandoning is safe: a step counts only
once its manifest, written last, exists, so the previous step stays the newest committed one.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from runner.errors import StoreError
from runner.stores import open_store
from runner.stores.base import DeadlineExceeded, StoreUnavailable
from runner.stores.deadline import run_bounded
from runner.task.checkpoint import write_step
from runner.task.state import to_cpu

log = logging.getLogger("runner.writer")
MODES = ("auto", "fork", "thread", "sync")
#: The forked writer's nice value: weight 110 against 1024 for a busy neighbour at nice 0.
WRITER_NICE = 10
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


class CheckpointWriter:
    """Write checkpoints of one job in the background, one at a time."""

    def __init__(self, uri: str, keep: int, mode: str = "fork") -> None:
        if mode not in MODES:
            raise ValueError(f"checkpoint writer mode {mode!r}: use one of {MODES}")
        if mode in ("fork", "auto") and not hasattr(os, "fork"):
            mode = "thread"
        self.uri, self.keep, self.mode = uri, keep, mode
        self.store = open_store(uri)
        self.last_committed: int | None = None
        self.stall_seconds: list[float] = []
        self._pending: int | None = None
        self._pid: int | None = None
        self._hurried: int | None = None  # the writer pid hurry() last set back to nice 0
        self._pipe: int | None = None
        self._thread: threading.Thread | None = None
        self._error: str | None = None
        self._thread_error: str | None = None

    # -- public ---------------------------------------------------------------------------
    def submit(self, step: int, state: dict[str, Any], meta: dict[str, Any], urgent: bool = False,
               deadline: float | None = None) -> float:
        """Start writing ``state`` as ``step``; return how long the caller was stalled.

        ``urgent`` (a preemption notice): finish what is in flight at normal priority, then write
        inline, so nothing competing for the CPU can push the commit past the notice window;
        ``deadline`` (``time.monotonic()``) bounds both, raising DeadlineExceeded when it passes.
        """
        start = time.perf_counter()
        if self.mode == "auto":
            self.mode = "thread" if _on_gpu(state) else "fork"
        if urgent:
            in_flight = self._pending
            try:
                self.flush(urgent=True, deadline=deadline)
            except DeadlineExceeded:
                raise
            except StoreError as exc:  # the older step is lost; the notice's step is what matters now
                log.warning("the checkpoint of step %s failed (%s); writing step %d now", in_flight, exc, step)
        else:
            self.flush()
        if self.mode == "sync" or urgent:
            self._pending = step
            try:
                if deadline is None:
                    self._run(step, state, meta)
                else:
                    with self.store.deadline_at(deadline):
                        run_bounded(lambda: self._run(step, state, meta), deadline, f"committing step {step}")
            except Exception as exc:  # a full disk, a store gone: one line, the last step intact
                self._pending = None
                cls = type(exc) if isinstance(exc, StoreUnavailable) else StoreError
                raise cls(f"writing a checkpoint to {self.store.describe()} failed: {_describe(exc)}") from exc
            self._done(None)
        elif self.mode == "thread":
            snapshot = to_cpu(state, clone=True)
            self._pending = step
            self._thread = threading.Thread(target=self._thread_main, args=(step, snapshot, meta),
                                            name=f"ckpt-writer-{step}", daemon=True)
            self._thread.start()
        else:
            snapshot = to_cpu(state)  # device tensors come to the host; CPU ones are shared COW
            self._pending = step
            self._fork(step, snapshot, meta)
        stall = time.perf_counter() - start
        self.stall_seconds.append(stall)
        return stall

    def busy(self) -> bool:
        """Return whether a write is in flight (reaping a finished one)."""
        if self._pending is None:
            return False
        if self.mode == "fork" and self._pid is not None:
            pid, status = os.waitpid(self._pid, os.WNOHANG)
            if pid == 0:
                return True
            self._reap(status)
            return False
        if self.mode == "thread" and self._thread is not None and self._thread.is_alive():
            return True
        self._finish_thread()
        return False

    def hurry(self) -> None:
        """Run the write in flight at normal priority: the loop waits for it, or a notice came.
        Once per write: the loop may ask on every step while a checkpoint is overdue."""
        if self.mode == "fork" and self._pid is not None and self._hurried != self._pid:
            _normal_priority(self._pid)
            self._hurried = self._pid

    def flush(self, urgent: bool = False, deadline: float | None = None) -> int | None:
        """Wait for the write in flight; raise StoreError if it failed; return the last step.

        With a ``deadline`` (``time.monotonic()``), a write still running then is abandoned (a forked
        writer killed) and DeadlineExceeded raised: its step is not committed.
        """
        if self._pending is not None:
            if self.mode == "fork" and self._pid is not None:
                self.hurry()  # the caller is waiting for it now
                self._reap(self._wait_child(deadline))
            elif self.mode == "thread" and self._thread is not None:
                self._thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
                if self._thread.is_alive():  # it sees the store's deadline too and gives up on its own
                    step, self._thread, self._pending = self._pending, None, None
                    raise DeadlineExceeded(f"the checkpoint of step {step} was still being written at the deadline")
                self._finish_thread()
        if self._error:
            error, self._error = self._error, None
            raise StoreError(f"writing a checkpoint to {self.store.describe()} failed: {error}")
        return self.last_committed

    def _wait_child(self, deadline: float | None) -> int:
        """Return the forked writer's wait status; past ``deadline`` kill it and raise DeadlineExceeded."""
        assert self._pid is not None
        while deadline is not None:
            pid, status = os.waitpid(self._pid, os.WNOHANG)
            if pid:
                return status
            if time.monotonic() >= deadline:
                self.hurry()  # a niced child scheduled late would die late
                os.kill(self._pid, signal.SIGKILL)
                os.waitpid(self._pid, 0)
                step, self._pending, self._pid = self._pending, None, None
                if self._pipe is not None:
                    os.close(self._pipe)
                    self._pipe = None
                raise DeadlineExceeded(f"the checkpoint of step {step} was still being written at the deadline")
            time.sleep(0.01)
        return os.waitpid(self._pid, 0)[1]

    # -- internals ------------------------------------------------------------------------
    def _run(self, step: int, state: dict[str, Any], meta: dict[str, Any], store: Any = None) -> None:
        write_step(store or self.store, step, state, meta, self.keep)

    def _done(self, error: str | None) -> None:
        if error is None:
            self.last_committed = self._pending
        else:
            self._error = error
        self._pending = None

    def _thread_main(self, step: int, state: dict[str, Any], meta: dict[str, Any]) -> None:
        try:
            self._run(step, state, meta)
            self._thread_error = None
        except Exception as exc:  # reported to the training loop by flush()
            self._thread_error = _describe(exc)

    def _finish_thread(self) -> None:
        if self._thread is not None:
            self._thread = None
            self._done(self._thread_error)

    def _fork(self, step: int, state: dict[str, Any], meta: dict[str, Any]) -> None:
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # child: write, report, leave without running any parent cleanup
            code = 1
            try:
                os.close(read_fd)
                _die_with_parent()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _yield_cpu()
                self._run(step, state, meta, store=open_store(self.uri))
                code = 0
            except BaseException as exc:  # noqa: BLE001 - reported through the pipe
                os.write(write_fd, _describe(exc).encode()[:4000])
            finally:
                os._exit(code)
        os.close(write_fd)
        self._pid, self._pipe = pid, read_fd

    def _reap(self, status: int) -> None:
        message = b""
        if self._pipe is not None:
            while chunk := os.read(self._pipe, 4096):
                message += chunk
            os.close(self._pipe)
        self._pid, self._pipe = None, None
        code = os.waitstatus_to_exitcode(status)
        if code == 0:
            self._done(None)
        else:
            self._done(message.decode(errors="replace") or f"writer process ended with {code}")


def _on_gpu(obj: Any) -> bool:
    """Return whether any tensor in a nested structure lives on a device other than the CPU."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.device.type != "cpu"
    if isinstance(obj, dict):
        return any(_on_gpu(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_on_gpu(v) for v in obj)
    return False


def _yield_cpu() -> None:
    """Yield to training (nice ``WRITER_NICE``) without starving: see the module's docstring."""
    try:
        os.nice(WRITER_NICE)
    except OSError:
        pass


def _normal_priority(pid: int) -> None:
    """Set every thread of ``pid`` back to nice 0 where allowed (``CAP_SYS_NICE``); else leave it."""
    try:
        threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        threads = [pid]
    for tid in threads:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) > 0:
                os.setpriority(os.PRIO_PROCESS, tid, 0)
        except OSError:  # not permitted (a container without CAP_SYS_NICE), or the thread ended
            pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename or type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"
