"""The ``runner`` command: ``runner --help`` lists its commands.

| module           | commands                                                   |
|------------------|------------------------------------------------------------|
| ``cli.app``      | the Typer app, consoles, one-line errors                   |
| ``cli.jobs``     | submit, status, logs, halt, resume, cancel                 |
| ``cli.ops``      | watch, init, prices, report, simulate, exec, ui            |
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from runner.cli import jobs, ops  # noqa: F401 - registers the commands on the app
from runner.cli.app import _printable, app, err

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the console script."""
    logging.basicConfig(level=os.environ.get("RUNNER_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from typer._click import exceptions as usage  # typer vendors its own click
    except ImportError:  # older typer: click itself
        from click import exceptions as usage  # type: ignore[no-redef]

    try:
        code = app(standalone_mode=False)
    except usage.NoArgsIsHelpError as exc:
        exc.show()  # no arguments at all: the help, as before
        sys.exit(exc.exit_code)
    except usage.UsageError as exc:  # a wrong option or argument: one line and exit 2, no box
        where = exc.ctx.command_path if exc.ctx else "runner"
        err.print(f"error: {_printable(exc.format_message())} (see {where} --help)", markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except usage.ClickException as exc:
        err.print(f"error: {_printable(exc.format_message())}", markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted", markup=False)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
