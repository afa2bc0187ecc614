"""The project's boundaries, as CI enforces them: import contracts and no import circles in runner/.

- ``lint-imports`` (import-linter, contracts in pyproject.toml): code that runs inside task
  containers (runner.task, runner.tasks, runner.exec, runner.stores, runner.contract) never imports
  the control plane; the control plane never imports torch.
- No two modules of runner/ import each other, directly or through others (imports inside
  functions count: grimp sees them), so every module can be read, tested and replaced alone.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    proc = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.find_modules_directly_imported_by(node):
            if nxt not in modules:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_circles_in_runner() -> None:
    graph = grimp.build_graph("runner", exclude_type_checking_imports=True)  # a type hint is no dependency
    # A package's __init__ importing its own submodules is how packages re-export: not a circle.
    modules = {m for m in graph.modules if m.startswith("runner")}
    loops = [c for c in cycles(graph, modules)
             if not all(m == c[0] or m.startswith(c[0] + ".") for m in c[1:])]
    assert loops == [], "import circles: " + "; ".join(" <-> ".join(c) for c in loops)
