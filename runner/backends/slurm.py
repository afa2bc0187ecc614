"""Run attempts as Slurm batch jobs, on this machine's cluster or through a login node over SSH.

Every attempt is one ``sbatch --parsable`` of the script :mod:`.slurm_script` renders (the first
attempts of an array: one ``sbatch --array``). Commands run here (``SLURM_CONF`` and ``PATH`` from
this process's environment, in the home folder) or, with ``slurm.login: <host>``, as
``ssh -o BatchMode=yes <host> ...`` with the user's own SSH configuration (keys, agent, ProxyJump;
never a password; ``RUNNER_SLURM_SSH`` replaces the ``ssh`` command, like ``GIT_SSH_COMMAND``), in
the home folder there, where the jobs' output files go (``~/.spot-runner/slurm/logs``).

Ids are Slurm's own, prefixed with the login host when there is one: ``123``, ``123_7`` (array
element), ``login1/123``; so a watcher with no spec can poll, cancel and read logs.

Preemption, the Slurm way (docs/slurm.md has the whole story):

- jobs are submitted ``--no-requeue``: the watcher, never Slurm, starts the next attempt, so a
  job is never both requeued and resubmitted; each attempt is one run with its own times, the
  preemption budget counts every run, and a new attempt starts at once (a requeued job is held
  ``cred_expire`` + 1 s, 121 s by default). Where a site requeues anyway (``RequeueExit=75``),
  :meth:`SlurmBackend.poll` sees the restart count, cancels the requeued copy while it waits and
  reports the run that ended, so the watcher's next attempt is the only one;
- preemption (``PREEMPTED``, or exit 75 after the signal), a lost node (``NODE_FAIL``) and the
  time limit approaching (exit 75 after ``--signal=B:USR1@<lead>``) read PREEMPTED: the next
  attempt resumes from the checkpoint, as many times as the preemption budget allows. A run that
  reached ``TIMEOUT`` did not stop at the signal and is a FAILED attempt (no endless loop).

Polling is one ``squeue -r -t all -j <ids>`` for every attempt (a 100-element array is one id),
plus one ``sacct -D`` for what has left the queue (or was requeued): two calls at most.
A controller that does not answer is a transient fault: submit raises BackendUnavailable (the
attempt waits, uncharged) and poll answers UNKNOWN (never a failure).
"""

from __future__ import annotations

import logging
import math
import re
import shlex
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from runner.backends import slurm_parse as sp
from runner.backends import slurm_script
from runner.backends.base import Backend, Submission
from runner.backends.slurm_cluster import Cluster, ssh_command
from runner.cost.accounting import ServiceUnits
from runner.errors import BackendError, BackendUnavailable, SubmitError, one_line
from runner.spec import Duration, JobSpec, SpecModel
from runner.states import AttemptState, AttemptStatus

log = logging.getLogger("runner.backends.slurm")

SUBMIT_TIMEOUT_S = 120.0
_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,128}$")
_LOGIN = re.compile(r"^[A-Za-z0-9_.@-]{1,255}$")


class SlurmSettings(SpecModel):
    """The ``slurm:`` section. Only ``runtime`` matters to most jobs; see docs/slurm.md."""

    partition: str | None = None                # spot capacity: the preemptible partition
    on_demand_partition: str | None = None      # spot: false; the cluster's default when unset
    account: str | None = None
    qos: str | None = None
    time_limit: Duration | None = None          # --time; else the spec's timeout; else the partition's
    signal_lead: Duration = "90s"               # SIGUSR1 this long before the time limit
    runtime: Literal["apptainer", "podman", "docker", "none"] = "apptainer"
    sif: str | None = None                      # apptainer: the image file on the shared file system
    venv: str | None = None                     # none: a Python environment on the shared file system
    runtime_options: list[str] = Field(default_factory=list, max_length=256)
    sbatch: list[str] = Field(default_factory=list, max_length=256)  # extra #SBATCH options
    srun: bool = False                          # launch the task as an srun step (see docs/slurm.md)
    login: str | None = None                    # a host of your SSH config; None: this machine
    su_per_hour: float | None = Field(default=None, gt=0, le=1e6)
    on_demand_su_per_hour: float | None = Field(default=None, gt=0, le=1e6)
    su_price: float | None = Field(default=None, gt=0, le=1e6)
    currency: str = "USD"

    @field_validator("partition", "on_demand_partition", "account", "qos")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(f"{value[:80]!r} is not a Slurm name; use letters, digits, '_', '.', '-'")
        return value

    @field_validator("currency")
    @classmethod
    def _check_currency(cls, value: str) -> str:
        from runner.cost.table import check_currency

        return check_currency(value)

    @field_validator("login")
    @classmethod
    def _check_login(cls, value: str | None) -> str | None:
        if value is not None and (not _LOGIN.match(value) or value.startswith("-")):
            raise ValueError(f"{value[:80]!r} is not an SSH host; name a Host of your ~/.ssh/config, such as login1")
        return value

    @field_validator("sif", "venv")
    @classmethod
    def _check_path(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith("/") or re.match(r"^[a-z]+://", value)):
            raise ValueError(f"{value[:80]!r} is not an absolute path on the cluster; write /shared/path")
        return value

    @field_validator("sbatch")
    @classmethod
    def _check_sbatch(cls, value: list[str]) -> list[str]:
        cleaned = []
        for item in value:
            option = item.strip().removeprefix("#SBATCH").strip()
            if not option.startswith("-") or any(c.isspace() for c in option) or "\x00" in option:
                raise ValueError(f"{item[:80]!r} is not one sbatch option; write it as --constraint=a100")
            if option.split("=", 1)[0] in slurm_script.RESERVED:
                raise ValueError(f"{option.split('=', 1)[0]} is set by the runner (see docs/slurm.md); remove it")
            cleaned.append(option)
        return cleaned

    @field_validator("runtime_options")
    @classmethod
    def _check_options(cls, value: list[str]) -> list[str]:
        for item in value:
            if "\x00" in item or "\n" in item:
                raise ValueError(f"{item[:80]!r} has a NUL or newline; give one word per item")
        return value

    @property
    def signal_lead_s(self) -> float:
        from runner.contract import parse_duration

        return parse_duration(self.signal_lead)

    def partition_for(self, capacity: str) -> str | None:
        """The partition for ``spot`` or ``on-demand`` capacity (None: the cluster's default)."""
        return self.on_demand_partition if capacity == "on-demand" else self.partition

    def time_limit_minutes(self, timeout_s: float | None) -> int | None:
        """``--time`` in minutes (Slurm counts minutes): ``time_limit``, else the spec's timeout."""
        from runner.contract import parse_duration

        seconds = parse_duration(self.time_limit) if self.time_limit else timeout_s
        return None if seconds is None else max(1, math.ceil(seconds / 60))

    def apptainer_image(self, image: str) -> str:
        """What ``apptainer run`` runs: ``sif``, else the spec's image as a ``docker://`` reference."""
        if self.sif:
            return self.sif
        return image if re.match(r"^[a-z-]+:", image) and "/" not in image.split(":", 1)[0] else f"docker://{image}"


def slurm_settings(spec: JobSpec) -> SlurmSettings:
    """Return the spec's ``slurm:`` section (defaults when it has none)."""
    section = spec.section("slurm")
    return section if isinstance(section, SlurmSettings) else SlurmSettings()


class SlurmBackend(Backend):
    """Each attempt is one Slurm batch job; a preemptible partition counts as spot capacity."""

    name = "slurm"
    summary = "a Slurm cluster: batch jobs here or through a login node over SSH"
    settings_model = SlurmSettings
    schemes = ("file", "s3", "gs", "az")
    uri_example = "file:///shared/folder"
    notice = "none"  # the notice is a signal (SIGUSR1 to the batch shell, SIGTERM to the task)
    capacities = ("spot", "on-demand")

    @classmethod
    def check_spec(cls, spec: JobSpec, chosen: bool) -> tuple[str, str] | None:
        """Also: ``runtime: none`` needs ``command``; Apptainer needs an image it can reach."""
        problem = super().check_spec(spec, chosen)
        if problem is not None or not chosen:
            return problem
        settings = slurm_settings(spec)
        if settings.runtime == "none" and not spec.command:
            return ("command", ("is needed with slurm.runtime none (no image, so no entrypoint); give the image's "
                                "entrypoint, such as command: [python, -m, runner.tasks.cifar]"))
        if settings.runtime == "apptainer" and not settings.sif and spec.image.startswith("localhost/"):
            return ("slurm.sif", (f"is needed with runtime apptainer: {spec.image} is in no registry the cluster "
                                  "reaches; build a .sif with `make sif`, copy it to the shared file system and "
                                  "give its path, or use slurm.runtime docker|podman|none"))
        return None

    @classmethod
    def service_units(cls, spec: JobSpec) -> ServiceUnits:
        """SUs per hour of this job: ``su_per_hour``, else one per GPU (GPU jobs) or per core."""
        settings, res = slurm_settings(spec), spec.resources
        default = float(res.gpus) if res.gpus else float(math.ceil(res.cpus))
        per_hour = settings.su_per_hour or default
        unit = "SU" if settings.su_per_hour else "GPU-hours" if res.gpus else "core-hours"
        partition = settings.partition or "default"
        return ServiceUnits(per_hour, settings.on_demand_su_per_hour or per_hour, unit, settings.su_price,
                            settings.currency, f"slurm:{settings.login or 'local'}:{partition}")

    def __init__(self) -> None:
        self._clusters: dict[str | None, Cluster] = {}

    def cluster(self, login: str | None) -> Cluster:
        if login not in self._clusters:
            self._clusters[login] = Cluster(login)
        return self._clusters[login]

    @property
    def calls(self) -> int:
        """Scheduler commands this backend has run (every cluster)."""
        return sum(c.calls for c in self._clusters.values())

    # ------------------------------------------------------------------ submit

    def submit(self, sub: Submission) -> str:
        """``sbatch`` one attempt; return its id (``[login/]jobid``)."""
        return self._sbatch([sub])[0]

    def submit_many(self, subs: Sequence[Submission]) -> list[str]:
        """Submit array children of one job as one ``sbatch --array`` per attempt number."""
        ids: dict[int, str] = {}
        by_attempt: dict[int, list[Submission]] = {}
        for sub in subs:
            by_attempt.setdefault(sub.attempt, []).append(sub)
        for group in by_attempt.values():
            for sub, backend_id in zip(group, self._sbatch(group)):
                ids[id(sub)] = backend_id
        return [ids[id(sub)] for sub in subs]

    def _sbatch(self, subs: Sequence[Submission]) -> list[str]:
        settings = slurm_settings(subs[0].spec)
        script = slurm_script.render(subs, settings)
        cluster = self.cluster(settings.login)
        if cluster.login is None:
            try:
                (Path.home() / slurm_script.LOG_DIR).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SubmitError(f"cannot create {Path.home() / slurm_script.LOG_DIR} for the jobs' output: "
                                  f"{exc.strerror}") from exc
        try:
            out = cluster.run(["sbatch", "--parsable"], stdin=script, timeout=SUBMIT_TIMEOUT_S,
                              before=f"mkdir -p {slurm_script.LOG_DIR}")
        except BackendUnavailable:
            raise
        except BackendError as exc:
            raise SubmitError(f"{exc}; check the spec's slurm: section (partition, account, qos, "
                              "time_limit, sbatch) against `sinfo` and your cluster's limits") from exc
        job = out.strip().splitlines()[-1].split(";")[0].strip() if out.strip() else ""
        if not job.isdigit():
            raise SubmitError(f"sbatch answered {one_line(out)!r}, not a job id")
        prefix = f"{settings.login}/" if settings.login else ""
        log.debug("submitted %s as Slurm job %s", subs[0].key, job)
        if len(subs) == 1:
            return [prefix + job]
        return [f"{prefix}{job}_{s.array_index}" for s in subs]

    # ------------------------------------------------------------------ poll

    def poll(self, ids: Sequence[str]) -> dict[str, AttemptStatus]:
        """Every id's status: one ``squeue`` per cluster, one ``sacct -D`` for what left the queue."""
        result: dict[str, AttemptStatus] = {}
        groups: dict[str | None, dict[str, str]] = {}
        for backend_id in dict.fromkeys(ids):
            try:
                login, job = sp.split_id(backend_id)
            except ValueError as exc:
                result[backend_id] = AttemptStatus(AttemptState.UNKNOWN, str(exc))
                continue
            groups.setdefault(login, {})[job] = backend_id
        for login, jobs in groups.items():
            result.update(self._poll_cluster(self.cluster(login), jobs))
        return result

    def _poll_cluster(self, cluster: Cluster, jobs: dict[str, str]) -> dict[str, AttemptStatus]:
        bases = sorted({sp.base_id(j) for j in jobs}, key=int)
        try:
            out = cluster.run(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(bases), "-O", sp.squeue_format()],
                              gone_ok=True)
        except BackendError as exc:
            return {b: AttemptStatus(AttemptState.UNKNOWN, str(exc)) for b in jobs.values()}
        rows = sp.parse_squeue(out)
        statuses: dict[str, AttemptStatus] = {}
        need: list[str] = []
        for job, backend_id in jobs.items():
            run = rows.get(job)
            if run is None or run.restarts > 0 and run.state not in sp.ACTIVE or run.state in sp.NEEDS_BATCH_STEP:
                need.append(job)
            else:
                statuses[backend_id] = sp.classify([run])
        if not need:
            return statuses
        try:
            out = cluster.run(["sacct", "-D", "-n", "-P", "-j", ",".join(sorted({sp.base_id(j) for j in need}, key=int)),
                               "-o", sp.sacct_format()])
        except BackendError as exc:
            return {**statuses, **{jobs[j]: AttemptStatus(AttemptState.UNKNOWN, str(exc)) for j in need}}
        records = sp.parse_sacct(out)
        for job in need:
            statuses[jobs[job]] = self._ended(cluster, job, rows.get(job), records.get(job))
        return statuses

    def _ended(self, cluster: Cluster, job: str, run: sp.Run | None, record: sp.Record | None) -> AttemptStatus:
        if run is not None and sp.is_requeued_waiting(run):
            # Slurm requeued it (RequeueExit, a lost node): cancel the copy, count the run that ended.
            status = sp.previous_run_status(record or sp.Record([run]))
            try:
                cluster.run(["scancel", job], gone_ok=True)
            except BackendError as exc:
                return AttemptStatus(AttemptState.UNKNOWN, f"Slurm requeued job {job}; cancelling the copy failed: {exc}")
            return AttemptStatus(status.state, status.reason + "; Slurm had requeued it: the copy was cancelled, "
                                 "the watcher starts the next attempt", status.exit_code, status.started_at,
                                 status.ended_at)
        if record is None:
            if run is not None and run.state not in sp.NEEDS_BATCH_STEP:
                return sp.classify([run])
            return AttemptStatus(AttemptState.UNKNOWN, f"job {job} is not in the queue and not yet in Slurm's "
                                                       "accounting (sacct); asking again next poll")
        return sp.classify(record)

    # ------------------------------------------------------------------ cancel, logs, find

    def cancel(self, backend_id: str) -> None:
        """``scancel`` the job (idempotent); the job script stops its container on the SIGTERM."""
        login, job = self._split(backend_id)
        self.cluster(login).run(["scancel", job], gone_ok=True)

    def logs(self, backend_id: str, follow: bool = False) -> Iterator[str]:
        """Yield the job's output file (``~/.spot-runner/slurm/logs/slurm-<id>.out`` on the cluster)."""
        login, job = self._split(backend_id)
        name = slurm_script.log_name(job)
        if login is None:
            yield from self._local_log(Path.home() / name, job, follow)
            return
        script = f"cd && cat {shlex.quote(name)}"
        if follow:
            script = (f"cd && {{ tail -n +1 -F {shlex.quote(name)} 2>/dev/null & t=$!; "
                      f"while squeue -h -j {job} 2>/dev/null | grep -q .; do sleep 3; done; sleep 2; kill $t; }}")
        proc = subprocess.Popen([*ssh_command(), "-o", "BatchMode=yes", login, script], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            yield line.rstrip("\n")
        if proc.wait() not in (0, 143) and not follow:
            raise BackendError(f"cannot read {name} on {login}: {one_line(proc.stderr.read() if proc.stderr else '')}")

    def _local_log(self, path: Path, job: str, follow: bool) -> Iterator[str]:
        deadline = time.monotonic() + 60
        while not path.exists():
            state = self.poll([job])[job].state
            if not follow or state.is_terminal() or time.monotonic() > deadline:
                raise BackendError(f"no output file {path} yet: Slurm job {job} is {state.value.lower()}"
                                   + ("" if state.is_terminal() else "; try again once it runs"))
            time.sleep(1)
        with open(path, encoding="utf-8", errors="replace") as fh:
            pending = ""
            while True:
                chunk = fh.read()
                if chunk:
                    pending += chunk
                    *lines, pending = pending.split("\n")
                    yield from lines
                    continue
                if not follow or self.poll([job])[job].state.is_terminal():
                    rest = fh.read()
                    pending += rest
                    if rest:
                        continue
                    break
                time.sleep(1)
            if pending:
                yield pending

    def find(self, sub: Submission) -> str | None:
        """Return the id of a job submitted as ``sub`` (by its job name), if Slurm knows one."""
        settings = slurm_settings(sub.spec)
        cluster = self.cluster(settings.login)
        single, array = sub.key, slurm_script.array_name(sub.job_id, sub.attempt)
        names = f"{single},{array}"
        out = cluster.run(["squeue", "-h", "-r", "-t", "all", f"--name={names}", "-O", "JobArrayID:|,Name:|"])
        rows = [line.split("|")[:2] for line in out.splitlines() if "|" in line]
        if not rows:
            out = cluster.run(["sacct", "-X", "-n", "-P", f"--name={names}", "-S", "now-30days", "-o", "JobID,JobName"])
            rows = [line.split("|")[:2] for line in out.splitlines() if "|" in line]
        prefix = f"{settings.login}/" if settings.login else ""
        for job, name in ((j.strip(), n.strip()) for j, n in rows):
            if name == single and re.fullmatch(r"\d+", job):
                return prefix + job
            if name == array and job.endswith(f"_{sub.array_index}"):
                return prefix + job
        return None

    def _split(self, backend_id: str) -> tuple[str | None, str]:
        try:
            return sp.split_id(backend_id)
        except ValueError as exc:
            raise BackendError(str(exc)) from None


__all__ = ["Cluster", "ServiceUnits", "SlurmBackend", "SlurmSettings", "slurm_settings"]
