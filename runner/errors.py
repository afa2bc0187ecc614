"""One exception tree for the whole project.

    RunnerError                 every expected error; the CLI prints its message as one line
    ├── SpecError               a job spec or CLI argument is wrong (exit code 2)
    ├── ConfigError             the task's environment or arguments are wrong (exit code 2)
    ├── StoreError              a checkpoint store cannot be read or written
    │   ├── CorruptCheckpoint   a step exists but does not match its manifest
    │   └── StoreUnavailable    the store stayed unreachable or busy through every retry (transient)
    │       └── DeadlineExceeded  a store call could not finish before its deadline
    ├── BackendError            a backend could not submit, poll or cancel
    │   └── SubmitError         submission failed (retried with backoff by the watcher)
    │       └── BackendUnavailable  the backend cannot be reached: the attempt waits, uncharged
    ├── LedgerError             the ledger cannot be opened or is inconsistent
    └── PriceError              a price file is wrong or a machine has no price (exit code 2)

Anything else is a bug and gets a traceback.
"""

from __future__ import annotations


def one_line(text: object, limit: int = 400) -> str:
    """Return ``text`` on one line (whitespace collapsed), cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class RunnerError(Exception):
    """An expected error: its message is one line naming the cause and the fix."""

    exit_code: int = 1


class SpecError(RunnerError):
    exit_code = 2


class ConfigError(RunnerError):
    exit_code = 2


class StoreError(RunnerError):
    pass


class CorruptCheckpoint(StoreError):
    pass


class StoreUnavailable(StoreError):
    """The service stayed unreachable or overloaded through every retry: transient, not the job's fault."""


class DeadlineExceeded(StoreUnavailable):
    """A store call could not finish before its deadline (a notice window's end, or its own bound)."""


class BackendError(RunnerError):
    pass


class SubmitError(BackendError):
    pass


class BackendUnavailable(SubmitError):
    """The backend cannot be reached (engine down, network): try the same attempt again later."""


class LedgerError(RunnerError):
    pass


class PriceError(RunnerError):
    exit_code = 2
