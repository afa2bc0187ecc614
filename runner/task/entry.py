"""The command-line shell every task shares: common flags, logging, exit codes, no tracebacks."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from runner.errors import RunnerError
from runner.task.context import EXIT_FAILED, RunContext
from runner.task.loop import LoopOptions, TrainTask, run, setup_logging
from runner.task.staging import stage_data
from runner.task.writer import MODES

log = logging.getLogger("runner.task")


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """Add the flags every task takes."""
    parser.add_argument("--epochs", type=int, default=10, help="epochs to train (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights, data order, RNGs")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads; exact resume needs the same count (default: RUNNER_THREADS "
                             "or torch's choice)")
    parser.add_argument("--writer", choices=MODES, default="auto",
                        help="how checkpoints are written: auto (default: thread for GPU state, fork "
                             "otherwise), fork, thread, sync")
    parser.add_argument("--deterministic", action="store_true",
                        help="use deterministic kernels on GPU (slower, bit-exact)")
    parser.add_argument("--log-every", type=int, default=50, help="log a progress line every N steps")


def main(parser: argparse.ArgumentParser, build: Callable[[Any], TrainTask],
         argv: Sequence[str] | None = None) -> int:
    """Parse flags, build the task, run the shared loop; map errors to one line and an exit code."""
    imports_done_at = time.time()
    setup_logging()
    args = parser.parse_args(argv)
    try:
        if args.epochs < 1:
            parser.error("--epochs must be at least 1")
        ctx = RunContext.from_env()
        opts = LoopOptions(threads=args.threads, writer_mode=args.writer,
                           log_every=max(1, args.log_every), deterministic=args.deterministic,
                           imports_done_at=imports_done_at)
        from runner.task.loop import pin_threads

        pin_threads(opts.threads, opts.deterministic)  # before building: model init uses threads
        stage_data()  # the spec's data: prefixes in object stores, into /data/<name>
        task = build(args)
        return run(task, ctx, opts)
    except RunnerError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted before training started")
        return EXIT_FAILED


def exit_with(code: int) -> None:
    """Flush the logs and exit with ``code`` at once.

    Every checkpoint is committed (fsynced) before the loop returns, so nothing is left to
    clean up; skipping the interpreter's teardown (about 1 s with torch's CUDA build loaded)
    matters inside a 30 s notice window and for recovery latency.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
