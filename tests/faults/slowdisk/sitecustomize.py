"""Test shim: a slow disk under one folder, for the ``file://`` notice-during-upload fault case.

Put this folder first on ``PYTHONPATH`` and set ``RUNNER_TEST_SLOW_DISK=<folder>:<control file>``:
every ``os.fsync`` of a file of 100 KB or more under ``<folder>`` (a checkpoint, not a manifest)
first sleeps the seconds written in the control file (read each time, so a test can slow the
disk down mid-run) and touches ``<control file>.busy`` while it sleeps. The runner's ``file://`` store fsyncs each object and its
folder before the rename that makes it visible, so this is where a slow device makes a commit wait.
Only test processes load it; it changes nothing else.
"""

import os
import time

_SPEC = os.environ.get("RUNNER_TEST_SLOW_DISK")
if _SPEC:
    _FOLDER, _, _CONTROL = _SPEC.partition(":")
    _real_fsync = os.fsync

    def _slow_fsync(fd: int) -> None:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(_FOLDER) and os.fstat(fd).st_size >= 100_000:
            try:
                with open(_CONTROL) as fh:
                    delay = float(fh.read().strip() or 0)
            except (OSError, ValueError):
                delay = 0.0
            if delay > 0:
                open(_CONTROL + ".busy", "w").close()
                time.sleep(delay)
        _real_fsync(fd)

    os.fsync = _slow_fsync
