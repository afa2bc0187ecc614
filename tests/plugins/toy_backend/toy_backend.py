"""A toy spot-runner backend from outside the runner: each attempt is a process on this machine.

Everything the runner needs to know about it is declared on the class (see
runner/backends/base.py and docs/backends.md); the entry point in this package's pyproject.toml
(group ``spot_runner.backends``) is all that registers it. The spec's ``toy:`` section is
:class:`ToySettings`, validated like any built-in backend's section.

The image is not used: the spec's ``command`` and ``args`` run as a process (its own session,
under ``timeout toy.max_seconds``) with the attempt's environment, its output in
``$RUNNER_HOME/toy/<key>/log`` and its exit code in ``.../exit`` when it ends. The backend's id
for an attempt is its key, so ``find`` and a second ``submit`` of the same key adopt it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from pydantic import Field

from runner.backends.base import Backend, Submission
from runner.errors import BackendError, SubmitError
from runner.spec.model import JobSpec, SpecModel
from runner.states import AttemptState, AttemptStatus

#: The wrapper: the command under `timeout`, its output to log, its exit code to exit (also after SIGTERM).
WRAPPER = 'trap : TERM; timeout --foreground "$0" "$@" >log 2>&1; echo $? >exit.tmp && mv exit.tmp exit'


class ToySettings(SpecModel):
    """The ``toy:`` section."""

    max_seconds: float = Field(default=60.0, gt=0, le=3600)
    greeting: str = Field(default="hello", min_length=1, max_length=40)


class ToyBackend(Backend):
    """Run each attempt as a local process (no container, no cloud)."""

    name = "toy"
    summary = "processes on this machine (a toy plug-in)"
    settings_model = ToySettings
    schemes = ("file",)
    uri_example = "file:///absolute/folder"
    notice = "none"
    capacities = ("on-demand", "spot")

    @classmethod
    def check_spec(cls, spec: JobSpec, chosen: bool) -> tuple[str, str] | None:
        if chosen and not (spec.command or spec.args):
            return ("command", "the toy backend runs the command on this machine; give one, e.g. [python3, -c, ...]")
        return super().check_spec(spec, chosen)

    def __init__(self, home: Path | None = None) -> None:
        from runner.paths import data_dir

        self.home = Path(home) if home is not None else data_dir() / "toy"

    def _dir(self, key: str) -> Path:
        if not key or "/" in key or key.startswith("."):
            raise BackendError(f"{key!r} is not a toy attempt id")
        return self.home / key

    def submit(self, sub: Submission) -> str:
        folder = self._dir(sub.key)
        if (folder / "pid").exists():
            return sub.key  # submitted before: adopt it
        if shutil.which("timeout") is None:
            raise SubmitError("the toy backend needs coreutils' timeout on this machine")
        settings = self.settings(sub.spec)
        limit = settings.max_seconds if isinstance(settings, ToySettings) else 60.0
        greeting = settings.greeting if isinstance(settings, ToySettings) else "hello"
        argv = [*(sub.spec.command or []), *sub.spec.args]
        folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **sub.env, "TOY_GREETING": greeting}
        if sub.checkpoint_uri.startswith("file://"):
            Path(sub.checkpoint_uri[len("file://"):]).mkdir(parents=True, exist_ok=True)
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", WRAPPER, f"{limit:g}", *argv], cwd=folder, env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
        except OSError as exc:
            raise SubmitError(f"cannot start {argv[0]!r}: {exc.strerror}") from exc
        (folder / "pid").write_text(str(proc.pid))
        return sub.key

    def poll(self, ids: Sequence[str]) -> dict[str, AttemptStatus]:
        return {backend_id: self._status(backend_id) for backend_id in ids}

    def _status(self, backend_id: str) -> AttemptStatus:
        folder = self._dir(backend_id)
        if (folder / "exit").exists():
            code = int((folder / "exit").read_text().strip() or "1")
            if (folder / "cancelled").exists():
                return AttemptStatus(AttemptState.CANCELLED, "cancelled", code)
            if code == 0:
                return AttemptStatus(AttemptState.SUCCEEDED, "exit 0", 0)
            if code == 75:
                return AttemptStatus(AttemptState.PREEMPTED, "exit 75 after a notice", code)
            return AttemptStatus(AttemptState.FAILED, "timed out" if code == 124 else f"exit {code}", code)
        if not (folder / "pid").exists():
            return AttemptStatus(AttemptState.FAILED, f"no toy attempt {backend_id} on this machine")
        try:
            os.kill(int((folder / "pid").read_text()), 0)
        except ProcessLookupError:
            if (folder / "exit").exists():  # it ended between the two looks
                return self._status(backend_id)
            return AttemptStatus(AttemptState.FAILED, "the process vanished without an exit code")
        return AttemptStatus(AttemptState.RUNNING, "running")

    def cancel(self, backend_id: str) -> None:
        folder = self._dir(backend_id)
        if not (folder / "pid").exists() or (folder / "exit").exists():
            return
        (folder / "cancelled").touch()
        try:
            os.killpg(int((folder / "pid").read_text()), signal.SIGTERM)
        except ProcessLookupError:
            pass

    def logs(self, backend_id: str, follow: bool = False) -> Iterator[str]:
        log = self._dir(backend_id) / "log"
        if not log.exists():
            yield f"(no output yet for {backend_id})"
            return
        yield from log.read_text(errors="replace").splitlines()

    def find(self, sub: Submission) -> str | None:
        return sub.key if (self._dir(sub.key) / "pid").exists() else None
