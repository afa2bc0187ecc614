"""``runner exec``: the container contract for training code that does not use ``runner.task``.

    runner exec --dir /workspace/checkpoints -- python train.py

``wrapper`` runs the command as a child process, forwards preemption notices to it as a signal
(after letting a save in progress finish) and exits 75 after a notice once the folder is
committed; ``sync`` restores the folder from the job's checkpoint URI before the child starts and
commits its whole files, as immutable steps with a manifest written last (``index`` is a step's
list of files), while the child runs and after it exits. ``openfiles`` finds files a process
still writes (``/proc``), ``formats`` tells a whole torch zip, safetensors, pickle or JSON file
from a torn one, ``options`` parses the command line. None of them imports torch.
"""
