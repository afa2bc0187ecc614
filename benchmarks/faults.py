"""The fault table: inject faults into checkpointing, stores, notices and the control plane; count losses.

    python benchmarks/faults.py [--quick] [--only CASE] [--seed N] [--markdown]

Runs every registered fault case and prints one row per case: trials, losses, notes. A loss is
work the runner lost or could have lost: the next load is not the newest committed step, a
corrupt or half-committed step is returned, or an error escaped as a traceback instead of one
clear line. Exits 1 if any case lost anything (or failed to run), 0 otherwise. ``--quick`` is the
CI-sized subset (``tests/faults/test_fault_table.py`` runs it under pytest); ``make faults`` runs
the full table, whose output is kept in docs/faults.md.

Adding a case (another file, another engineer): write a function that takes a
:class:`FaultContext` and returns a list of :class:`Row` (or plain ``(case, trials, losses, notes)``
tuples), then add one line ``("group-name", "package.module:function")`` to ``REGISTRY`` below.
The module is imported only when its group runs. The function should:

- run fewer trials when ``ctx.quick`` (CI: the whole quick table stays within a few minutes on
  2 cores) and draw its randomness from ``ctx.rng(name)`` so that ``--seed`` reproduces a run;
- get a running cloud emulator from ``ctx.emulator("s3" | "gs" | "az")`` (started once, shared,
  stopped at the end; ``.env`` holds the variables a client needs) and scratch space from
  ``ctx.workdir``;
- count a trial as a loss rather than raise; raise :class:`CaseUnavailable` (one line) when the
  machine cannot run it (no engine, no root to mount a tmpfs): the row then reads "unavailable"
  and counts as a failure unless ``--allow-unavailable``.

Under pytest, ``tests/faults/test_fault_table.py`` runs the quick size of the groups named in its
``MINE`` tuple (one test each); a group added here gets a pytest test of its own, or a place there.

Helpers shared by the cases (the fault proxy, emulator start, trial runners) live in
``tests/faults/``; the cases themselves are plain functions there too.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: (group name, "module:function"): every fault case, in the order of the table.
REGISTRY: list[tuple[str, str]] = [
    ("sigkill-writer", "tests.faults.cases:sigkill_writer"),
    ("sigkill-task", "tests.faults.cases:sigkill_task"),
    ("store-faults", "tests.faults.cases:store_faults"),
    ("disk-full", "tests.faults.cases:disk_full"),
    ("notice-during-persist", "tests.faults.cases:notice_during_persist"),
    ("metadata-faults", "tests.faults.cases:metadata_faults"),
    ("watcher-kills", "tests.faults.test_watcher_faults:watcher_kills"),
    ("engine-restart", "tests.faults.test_engine_restart:engine_restart"),
]


class Row(NamedTuple):
    """One line of the table."""

    case: str
    trials: int
    losses: int
    notes: str = ""


class CaseUnavailable(Exception):
    """This machine cannot run the case (say why in one line)."""


@dataclass
class FaultContext:
    """What a case gets: the size of the run, seeded randomness, scratch space, emulators."""

    quick: bool
    seed: int
    workdir: Path
    #: kind -> a callable returning a running emulator (tests/emulators.py's Emulator)
    emulators: dict[str, Callable[[], Any]] = field(default_factory=dict)
    _started: dict[str, Any] = field(default_factory=dict)

    def rng(self, name: str) -> random.Random:
        """Return a random generator for ``name``, reproducible from ``--seed``."""
        return random.Random(f"{self.seed}:{name}")

    def emulator(self, kind: str) -> Any:
        """Return a running emulator for ``kind`` (s3, gs, az), starting it on first use."""
        if kind not in self._started:
            if kind not in self.emulators:
                raise CaseUnavailable(f"no {kind} emulator is configured")
            self._started[kind] = self.emulators[kind]()
        return self._started[kind]


def load_case(target: str) -> Callable[[FaultContext], Sequence[Row | tuple[str, int, int, str]]]:
    """Import ``module:function`` lazily."""
    module, _, name = target.partition(":")
    fn: Callable[[FaultContext], Sequence[Row | tuple[str, int, int, str]]] = getattr(
        importlib.import_module(module), name)
    return fn


def run_group(name: str, target: str, ctx: FaultContext) -> list[Row]:
    """Run one registered group; a crash or an unavailable machine becomes a row, never a traceback."""
    try:
        rows = [Row(*r) for r in load_case(target)(ctx)]
    except CaseUnavailable as exc:
        return [Row(name, 0, 0, f"unavailable: {exc}")]
    except Exception as exc:  # a crash of the harness or of the runner: one line, counted as a loss
        return [Row(name, 0, 1, f"crashed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")]
    return rows or [Row(name, 0, 0, "no trials")]


@contextlib.contextmanager
def script_emulators() -> Iterator[dict[str, Callable[[], Any]]]:
    """Emulators for a run outside pytest, stopped when the run ends."""
    from tests.faults.servers import start_emulator

    stack = contextlib.ExitStack()
    with stack:
        yield {kind: (lambda kind=kind: stack.enter_context(start_emulator(kind))) for kind in ("s3", "gs", "az")}


def cell(text: str) -> str:
    """Return ``text`` safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def render(rows: list[Row], markdown: bool) -> str:
    if markdown:
        lines = ["| case | trials | losses | notes |", "|---|---:|---:|---|"]
        lines += [f"| {cell(r.case)} | {r.trials} | {r.losses} | {cell(r.notes)} |" for r in rows]
        return "\n".join(lines)
    width = max([len(r.case) for r in rows] + [4])
    lines = [f"{'case':<{width}}  {'trials':>6}  {'losses':>6}  notes"]
    lines += [f"{r.case:<{width}}  {r.trials:>6}  {r.losses:>6}  {r.notes}" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the CI-sized subset")
    parser.add_argument("--only", action="append", default=[],
                        help="run only groups whose name contains this (repeatable); groups: "
                             + ", ".join(n for n, _ in REGISTRY))
    parser.add_argument("--seed", type=int, default=None, help="seed for every random choice (default: random)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--allow-unavailable", action="store_true",
                        help="a case this machine cannot run does not fail the run")
    args = parser.parse_args(argv)
    groups = [(n, t) for n, t in REGISTRY if not args.only or any(o in n for o in args.only)]
    if not groups:
        parser.error(f"--only {args.only} matches no group: use one of {', '.join(n for n, _ in REGISTRY)}")
    logging.getLogger("runner").setLevel(logging.ERROR)  # the cases' expected warnings are not news
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    started = time.monotonic()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp, script_emulators() as emulators:
        ctx = FaultContext(quick=args.quick, seed=seed, workdir=Path(tmp), emulators=emulators)
        for name, target in groups:
            t0 = time.monotonic()
            print(f"== {name}", file=sys.stderr, flush=True)
            group_rows = run_group(name, target, ctx)
            for row in group_rows:
                print(f"   {row.case}: {row.trials} trials, {row.losses} losses  {row.notes}",
                      file=sys.stderr, flush=True)
            print(f"== {name}: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
            rows += group_rows
    print(render(rows, args.markdown))
    print(f"\n{'quick' if args.quick else 'full'} run, seed {seed}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
          f"{platform.node() or 'this machine'} ({platform.machine()}, {_cpus()} CPUs), "
          f"{time.monotonic() - started:.0f} s")
    lost = sum(r.losses for r in rows)
    unavailable = [r.case for r in rows if r.notes.startswith("unavailable")]
    if lost:
        print(f"FAILED: {lost} loss(es)", file=sys.stderr)
        return 1
    if unavailable and not args.allow_unavailable:
        print(f"FAILED: unavailable here: {', '.join(unavailable)}", file=sys.stderr)
        return 1
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


if __name__ == "__main__":
    sys.exit(main())
