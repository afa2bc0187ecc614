"""What every ``runner`` command shares: the Typer app, the consoles, one-line errors, the ledger.

Every expected error prints one line with the cause and the fix, and exits with the error's code
(2 for bad specs and arguments); only bugs print a traceback.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from runner.errors import RunnerError
from runner.ledger import Ledger
from runner.summary import format_duration

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Run training containers on spot capacity; survive preemptions.")
# Piped output (scripts, CI logs) gets wide lines rather than 80 columns with truncated job ids.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(exc: RunnerError) -> typer.Exit:
    err.print(f"error: {_printable(str(exc))}", markup=False, soft_wrap=True)
    return typer.Exit(exc.exit_code)


def _printable(text: str) -> str:
    """Escape control characters (from user input in a message): one line, no terminal escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _ledger() -> Ledger:
    return Ledger()


_fmt_s = format_duration
