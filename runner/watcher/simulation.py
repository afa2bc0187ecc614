"""Simulated preemptions for local jobs (spec ``simulate_preemption``): the watcher's side.

The watcher runs a metadata simulator (:mod:`runner.sim.metadata`, port ``RUNNER_SIM_PORT``, 18169)
that the containers' notice listeners poll as if it were the cloud's, and a
:class:`runner.sim.preemptor.Preemptor` that sends notices, stops containers, and holds new
attempts back during simulated spot outages.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from runner.ledger import Attempt, Job, Ledger
from runner.spec import JobSpec

if TYPE_CHECKING:
    from runner.backends import Backend, Submission

log = logging.getLogger("runner.watcher")
SIM_PORT = int(os.environ.get("RUNNER_SIM_PORT", "18169"))


def sim_cloud(spec: JobSpec) -> str:
    """The cloud whose notices the simulator imitates for ``spec`` (aws unless the spec says)."""
    return spec.notice if spec.notice in ("aws", "gcp", "azure") else "aws"


class PreemptionSimulation:
    """Mixed into :class:`runner.watcher.Watcher`, which supplies the ledger, backends and events."""

    ledger: Ledger
    _backends: dict[str, Backend]
    _simulator: Any
    _preemptor: Any

    if TYPE_CHECKING:  # supplied by the class this is mixed into
        def backend(self, name: str) -> Backend:
            ...

        def _emit(self, job_id: str, text: str) -> None:
            ...

    def _maybe_release(self, job: Job, attempt: Attempt) -> None:
        spec = job.spec()
        if spec.simulate_preemption is None or not attempt.backend_id:
            return
        did = self._preemptor_for().release(job, attempt, spec.simulate_preemption)
        if did:
            self._emit(job.id, f"simulator: {did}")

    def _hold(self, sub: Submission) -> bool:
        """Whether the simulator keeps a new local attempt waiting for a machine (a spot outage)."""
        plan = sub.spec.simulate_preemption
        return plan is not None and self._preemptor_for().hold(self.ledger.get_job(sub.job_id), plan, sub.capacity)
    def _maybe_preempt(self, job: Job, attempt: Attempt) -> None:
        spec = job.spec()
        if spec.simulate_preemption is None or attempt.backend != "local" or not attempt.backend_id:
            return
        did = self._preemptor_for().step(job, attempt, spec.simulate_preemption, sim_cloud(spec))
        if did:
            self._emit(job.id, f"simulator: {did}")
    def _simulator_url(self) -> str | None:
        if self._simulator is None:
            return None
        port = self._simulator.url.rsplit(":", 1)[1]  # the bound port, also when 0 was asked
        return f"http://host.docker.internal:{port}"

    def _preemptor_for(self) -> Any:
        if self._preemptor is None:
            from runner.sim.metadata import MetadataSimulator
            from runner.sim.preemptor import Preemptor

            if self._simulator is None:
                try:
                    self._simulator = MetadataSimulator(host="0.0.0.0", port=SIM_PORT).start()
                except OSError:  # another watcher on this host holds the port: take any free one
                    self._simulator = MetadataSimulator(host="0.0.0.0", port=0).start()
                    log.warning("port %d is taken (another watcher?); the notice simulator listens at %s",
                                SIM_PORT, self._simulator.url)
            self._backends.pop("local", None)  # rebuild with the simulator's URL
            local = self.backend("local")
            self._preemptor = Preemptor(local, self._simulator)
            if hasattr(local, "hold"):
                local.hold = self._hold
        return self._preemptor
