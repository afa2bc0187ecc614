"""The backend interface: run one attempt of a job, report its state; nothing about budgets.

A backend class declares, as class attributes, everything the rest of the runner needs to know
about it, so that adding one is one module (and, outside this repository, one entry point; see
:mod:`runner.plugins`):

| attribute              | meaning                                                               |
|------------------------|-----------------------------------------------------------------------|
| ``name``               | the value of the spec's ``backend:``                                  |
| ``summary``            | one line: what it runs attempts on                                    |
| ``settings_model``     | the pydantic model of its spec section (``<name>:``), or None         |
| ``required``           | settings that section must have to run here                           |
| ``schemes``            | checkpoint/data URI schemes its machines reach (``file`` = this host's folders) |
| ``uri_example``        | the URI to suggest when a job's is unreachable                        |
| ``notice``             | the notice listener mode its machines use when the spec says ``auto`` |
| ``capacities``         | what it can run on: ``spot``, ``on-demand``                           |
| ``simulates_preemption`` | whether ``--simulate-preemption`` works here                        |
| ``extra``              | the pip extra with its SDK                                            |

and class methods: :meth:`Backend.check_spec` (one more check of a spec, as a field and a message),
:meth:`Backend.check_runnable` (at submit: its machines reach the checkpoints and the data),
:meth:`Backend.preflight` (checks at submit that need this machine: an image, a data folder) and
:meth:`Backend.machine` (the ``cloud, region, type`` its price comes from).

Provider states stay inside each backend, mapped onto :class:`AttemptState` by one pure function
per backend, with the provider's words kept in ``AttemptStatus.reason``. A poll that fails
reports UNKNOWN (never FAILED), and the watcher never resubmits on UNKNOWN.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel

from runner.errors import BackendError
from runner.spec.model import JobSpec
from runner.states import AttemptStatus

if TYPE_CHECKING:
    from runner.cost.table import PriceTable


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
    capacity: str = "spot"   # "spot" or "on-demand"


class Backend(ABC):
    """One place attempts run."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    settings_model: ClassVar[type[BaseModel] | None] = None
    required: ClassVar[tuple[str, ...]] = ()
    schemes: ClassVar[tuple[str, ...]] = ("s3", "gs", "az")
    uri_example: ClassVar[str] = "s3://bucket/prefix"
    notice: ClassVar[str] = "auto"
    capacities: ClassVar[tuple[str, ...]] = ("spot",)
    simulates_preemption: ClassVar[bool] = False
    extra: ClassVar[str | None] = None

    # ------------------------------------------------------------------ declarations

    @classmethod
    def settings(cls, spec: JobSpec) -> BaseModel | None:
        """Return the spec's section for this backend, or None."""
        return spec.section(cls.name)

    @classmethod
    def check_spec(cls, spec: JobSpec, chosen: bool) -> tuple[str, str] | None:
        """Return (dotted field, problem and fix) if ``spec``'s settings for this backend are wrong.

        Part of the spec's validation. ``chosen`` is False when the spec only carries this
        backend's section (for ``--backend``). The default checks the required settings.
        """
        if not chosen:
            return None
        section = cls.settings(spec)
        for setting in cls.required:
            if section is None or getattr(section, setting, None) is None:
                return (f"{cls.name}.{setting}",
                        f"is required with backend {cls.name}; add {setting}: ... under {cls.name}:")
        return None

    @classmethod
    def check_runnable(cls, spec: JobSpec) -> tuple[str, str] | None:
        """Return (dotted field, problem and fix) if a job of ``spec`` cannot run here, at ``runner submit``.

        The default checks that the backend's machines reach the checkpoint URI and the data, and
        that simulated preemption is asked only where it works.
        """
        if "file" not in cls.schemes:
            uri = spec.checkpoint.uri
            if uri is None or uri.startswith("file://"):
                return ("checkpoint.uri", f"a local folder cannot be reached from {cls.name} machines; "
                                          f"set checkpoint.uri to {cls.uri_example}")
            for name, source in spec.local_data().items():
                return (f"data.{name}", f"{source} is a folder on this machine, which {cls.name} machines "
                                        f"cannot reach; upload it and give its prefix, such as {cls.uri_example}")
        if spec.capacity_policy != "spot-only" and "on-demand" not in cls.capacities:
            field = "spot" if spec.capacity_policy == "on-demand" else ("policy" if spec.policy else "deadline")
            return (field, f"needs on-demand capacity, which the {cls.name} backend does not offer "
                           f"(it runs {', '.join(cls.capacities)}); use another backend or spot-only")
        if spec.simulate_preemption is not None and not cls.simulates_preemption:
            return ("simulate_preemption", f"works on the local backend only; each cloud preempts "
                                           f"{cls.name} jobs for real")
        return None

    @classmethod
    def preflight(cls, spec: JobSpec) -> None:
        """Check at ``runner submit``, before the job is recorded, what only this machine can tell.

        Raise a one-line error (SpecError for the spec's own mistakes); the default checks nothing.
        """

    @classmethod
    def machine(cls, spec: JobSpec, table: PriceTable) -> tuple[str, str, str] | None:
        """Return (cloud, region, instance type) whose price the spec's machine has, or None."""
        return None

    # ------------------------------------------------------------------ running attempts

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

    def find(self, sub: Submission) -> str | None:
        """Return the id of the attempt submitted as ``sub`` (its key), if the backend can tell.

        A watcher killed between submit and recording the id uses this to adopt the attempt
        instead of starting a second one.
        """
        return None

    def close(self) -> None:
        """Release clients and servers."""
