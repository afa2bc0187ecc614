"""The reference training tasks, each runnable as ``python -m runner.tasks.<name>``."""
