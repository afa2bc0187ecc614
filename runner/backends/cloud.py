"""The shared algorithm of a cloud batch service; a cloud module supplies only its calls.

A cloud backend (AWS Batch, Google Cloud Batch, Azure Batch) subclasses :class:`CloudBatchBackend`
and supplies:

| method                           | what the cloud does                                              |
|----------------------------------|------------------------------------------------------------------|
| ``create(subs)``                 | submit attempts (array children together); return their ids      |
| ``split_id(id)``                 | (group, member) of an id: ids carry what a poll needs (a region, an account) |
| ``describe(group, members)``     | the service's records of some members of one group, in one call  |
| ``classify_record(group, member, record)`` | a pure mapping of a record onto an :class:`AttemptStatus` |
| ``stop(id)``                     | stop one attempt                                                 |
| ``lookup(sub)``                  | the id of an attempt submitted for ``sub`` before, if any        |

and this base does the rest the same way for every cloud: ids grouped and batched
(``batch_size`` per call, one call per batch), a member the service does not list is FAILED
(``missing``), a call that fails makes its ids UNKNOWN (never FAILED), the contract's exit codes
(:func:`exit_state`), and the one translation of SDK errors (:mod:`runner.backends.transient`):
a connection, DNS, timeout, 5xx or throttling failure is :class:`BackendUnavailable`, which the
watcher waits out without charging anything; a request the service refuses is a
:class:`SubmitError`, one line, the attempt failed at once. :func:`follow_lines` is the loop of
every cloud's ``logs`` (read what is new, again every 2 s while following).

Each cloud keeps three modules: ``<cloud>_batch.py`` (its calls, on this skeleton),
``<cloud>_records.py`` (its ids and what its records mean: pure functions, tested from plain
data) and ``<cloud>_setup.py`` (its settings, its requests and the resources ``runner init`` makes).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, ClassVar

from runner import contract
from runner.backends.base import Backend, Submission
from runner.backends.transient import describe, translate
from runner.errors import BackendError, one_line
from runner.states import AttemptState, AttemptStatus


def exit_state(exit_code: int | None) -> AttemptState | None:
    """The contract's reading of an exit code: 0 done, 75 preempted (after a notice), 76 halted; else None."""
    return {contract.EXIT_DONE: AttemptState.SUCCEEDED, contract.EXIT_PREEMPTED: AttemptState.PREEMPTED,
            contract.EXIT_HALTED: AttemptState.HALTED}.get(exit_code) if exit_code is not None else None


EXIT_REASONS = {AttemptState.PREEMPTED: "exit 75: stopped after a preemption notice",
                AttemptState.HALTED: "exit 76: stopped after runner halt"}


def follow_lines(read: Callable[[], tuple[list[str], bool]], follow: bool, every_s: float = 2.0) -> Iterator[str]:
    """Yield the new lines ``read`` returns, with whether their source has ended; with ``follow``, ask
    again every ``every_s`` until it has ended, else once. The clouds' ``logs`` readers run on it."""
    while True:
        lines, ended = read()
        yield from lines
        if ended or not follow:
            return
        time.sleep(every_s)


class CloudBatchBackend(Backend):
    """One cloud's batch service, driven by the shared algorithm."""

    #: Members per ``describe`` call; None when the cloud batches a whole group itself.
    batch_size: ClassVar[int | None] = 100

    # ------------------------------------------------------------------ what a cloud supplies

    @abstractmethod
    def create(self, subs: Sequence[Submission]) -> list[str]:
        """Submit the attempts (several: array children of one job); return their ids in order."""

    @abstractmethod
    def split_id(self, backend_id: str) -> tuple[Hashable, str]:
        """Return (group, member) of an id; raise BackendError when it is not one of this cloud's."""

    @abstractmethod
    def describe(self, group: Any, members: list[str]) -> dict[str, Any]:
        """Return the service's record of each member found (absent: the service does not know it)."""

    @abstractmethod
    def classify_record(self, group: Any, member: str, record: Any) -> AttemptStatus:
        """Map one record onto an AttemptStatus (no service call)."""

    @abstractmethod
    def stop(self, backend_id: str) -> None:
        """Stop the attempt; one that has ended or is gone is fine."""

    def lookup(self, sub: Submission) -> str | None:
        """Return the id of an attempt submitted for ``sub`` before (by its name or tag), or None."""
        return None

    def missing(self, group: Any, member: str) -> AttemptStatus:
        """The status of a member the service did not list."""
        return AttemptStatus(AttemptState.FAILED, f"{self.summary or self.name} does not know {member} "
                                                  "(ended long ago, or deleted outside the runner)")

    def explain(self, exc: BaseException) -> str:
        """One secret-free line for an SDK error."""
        return describe(exc)

    # ------------------------------------------------------------------ the shared algorithm

    def submit(self, sub: Submission) -> str:
        return self.submit_many([sub])[0]

    def submit_many(self, subs: Sequence[Submission]) -> list[str]:
        """Submit through :meth:`create`; SDK failures become BackendUnavailable or SubmitError."""
        try:
            return self.create(subs)
        except BackendError:
            raise
        except Exception as exc:
            what = f"cannot submit {subs[0].key}" + (f" and {len(subs) - 1} more" if len(subs) > 1 else "")
            raise translate(exc, f"{what} to {self.summary or self.name}", self.explain) from exc

    def poll(self, ids: Sequence[str]) -> dict[str, AttemptStatus]:
        """Every id's status: grouped, batched, one call per batch; failures UNKNOWN, never FAILED."""
        result: dict[str, AttemptStatus] = {}
        groups: dict[Hashable, list[tuple[str, str]]] = {}
        for backend_id in dict.fromkeys(ids):
            try:
                group, member = self.split_id(backend_id)
            except BackendError as exc:
                result[backend_id] = AttemptStatus(AttemptState.UNKNOWN, str(exc))
                continue
            groups.setdefault(group, []).append((backend_id, member))
        for group, wanted in groups.items():
            members = list(dict.fromkeys(m for _, m in wanted))
            size = self.batch_size or len(members)
            found: dict[str, Any] = {}
            try:
                for start in range(0, len(members), size):
                    found.update(self.describe(group, members[start:start + size]))
            except Exception as exc:  # noqa: BLE001 - any failure to ask is UNKNOWN, never FAILED
                reason = one_line(f"cannot poll {self.summary or self.name} ({group}): {self.explain(exc)}", 400)
                result.update({bid: AttemptStatus(AttemptState.UNKNOWN, reason) for bid, _ in wanted})
                continue
            for backend_id, member in wanted:
                record = found.get(member)
                try:
                    result[backend_id] = (self.missing(group, member) if record is None
                                          else self.classify_record(group, member, record))
                except BackendError as exc:
                    result[backend_id] = AttemptStatus(AttemptState.UNKNOWN, str(exc))
        return result

    def cancel(self, backend_id: str) -> None:
        """Stop the attempt through :meth:`stop`; a failure is a BackendError (the watcher tries again)."""
        try:
            self.stop(backend_id)
        except BackendError:
            raise
        except Exception as exc:
            raise translate(exc, f"cannot stop {backend_id}", self.explain, rejected=BackendError) from exc

    def find(self, sub: Submission) -> str | None:
        """Look an attempt up through :meth:`lookup`; a failure is a BackendError (the attempt waits)."""
        try:
            return self.lookup(sub)
        except BackendError:
            raise
        except Exception as exc:
            raise translate(exc, f"cannot look {sub.key} up", self.explain, rejected=BackendError) from exc


__all__ = ["EXIT_REASONS", "CloudBatchBackend", "exit_state", "follow_lines"]
