"""``python -m runner.cli``: the ``runner`` command (the background watcher is started this way)."""

from runner.cli import main

main()
