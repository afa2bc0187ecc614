"""The options of ``runner exec`` and the small process helpers it needs. Standard library only."""

from __future__ import annotations

import ctypes
import os
import signal
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runner.contract import NOTICE_FILE, NOTICE_SIGNAL, SYNC_DIR
from runner.errors import ConfigError

DEFAULT_SIGNAL = "SIGTERM"
_PR_SET_PDEATHSIG = 1
_UNCATCHABLE = {signal.SIGKILL, signal.SIGSTOP}


def parse_signal(text: str) -> signal.Signals:
    """Parse ``SIGTERM``, ``TERM``, ``usr1`` or ``15`` into a signal the child can catch."""
    name = str(text).strip().upper()
    try:
        sig = signal.Signals(int(name)) if name.isdigit() else signal.Signals[
            name if name.startswith("SIG") else "SIG" + name]
    except (KeyError, ValueError):
        sig = None
    if sig is None or sig in _UNCATCHABLE:
        raise ConfigError(f"notice signal {text!r} is not a signal a program can catch: use SIGTERM (default), "
                          "SIGINT, SIGUSR1, SIGUSR2 or SIGHUP")
    return sig


@dataclass(frozen=True)
class ExecOptions:
    """How to run the child and sync its folder."""

    command: list[str]
    folder: Path
    signal: signal.Signals = signal.SIGTERM
    interval: float = 1.0  # seconds between looks at the folder while the child runs
    settle: float = 0.5  # a folder is synced once no file changed for this long
    margin: float = 2.0  # seconds kept for the final sync at least: a command still running then is killed
    notice_file: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "runner-notice.json")

    @classmethod
    def build(cls, command: Sequence[str], folder: str | None = None, signal_name: str | None = None,
              interval: float = 1.0, settle: float = 0.5, margin: float = 2.0,
              environ: Mapping[str, str] | None = None) -> ExecOptions:
        """Return options from the arguments, falling back to ``RUNNER_SYNC_DIR``/``RUNNER_NOTICE_SIGNAL``."""
        env = os.environ if environ is None else environ
        if not command:
            raise ConfigError("no command to run: put it after --, e.g. runner exec -- python train.py")
        folder = folder or env.get(SYNC_DIR)
        if not folder:
            raise ConfigError("no checkpoint folder to sync: pass --dir /workspace/checkpoints or set "
                              "sync.dir in the job spec (RUNNER_SYNC_DIR)")
        if not os.path.isabs(folder):
            raise ConfigError(f"checkpoint folder {folder!r} is not an absolute path: use e.g. /workspace/checkpoints")
        for name, value in (("interval", interval), ("settle", settle), ("margin", margin)):
            if not value >= 0 or (name == "interval" and value == 0):
                raise ConfigError(f"--{name} {value} must be a positive number of seconds")
        sig = parse_signal(signal_name or env.get(NOTICE_SIGNAL) or DEFAULT_SIGNAL)
        notice_file = env.get(NOTICE_FILE) or os.path.join(tempfile.gettempdir(),
                                                                    f"runner-notice-{os.getpid()}.json")
        return cls(list(command), Path(folder), sig, interval, settle, margin, Path(notice_file))


def die_with_parent() -> None:
    """In the child, before exec: die when the wrapper dies (outside a container too)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def exit_code_of(returncode: int) -> int:
    """Map a Popen return code to a process exit code: killed by signal N -> 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


