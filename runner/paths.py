"""Where the runner keeps its state on this machine.

``RUNNER_HOME`` (default ``~/.local/share/spot-runner``) holds ``ledger.db``, ``checkpoints/<job>/``
for jobs whose spec names no URI, ``watch/<job>.log`` for detached watchers, ``local/`` (markers of
attempts the preemptor or ``cancel`` stopped), ``reports/`` and ``prices-cache.json``.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "RUNNER_HOME"


def data_dir() -> Path:
    """Return the data folder: ``$RUNNER_HOME``, or ``~/.local/share/spot-runner``."""
    return Path(os.environ.get(HOME_ENV) or "~/.local/share/spot-runner").expanduser()


def default_ledger_path() -> Path:
    """Return the default ledger file, ``<data_dir>/ledger.db``."""
    return data_dir() / "ledger.db"
