"""Slurm's commands, run here or on a login node over SSH, with their errors turned into the runner's.

Here: this process's ``SLURM_CONF`` and ``PATH``, in the home folder. Over SSH:
``ssh -o BatchMode=yes <login> 'cd && ...'`` with the user's own SSH configuration (never a
password); ``RUNNER_SLURM_SSH`` replaces the ``ssh`` command. Every command gets
``SLURM_TIME_FORMAT=%s`` (times as epoch seconds).

A scheduler that cannot be reached (the controller or database not answering, an SSH connection
failing, a command timing out) is :class:`BackendUnavailable`, a transient fault; anything else
the command says is a one-line :class:`BackendError`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

from runner.errors import BackendError, BackendUnavailable, one_line

SSH_ENV = "RUNNER_SLURM_SSH"
COMMAND_TIMEOUT_S = 60.0
#: Slurm's and ssh's words for "the scheduler cannot be reached right now" (not the request's fault).
_UNAVAILABLE = re.compile(
    r"unable to contact slurm controller|socket timed out|connection refused|zero bytes were transmitted|"
    r"communication connection failure|transport endpoint|temporarily unable|backup controller|"
    r"slurm_persist_conn_open|problem talking to the database|unable to establish|connection timed out|"
    r"resource temporarily unavailable|network is unreachable|no route to host|connection reset|"
    r"could not resolve hostname|connection closed by", re.IGNORECASE)
_GONE = re.compile(r"invalid job id specified|already completing or completed|job has already finished", re.IGNORECASE)


def ssh_command() -> list[str]:
    """The ssh command line to use: ``RUNNER_SLURM_SSH`` (split like a shell), else ``ssh``."""
    return shlex.split(os.environ.get(SSH_ENV) or "ssh")


class Cluster:
    """Runs Slurm's commands here or on a login node over SSH; errors become the runner's."""

    def __init__(self, login: str | None) -> None:
        self.login = login
        self.calls = 0  # scheduler commands run, for tests and logs

    def run(self, argv: list[str], *, stdin: str | None = None, timeout: float = COMMAND_TIMEOUT_S,
            before: str = "", gone_ok: bool = False) -> str:
        """Run one command (``before``: a shell prefix over SSH, done here by the caller); return stdout."""
        self.calls += 1
        env = {**os.environ, "SLURM_TIME_FORMAT": "%s"}
        if self.login is None:
            cmd, cwd = argv, str(Path.home())
        else:
            remote = "cd && " + (before + " && " if before else "") + "env SLURM_TIME_FORMAT=%s " + shlex.join(argv)
            cmd, cwd = [*ssh_command(), "-o", "BatchMode=yes", self.login, remote], None
        where = f" on {self.login}" if self.login else ""
        try:
            proc = subprocess.run(cmd, check=False, input=stdin, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
        except FileNotFoundError:
            raise BackendError(f"{cmd[0]} is not installed here: install Slurm's client commands, or set "
                               "slurm.login to a login node of your cluster") from None
        except subprocess.TimeoutExpired:
            raise BackendUnavailable(f"{argv[0]}{where} did not answer in {timeout:g}s; "
                                     "the Slurm controller may be busy or down") from None
        if proc.returncode == 0:
            return proc.stdout
        text = one_line(proc.stderr or proc.stdout or f"exit {proc.returncode}")
        if gone_ok and _GONE.search(text):
            return proc.stdout
        if (self.login is not None and proc.returncode == 255) or _UNAVAILABLE.search(text):
            raise BackendUnavailable(f"{argv[0]}{where}: {text}")
        if "configuration source" in text or "slurm.conf" in text.lower():
            raise BackendError(f"{argv[0]}{where} finds no Slurm configuration ({text}); set SLURM_CONF "
                               "to your cluster's slurm.conf")
        raise BackendError(f"{argv[0]}{where}: {text}")


__all__ = ["COMMAND_TIMEOUT_S", "SSH_ENV", "Cluster", "ssh_command"]
