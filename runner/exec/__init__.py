"""``runner exec``: the container contract for training code that does not use ``runner.task``.

    runner exec --dir /workspace/checkpoints -- python train.py

``wrapper`` runs the command as a child process, forwards preemption notices to it as a signal
and exits 75 after a notice once the folder is committed; ``sync`` restores the folder from the
job's checkpoint URI before the child starts and commits it, as immutable steps with a manifest
written last, while the child runs and after it exits. Neither imports torch.
"""
