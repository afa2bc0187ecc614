"""Spot runner: train in containers that checkpoint safely, resume exactly, and survive preemption.

The control plane (``runner.cli``, ``spec``, ``ledger``, ``watcher``, ``backends``) never imports
torch; the task side (``runner.task``, ``runner.tasks``) runs inside the containers.
"""

__version__ = "0.1.0"
