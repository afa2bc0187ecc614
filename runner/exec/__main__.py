"""``python -m runner.exec -- command ...``: the wrapper without the CLI's dependencies."""

from __future__ import annotations

import sys

from runner.exec.wrapper import main

if __name__ == "__main__":
    sys.exit(main())
