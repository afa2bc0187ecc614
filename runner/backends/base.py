"""The backend interface: run one attempt of a job, report its state; nothing about budgets.

Provider states stay inside each backend, mapped onto :class:`AttemptState` by one pure function
per backend, with the provider's words kept in ``AttemptStatus.reason``. A poll that fails
reports UNKNOWN (never FAILED), and the watcher never resubmits on UNKNOWN.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from runner.spec import JobSpec
from runner.states import AttemptStatus


@dataclass(frozen=True)
class Submission:
    """Everything a backend needs to start one attempt."""

    spec: JobSpec
    job_id: str
    key: str                 # a deterministic name for the attempt: "<job>-<index>-<number>"
    attempt: int             # 1, 2, ...
    array_index: int
    checkpoint_uri: str
    env: dict[str, str] = field(default_factory=dict)  # the contract's RUNNER_* plus the spec's env


class Backend(ABC):
    """One place attempts run."""

    name: ClassVar[str]

    @abstractmethod
    def submit(self, sub: Submission) -> str:
        """Start the attempt; return the backend's id for it. Raise SubmitError on failure."""

    def submit_many(self, subs: Sequence[Submission]) -> list[str]:
        """Start several attempts of one job (array children) at once; ids in the same order.

        The default submits one by one; a backend with native arrays overrides it.
        """
        return [self.submit(sub) for sub in subs]

    @classmethod
    def init(cls, spec: JobSpec, echo: Callable[[str], None]) -> None:
        """Create or update, idempotently, what the cloud needs to run ``spec`` (``runner init``)."""
        from runner.errors import BackendError

        raise BackendError(f"`runner init` has nothing to set up for the {cls.name} backend")

    @abstractmethod
    def poll(self, ids: Sequence[str]) -> dict[str, AttemptStatus]:
        """Return the status of every id, in as few calls as the service allows."""

    @abstractmethod
    def cancel(self, backend_id: str) -> None:
        """Stop the attempt; idempotent."""

    @abstractmethod
    def logs(self, backend_id: str, follow: bool = False) -> Iterator[str]:
        """Yield the attempt's log lines."""

    def find(self, key: str) -> str | None:
        """Return the id of an attempt submitted under ``key``, if the backend can tell.

        A watcher killed between submit and recording the id uses this to adopt the attempt
        instead of starting a second one.
        """
        return None

    def close(self) -> None:
        """Release clients and servers."""
