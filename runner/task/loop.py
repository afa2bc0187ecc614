"""The training loop every task shares: resume, train, checkpoint, heed notices, finish.

A task supplies its model, data and one training step (:class:`TrainTask`); this loop owns the
contract: the exact position (epoch, batch inside the epoch, global step), every RNG, when to
checkpoint, what a notice does, the progress files, the final result and the exit code.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from runner.contract import exit_after, progress_state
from runner.errors import ConfigError, RunnerError
from runner.stores import open_store
from runner.stores.base import StoreUnavailable
from runner.stores.deadline import commit_deadline
from runner.task import checkpoint as ck
from runner.task.context import EXIT_DONE, EXIT_FAILED, RunContext
from runner.task.interval import CheckpointCost, auto_interval, from_env
from runner.task.notices import Notice, NoticeWatcher
from runner.task.state import capture_rng, restore_rng, weights_sha256
from runner.task.writer import CheckpointWriter

log = logging.getLogger("runner.task")
AUTO_INTERVAL_S = 60.0  # ``every: auto`` until the first checkpoint has measured its cost


class TrainTask(Protocol):
    """What a task gives the loop. ``batches`` must be a pure function of (epoch, start)."""

    name: str
    epochs: int

    def config(self) -> dict[str, Any]: ...  # settings a resume must share (seed, batch size...)
    def steps_per_epoch(self) -> int: ...
    def batches(self, epoch: int, start: int) -> Iterator[Any]: ...
    def train_step(self, batch: Any) -> float: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def evaluate(self) -> dict[str, float]: ...
    def weights(self) -> dict[str, torch.Tensor]: ...


class ModelState:
    """The state most tasks share: ``model``, ``optimizer``, ``scheduler`` and, if set, ``amp``
    (a grad scaler wrapper with state_dict/load_state_dict). Inherit it to get the three methods."""

    model: torch.nn.Module
    optimizer: Any
    scheduler: Any
    amp: Any = None

    def state_dict(self) -> dict[str, Any]:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict()}
        if self.amp is not None:
            state["scaler"] = self.amp.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.amp is not None:
            self.amp.load_state_dict(state.get("scaler", {}))

    def weights(self) -> dict[str, torch.Tensor]:
        """The final weights on the CPU, in plain row-major layout, the same shapes as trained."""
        return {k: v.detach().cpu().clone(memory_format=torch.contiguous_format)
                for k, v in self.model.state_dict().items()}


@dataclass
class LoopOptions:
    """How the loop runs, beyond the contract's environment."""

    threads: int | None = None
    writer_mode: str = "auto"
    log_every: int = 50
    deterministic: bool = False
    imports_done_at: float | None = None


def _process_started_at() -> float:
    from runner import tasks

    return float(getattr(tasks, "PROCESS_STARTED_AT", time.time()))


@dataclass
class _Position:
    epoch: int = 0
    batch: int = 0  # next batch inside ``epoch``
    step: int = 0   # global steps done
    losses: list[float] = field(default_factory=list)


def setup_logging() -> None:
    """Log one line per event to stderr, as containers do."""
    logging.basicConfig(level=os.environ.get("RUNNER_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def pin_threads(threads: int | None, deterministic: bool) -> int:
    """Pin the CPU thread count (exactness depends on it) and, if asked, deterministic kernels."""
    n = threads or int(os.environ.get("RUNNER_THREADS", "0") or 0) or torch.get_num_threads()
    torch.set_num_threads(n)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    return n


def run(task: TrainTask, ctx: RunContext, opts: LoopOptions) -> int:
    """Train ``task`` to the end or to a notice; return the contract's exit code."""
    try:
        return _Loop(task, ctx, opts).run()
    except RunnerError as exc:
        log.error("%s", exc)
        return exc.exit_code


class _Loop:
    def __init__(self, task: TrainTask, ctx: RunContext, opts: LoopOptions) -> None:
        self.task, self.ctx, self.opts = task, ctx, opts
        self.threads = pin_threads(opts.threads, opts.deterministic)
        self.store = open_store(ctx.checkpoint_uri)
        self.pos = _Position()
        self.steps_per_epoch = task.steps_per_epoch()
        self.total_steps = self.steps_per_epoch * task.epochs
        self.history: dict[str, dict[str, Any]] = {}  # per attempt: timings, for goodput figures
        self.timing: dict[str, Any] = {"started_at": _process_started_at(), "imports_done_at": opts.imports_done_at,
                                       "built_at": time.time()}  # task (data, model) built; next: load

    # -- phases ---------------------------------------------------------------------------
    def run(self) -> int:
        final = ck.load_final(self.store)
        if final is not None:
            log.info("%s is already finished (weights sha256 %s); nothing to do",
                     self.ctx.checkpoint_uri, final.get("weights_sha256", "?"))
            return EXIT_DONE
        self._resume()
        self._load_history()
        self._clear_stale_halt_file()
        writer = CheckpointWriter(self.ctx.checkpoint_uri, self.ctx.keep, self.opts.writer_mode)
        with NoticeWatcher(self.ctx.notice, self.ctx.metadata_url, self.ctx.halt_file,
                           halt_uri=self.ctx.checkpoint_uri) as notices:
            notice = self._train(writer, notices)
            if notice is not None:
                return self._parachute(writer, notices, notice)
        writer.flush()
        return self._finish()

    def _resume(self) -> None:
        loaded = ck.load_latest(self.store)
        if loaded is None:
            log.info("starting %s from scratch at %s (attempt %d, %d threads)", self.task.name,
                     self.ctx.checkpoint_uri, self.ctx.attempt, self.threads)
            return
        meta, state = loaded.manifest, loaded.state
        saved_config = meta.get("config", {})
        if saved_config != self.task.config():
            diff = sorted(k for k in set(saved_config) | set(self.task.config())
                          if saved_config.get(k) != self.task.config().get(k))
            raise ConfigError(
                f"the checkpoint at {self.ctx.checkpoint_uri} was made with other settings "
                f"({', '.join(f'{k}={saved_config.get(k)!r}' for k in diff)}): run with the same "
                "settings or use a new checkpoint URI")
        if meta.get("threads") != self.threads:
            log.warning("resuming with %d CPU threads where the checkpoint used %s: the result "
                        "may differ in the last bits; set RUNNER_THREADS=%s for an exact resume",
                        self.threads, meta.get("threads"), meta.get("threads"))
        self.task.load_state_dict(state["task"])
        restore_rng(state["rng"])
        pos = state["position"]
        self.pos = _Position(int(pos["epoch"]), int(pos["batch"]), int(pos["step"]))
        log.info("resuming %s from step %d (epoch %d, batch %d of %d), attempt %d",
                 self.task.name, self.pos.step, self.pos.epoch + 1, self.pos.batch,
                 self.steps_per_epoch, self.ctx.attempt)

    def _load_history(self) -> None:
        from runner.task.manifest import read_progress

        previous = read_progress(self.store) or {}
        attempts = previous.get("attempts")
        if isinstance(attempts, dict):
            self.history = {k: v for k, v in attempts.items() if isinstance(v, dict) and k != str(self.ctx.attempt)}
        self.timing.update(resumed_from=self.pos.step, loaded_at=time.time())
        self.history[str(self.ctx.attempt)] = self.timing

    def _train(self, writer: CheckpointWriter, notices: NoticeWatcher) -> Notice | None:
        every = self.ctx.checkpoint_every
        interval = every.value if every.kind == "seconds" else AUTO_INTERVAL_S
        meter, (mtbf, coverage) = CheckpointCost(), from_env(os.environ)
        last_save = time.monotonic()
        tick, tick_step = time.monotonic(), self.pos.step
        step_end = time.monotonic()
        while self.pos.epoch < self.task.epochs:
            if self.pos.batch == 0:
                log.info("epoch %d/%d", self.pos.epoch + 1, self.task.epochs)
            for batch in self.task.batches(self.pos.epoch, self.pos.batch):
                self.pos.losses.append(self.task.train_step(batch))
                now = time.monotonic()
                meter.step(now - step_end, writer.busy())
                step_end = now
                if "first_step_at" not in self.timing:
                    self.timing["first_step_at"] = time.time()
                self.pos.batch += 1
                self.pos.step += 1
                epoch_end = self.pos.batch >= self.steps_per_epoch
                if epoch_end:
                    self.pos.epoch, self.pos.batch = self.pos.epoch + 1, 0
                notice = notices.notice
                if notice is not None:
                    return notice
                due = (epoch_end and every.kind in ("epoch", "auto", "seconds")) or (
                    every.kind == "steps" and self.pos.step % int(every.value) == 0) or (
                    every.kind in ("seconds", "auto") and time.monotonic() - last_save >= interval)
                if due and (every.kind == "steps" or epoch_end or not writer.busy()):
                    notice, waited = self._wait_for_writer(writer, notices)
                    if notice is not None:  # it came while the previous write was still in flight
                        return notice
                    self._log_checkpoint()
                    stall = waited + writer.submit(self.pos.step, self._state(), self._meta("running"))
                    log.info("checkpoint at step %d handed to the %s writer (loop stalled %.1f ms)",
                             self.pos.step, writer.mode, stall * 1000)
                    meter.checkpoint(stall)
                    self.timing.update(stall_s=round(meter.stall_s, 6), checkpoints=meter.checkpoints)
                    if every.kind == "auto" and meter.cost_s is not None:
                        interval = self._auto_interval(interval, meter.cost_s, mtbf, coverage)
                    last_save = step_end = time.monotonic()
                elif due:  # the next checkpoint is due and the last one is still being written: late
                    writer.hurry()
                if self.pos.step % self.opts.log_every == 0:
                    now = time.monotonic()
                    rate = (self.pos.step - tick_step) / max(now - tick, 1e-9)
                    log.info("step %d/%d loss %s (%.1f steps/s)", self.pos.step, self.total_steps,
                             self._mean_loss(), rate)
                    tick, tick_step = now, self.pos.step
                if epoch_end:
                    self.pos.losses.clear()
                    break
        return None

    @staticmethod
    def _wait_for_writer(writer: CheckpointWriter, notices: NoticeWatcher) -> tuple[Notice | None, float]:
        """Wait for the write in flight while watching for a notice (a slow store must not hide one)."""
        start = time.perf_counter()
        writer.hurry()  # waited for now: no longer yields to training (no-op when nothing is in flight)
        while writer.busy():
            if notices.wait(0.05) is not None:
                return notices.notice, time.perf_counter() - start
        return None, time.perf_counter() - start

    def _log_checkpoint(self) -> None:
        """Keep (time, step) of this attempt's checkpoints for the report's timeline, thinned past 200."""
        marks = self.timing.setdefault("checkpoint_log", [])
        marks.append([round(time.time(), 3), self.pos.step])
        if len(marks) > 200:
            del marks[1:-1:2]

    def _auto_interval(self, current: float, cost_s: float, mtbf: float, coverage: float) -> float:
        chosen = auto_interval(cost_s, mtbf, coverage)
        self.timing.update(checkpoint_cost_s=round(cost_s, 6), interval_s=round(chosen, 3))
        if abs(chosen - current) > 0.1 * current:
            log.info("every: auto -> a checkpoint every %.0f s (Young-Daly: checkpoint cost %.3f s, "
                     "MTBF %.0f min, notice coverage %.2f)", chosen, cost_s, mtbf / 60, coverage)
        return chosen

    def _parachute(self, writer: CheckpointWriter, notices: NoticeWatcher, notice: Notice) -> int:
        commit_by = commit_deadline(notice.received_at, notice.deadline)
        log.warning("preemption notice from %s%s: saving step %d and stopping (%.1f s to commit)", notice.source,
                    f" ({notice.detail})" if notice.detail else "", self.pos.step, commit_by - time.monotonic())
        self.timing.update(notice_at=round(time.time() - (time.monotonic() - notice.received_at), 3),
                           notice_source=notice.source)
        try:
            writer.submit(self.pos.step, self._state(), self._meta(progress_state(notice.source)), urgent=True,
                          deadline=commit_by)
        except StoreUnavailable as exc:  # the window ran out, or the store stayed down: keep what is committed
            kept = max(writer.last_committed or 0, int(self.timing.get("resumed_from") or 0))
            log.error("could not commit step %d before the notice window ends (%s): steps %d-%d are lost and the "
                      "next attempt resumes from %s; exiting %d", self.pos.step, exc, kept + 1, self.pos.step,
                      f"step {kept}" if kept else "the start", exit_after(notice.source))
            return exit_after(notice.source)
        except RunnerError as exc:
            log.error("could not commit a checkpoint after the notice: %s", exc)
            return EXIT_FAILED
        notices.acknowledge()
        if notice.source == "halt-file" and self.ctx.halt_file:
            try:
                os.unlink(self.ctx.halt_file)
            except OSError:
                pass
        code = exit_after(notice.source)
        log.info("checkpoint at step %d committed %.2f s after the notice; exiting %d",
                 self.pos.step, time.monotonic() - notice.received_at, code)
        return code

    def _finish(self) -> int:
        log.info("training done after %d steps; evaluating", self.pos.step)
        metrics = self.task.evaluate()
        weights = self.task.weights()
        sha = weights_sha256(weights)
        meta = {"task": self.task.name, "weights_sha256": sha, "metrics": metrics,
                "step": self.pos.step, "epochs": self.task.epochs, "config": self.task.config(),
                "threads": self.threads, "attempt": self.ctx.attempt}
        ck.save_final(self.store, weights, meta)
        from runner.task.manifest import write_progress

        write_progress(self.store, self._progress("done") | {"metrics": metrics, "weights_sha256": sha})
        log.info("finished: %s; final weights sha256 %s",
                 ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()), sha)
        return EXIT_DONE

    # -- helpers --------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {"task": self.task.state_dict(), "rng": capture_rng(),
                "position": {"epoch": self.pos.epoch, "batch": self.pos.batch, "step": self.pos.step}}

    def _meta(self, state: str) -> dict[str, Any]:
        return {"task": self.task.name, "epoch": self.pos.epoch, "config": self.task.config(),
                "threads": self.threads, "attempt": self.ctx.attempt, "torch": torch.__version__,
                "progress": self._progress(state)}

    def _progress(self, state: str) -> dict[str, Any]:
        self.timing.update(checkpoint_step=self.pos.step, checkpoint_at=time.time())
        return {"attempts": {k: dict(v) for k, v in self.history.items()}, "task": self.task.name,
                "state": state, "epoch": self.pos.epoch, "total_epochs": self.task.epochs, "step": self.pos.step,
                "total_steps": self.total_steps, "attempt": self.ctx.attempt,
                "job_id": self.ctx.job_id, "metrics": {"loss": self._mean_loss()}}

    def _mean_loss(self) -> float | None:
        recent = self.pos.losses[-self.opts.log_every:]
        return round(float(sum(recent) / len(recent)), 6) if recent else None

    def _clear_stale_halt_file(self) -> None:
        if self.ctx.halt_file and os.path.exists(self.ctx.halt_file):
            log.warning("removing a stale halt file %s left by an earlier attempt", self.ctx.halt_file)
            try:
                os.unlink(self.ctx.halt_file)
            except OSError:
                pass
