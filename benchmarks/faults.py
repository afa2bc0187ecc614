"""The fault table: inject faults into checkpointing, stores, notices and the control plane; count losses.

    python benchmarks/faults.py [--quick] [--only CASE] [--skip CASE] [--seeds N | --seed S ...] [--markdown]
                                [--save DIR] [--load DIR ...]

Runs every registered fault case once per seed (the ``--seed`` values given and ``--seeds N``
random ones; 3 random seeds when none is given; each seed's table is printed as it ends) and prints the table over all
seeds: per case the trials and losses summed, and the spread of what it timed: the longest
single store call, the longest commit (each seed's longest, as min-max over the seeds), and how
many commits finished inside a 30 s notice window. ``--save DIR`` writes each seed's rows to
``DIR/seed-<seed>.json`` as it ends; ``--load DIR`` adds the seeds saved there to the table
(with no ``--seed``/``--seeds``, nothing new runs), so a table over many seeds can be built
over several sittings. A loss is work the runner lost or could
have lost: the next load is not the newest committed step, a corrupt or half-committed step is
returned, or an error escaped as a traceback instead of one clear line. Exits 1 if any case lost
anything (or failed to run), 0 otherwise. ``--quick`` is the CI-sized subset
(``tests/faults/test_fault_table.py`` runs it under pytest); ``make faults`` runs the full table,
whose output is kept in docs/faults.md.

Adding a case (another file, another engineer): write a function that takes a
:class:`FaultContext` and returns a list of :class:`Row` (or plain ``(case, trials, losses, notes)``
tuples), then add one line ``("group-name", "package.module:function")`` to ``REGISTRY`` below.
The module is imported only when its group runs. The function should:

- run fewer trials when ``ctx.quick`` (CI: the whole quick table stays within a few minutes on
  2 cores) and draw its randomness from ``ctx.rng(name)`` so that ``--seed`` reproduces a run;
- get a running cloud emulator from ``ctx.emulator("s3" | "gs" | "az")`` (started on first use
  in a seed, shared by its groups, stopped when the seed ends; ``.env`` holds the variables a
  client needs) and scratch space from ``ctx.workdir``;
- count a trial as a loss rather than raise; raise :class:`CaseUnavailable` (one line) when the
  machine cannot run it (no engine, no root to mount a tmpfs): the row then reads "unavailable"
  and counts as a failure unless ``--allow-unavailable``;
- put what it timed in the row's ``stats`` (:data:`STATS`): ``store_call_s`` (its longest single
  store call), ``commit_s`` (its longest commit, or notice-to-exit for a notice case),
  ``commits`` and ``commits_30s`` (how many commits it timed, and how many ended within 30 s).

Under pytest, ``tests/faults/test_fault_table.py`` runs the quick size of the groups named in its
``MINE`` tuple (one test each); a group added here gets a pytest test of its own, or a place there.

Helpers shared by the cases (the fault proxy, emulator start, trial runners) live in
``tests/faults/``; the cases themselves are plain functions there too.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
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
    ("notice-during-upload", "tests.faults.notice_cases:notice_during_upload"),
    ("exec-torn-saves", "tests.faults.exec_cases:exec_torn_saves"),
    ("metadata-faults", "tests.faults.metadata_cases:metadata_faults"),
    ("control-plane-faults", "tests.faults.control_cases:control_plane_faults"),
    ("watcher-kills", "tests.faults.test_watcher_faults:watcher_kills"),
    ("engine-restart", "tests.faults.test_engine_restart:engine_restart"),
]


#: What a row may have timed: (key, column title, how seeds combine: "max" or "sum").
STATS = (("store_call_s", "longest store call (s)", "max"), ("commit_s", "longest commit (s)", "max"),
         ("commits", "commits", "sum"), ("commits_30s", "inside 30 s", "sum"))
WINDOW_S = 30.0


class Row(NamedTuple):
    """One line of the table."""

    case: str
    trials: int
    losses: int
    notes: str = ""
    stats: dict[str, float] | None = None


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
    """Emulators for a seed of a run outside pytest, each started on first use, all stopped at the exit."""
    from tests.faults.servers import start_emulator

    stack = contextlib.ExitStack()
    with stack:
        yield {kind: (lambda kind=kind: stack.enter_context(start_emulator(kind))) for kind in ("s3", "gs", "az")}


def cell(text: str) -> str:
    """Return ``text`` safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


@dataclass
class Total:
    """One case over every seed: trials and losses summed, what it timed per seed."""

    case: str
    trials: int = 0
    losses: int = 0
    notes: str = ""
    seeds: int = 0
    per_seed: dict[str, list[float]] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.trials += row.trials
        self.losses += row.losses
        self.seeds += 1
        if not self.notes or (row.losses and "LOST" not in self.notes):
            self.notes = row.notes
        for key, value in (row.stats or {}).items():
            self.per_seed.setdefault(key, []).append(value)

    def stat(self, key: str, how: str) -> str:
        values = self.per_seed.get(key)
        if not values:
            return ""
        if how == "sum":
            return f"{sum(values):.0f}"
        low, high = min(values), max(values)
        return f"{high:.2f}" if len(values) == 1 or high - low < 0.005 else f"{low:.2f}-{high:.2f}"


def combine(tables: list[list[Row]]) -> list[Total]:
    """Sum each case over the seeds' tables, in the order the cases first appear."""
    totals: dict[str, Total] = {}
    for rows in tables:
        for row in rows:
            totals.setdefault(row.case, Total(row.case)).add(row)
    return list(totals.values())


def render(rows: list[Row] | list[Total], markdown: bool) -> str:
    """Return the table: one line per case, with the stats columns when any row has them."""
    totals = rows if rows and isinstance(rows[0], Total) else combine([rows])  # type: ignore[list-item]
    timed = [(k, t, h) for k, t, h in STATS if any(r.per_seed.get(k) for r in totals)]  # type: ignore[union-attr]
    head = ["case", "trials", "losses", *[t for _, t, _ in timed], "notes"]
    body = [[r.case, str(r.trials), str(r.losses), *[r.stat(k, h) for k, _, h in timed], r.notes]
            for r in totals]  # type: ignore[union-attr]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 2) + "---|"]
        lines += ["| " + " | ".join(cell(c) for c in line) + " |" for line in body]
        return "\n".join(lines)
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head) - 1)]
    return "\n".join("  ".join([line[0].ljust(widths[0]), *[c.rjust(w) for c, w in zip(line[1:-1], widths[1:])],
                                 line[-1]]) for line in [head, *body])


def run_seed(seed: int, groups: list[tuple[str, str]], quick: bool, workdir: Path,
             emulators: dict[str, Callable[[], Any]]) -> list[Row]:
    """Run every group once with ``seed``; print each row as it ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = FaultContext(quick=quick, seed=seed, workdir=workdir, emulators=emulators)
    rows: list[Row] = []
    for name, target in groups:
        t0 = time.monotonic()
        print(f"== seed {seed}: {name}", file=sys.stderr, flush=True)
        group_rows = run_group(name, target, ctx)
        for row in group_rows:
            stats = ", ".join(f"{k} {v:.2f}" for k, v in (row.stats or {}).items())
            print(f"   {row.case}: {row.trials} trials, {row.losses} losses  {row.notes}"
                  + (f"  [{stats}]" if stats else ""), file=sys.stderr, flush=True)
        print(f"== seed {seed}: {name}: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
        rows += group_rows
    return rows


def save_seed(folder: Path, seed: int, rows: list[Row], quick: bool, groups: list[str], seconds: float) -> Path:
    """Write one seed's rows to ``folder/seed-<seed>[-quick].json`` (atomically) and return the path.

    A seed saved already keeps its other groups: the rows of the groups run again (``--only``)
    replace theirs, and the replaced rows stay on record under ``reruns`` with when they ran.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"seed-{seed}{'-quick' if quick else ''}.json"
    now = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    doc: dict[str, Any] = {"seed": seed, "quick": quick, "groups": groups, "seconds": round(seconds),
                           "finished": now, "host": f"{platform.machine()}, {_cpus()} CPUs",
                           "rows": [row._asdict() for row in rows]}
    if path.exists():
        old = json.loads(path.read_text())
        new = {row.case: row._asdict() for row in rows}
        replaced = [r for r in old["rows"] if r["case"] in new]
        doc = {**old, "groups": [*old["groups"], *(g for g in groups if g not in old["groups"])],
               "rows": [new.pop(r["case"], r) for r in old["rows"]] + list(new.values()),
               "reruns": [*old.get("reruns", []), {"groups": groups, "finished": now, "seconds": round(seconds),
                                                   "replaced": replaced}]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)
    return path


def load_seeds(folder: Path, quick: bool) -> list[dict[str, Any]]:
    """Return the seeds saved in ``folder`` of the same size (full or quick), oldest first."""
    if not folder.is_dir():
        raise SystemExit(f"--load {folder}: no such folder (write one with --save {folder})")
    docs = []
    for path in sorted(folder.glob("seed-*.json")):
        try:
            doc = json.loads(path.read_text())
            doc["rows"] = [Row(**r) for r in doc["rows"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"--load {path}: not a saved seed ({exc}); remove it or run that seed again") from None
        if bool(doc.get("quick")) == quick:
            docs.append(doc)
    return sorted(docs, key=lambda d: d.get("finished", ""))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the CI-sized subset")
    parser.add_argument("--only", action="append", default=[],
                        help="run only groups whose name contains this (repeatable); groups: "
                             + ", ".join(n for n, _ in REGISTRY))
    parser.add_argument("--skip", action="append", default=[], help="leave out groups whose name contains this")
    parser.add_argument("--seed", type=int, action="append", default=[],
                        help="a seed for every random choice (repeatable; default: --seeds random ones)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="how many random seeds, besides any --seed (default: 3 when no --seed is given)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--save", type=Path, help="write each seed's rows to DIR/seed-<seed>.json as it ends")
    parser.add_argument("--load", type=Path, action="append", default=[],
                        help="add the seeds saved in DIR to the table (repeatable); alone, runs nothing new")
    parser.add_argument("--allow-unavailable", action="store_true",
                        help="a case this machine cannot run does not fail the run")
    args = parser.parse_args(argv)
    groups = [(n, t) for n, t in REGISTRY if (not args.only or any(o in n for o in args.only))
              and not any(s in n for s in args.skip)]
    if not groups:
        parser.error(f"--only {args.only} / --skip {args.skip} leave no group: use some of "
                     f"{', '.join(n for n, _ in REGISTRY)}")
    random_seeds = args.seeds if args.seeds is not None else (0 if args.seed or args.load else 3)
    if random_seeds < 0 or random_seeds + len(args.seed) + len(args.load) < 1:
        parser.error("--seeds must be at least 1 when no --seed or --load is given")
    seeds = [*args.seed, *(random.SystemRandom().randrange(1 << 30) for _ in range(random_seeds))]
    started = time.monotonic()
    tables: list[list[Row]] = []
    loaded = [doc for folder in args.load for doc in load_seeds(folder, args.quick)]
    for doc in loaded:
        reruns = "".join(f"; {', '.join(r['groups'])} run again {r['finished']}, replacing: "
                         + "; ".join(f"{o['case']}: {o['trials']} trials, {o['losses']} losses, {o['notes']}"
                                     for o in r["replaced"]) for r in doc.get("reruns", []))
        print(f"-- seed {doc['seed']}: loaded ({doc.get('finished', '?')}, {doc.get('seconds', '?')} s, "
              f"groups {', '.join(doc.get('groups', []))}{reruns})", file=sys.stderr, flush=True)
        tables.append(doc["rows"])
    quiet = logging.getLogger("runner")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the cases' expected warnings are not news
    try:  # restored after: tests call main() in their own process, whose later tests read these logs
        with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
            for seed in seeds:
                t0 = time.monotonic()
                # Each seed's emulators are stopped when it ends: the GCS one keeps every object in memory.
                with script_emulators() as emulators:
                    rows = run_seed(seed, groups, args.quick, Path(tmp) / f"seed-{seed}", emulators)
                tables.append(rows)
                if args.save:
                    saved = save_seed(args.save, seed, rows, args.quick, [n for n, _ in groups], time.monotonic() - t0)
                    print(f"-- seed {seed}: saved to {saved}", file=sys.stderr, flush=True)
                print(f"\n-- seed {seed}: {sum(r.trials for r in rows)} trials, {sum(r.losses for r in rows)} "
                      f"losses, {time.monotonic() - t0:.0f} s\n{render(rows, False)}\n", file=sys.stderr, flush=True)
    finally:
        quiet.setLevel(level)
    totals = combine(tables)
    print(render(totals, args.markdown))
    all_seeds = [*(d["seed"] for d in loaded), *seeds]
    print(f"\n{'quick' if args.quick else 'full'} run, {len(all_seeds)} seed(s) {', '.join(map(str, all_seeds))}"
          + (f" ({len(loaded)} loaded, run {', '.join(sorted({d.get('finished', '?')[:10] for d in loaded}))})"
             if loaded else "") + ", "
          f"{sum(t.trials for t in totals)} trials, {sum(t.losses for t in totals)} losses; "
          f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node() or 'this machine'} ({platform.machine()}, "
          f"{_cpus()} CPUs), {time.monotonic() - started:.0f} s")
    lost = sum(t.losses for t in totals)
    unavailable = [t.case for t in totals if t.notes.startswith("unavailable")]
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
