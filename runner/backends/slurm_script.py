"""The batch script of one Slurm attempt (or one array of first attempts): ``#SBATCH`` lines and a runtime.

Pure functions: :func:`render` turns submissions and the spec's ``slurm:`` settings into the text
``sbatch`` reads on its standard input. What the script does:

- asks Slurm for ``--signal=B:USR1@<signal_lead>`` (the batch shell gets SIGUSR1 that long before
  the time limit, and at once when a higher-priority job preempts it, on clusters with
  ``SlurmctldParameters=preempt_send_user_signal``), ``--no-requeue`` (the watcher, not Slurm,
  starts the next attempt: see docs/slurm.md), ``--open-mode=append`` and ``--export=NONE``;
- on SIGUSR1 (a notice) touches the task's halt file and sends the task SIGTERM, then waits:
  the task commits a checkpoint and exits 75;
- on SIGTERM (scancel, the end of the grace time or of the time limit) stops the task at once;
  a Docker or Podman container is stopped by name (Slurm does not track it, so ``scancel`` alone
  would leave it running), and removed on exit;
- runs the task with one of four runtimes, with the same contract as the local Docker backend:
  the checkpoint folder of a ``file://`` URI at ``/checkpoints``, ``data:`` folders read-only at
  ``/data/<name>``, GPUs (``--nv``, ``--gpus``, CDI devices), the ``RUNNER_*`` environment:

  ======== ================================================================================
  apptainer ``apptainer run|exec --compat --bind SRC:DST[:ro] [--nv] IMAGE.sif ...``; variables as
            ``APPTAINERENV_<NAME>`` (passed through ``--compat``'s clean environment)
  docker    ``docker run --rm --name ... --user $(id -u):$(id -g) --volume ... --env NAME ...``
  podman    the same words with ``podman``; GPUs as CDI devices ``nvidia.com/gpu=<index>``
  none      the spec's ``command`` in a Python environment on the shared file system (``venv``)
  ======== ================================================================================

Values of the environment travel in the script, never on a command line (``--env NAME`` takes
the value from the script's environment); Slurm keeps the script like any batch script.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING

from runner import contract
from runner.backends.base import Submission
from runner.errors import SubmitError

if TYPE_CHECKING:
    from runner.backends.slurm import SlurmSettings

#: Where output files go, relative to the directory sbatch runs in (the user's home on the cluster).
LOG_DIR = ".spot-runner/slurm/logs"
CONTAINER_NOTICE_DIR = "/run/spot-runner"
#: sbatch options the runner sets itself; ``slurm.sbatch`` may not change them.
RESERVED = ("--job-name", "-J", "--output", "-o", "--error", "-e", "--open-mode", "--requeue", "--no-requeue",
            "--signal", "--export", "--array", "-a", "--parsable", "--wrap")
STOP_TIMEOUT_S = 5  # seconds a container gets between SIGTERM and SIGKILL when Slurm ends the job


def log_name(backend_job: str) -> str:
    """The output file of a job (``123``) or array element (``123_7``), under :data:`LOG_DIR`."""
    return f"{LOG_DIR}/slurm-{backend_job}.out"


def array_name(job_id: str, attempt: int) -> str:
    """The Slurm job name of an array of first attempts (single attempts are named by their key)."""
    return f"{job_id}-array-{attempt}"


def array_spec(indexes: Sequence[int]) -> str:
    """Return ``--array``'s value for ``indexes``: ``0-99``, ``0,3,5-9``."""
    ordered = sorted(set(indexes))
    parts: list[str] = []
    start = prev = ordered[0]
    for i in ordered[1:] + [None]:  # type: ignore[list-item]
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(f"{start}-{prev}" if prev > start else str(start))
        if i is not None:
            start = prev = i
    return ",".join(parts)


def sbatch_options(subs: Sequence[Submission], settings: SlurmSettings) -> list[str]:
    """The ``#SBATCH`` options of an attempt (one submission) or an array of first attempts."""
    sub = subs[0]
    spec, res = sub.spec, sub.spec.resources
    array = len(subs) > 1
    name = array_name(sub.job_id, sub.attempt) if array else sub.key
    options = [f"--job-name={name}",
               f"--output={LOG_DIR}/slurm-{'%A_%a' if array else '%j'}.out",
               "--open-mode=append", "--no-requeue", "--export=NONE",
               f"--signal=B:USR1@{max(1, math.ceil(settings.signal_lead_s))}",
               "--nodes=1", "--ntasks=1", f"--cpus-per-task={max(1, math.ceil(res.cpus))}",
               f"--mem={max(1, math.ceil(res.memory_bytes / 2**20))}M",
               f"--comment=spot-runner:{sub.job_id}"]
    if array:
        options.append(f"--array={array_spec([s.array_index for s in subs])}")
    partition = settings.partition_for(sub.capacity)  # the watcher picks each attempt's capacity
    if partition:
        options.append(f"--partition={partition}")
    minutes = settings.time_limit_minutes(spec.timeout_s)
    if minutes:
        options.append(f"--time={minutes}")
    if res.gpus:
        options.append(f"--gres=gpu:{res.gpus}")
    if settings.account:
        options.append(f"--account={settings.account}")
    if settings.qos:
        options.append(f"--qos={settings.qos}")
    options.extend(settings.sbatch)
    return options


def render(subs: Sequence[Submission], settings: SlurmSettings) -> str:
    """Return the batch script for ``subs``: one attempt, or several array children of one job."""
    if not subs:
        raise SubmitError("nothing to submit")
    sub = subs[0]
    spec = sub.spec
    array = len(subs) > 1
    runtime = settings.runtime
    container = runtime in ("docker", "podman", "apptainer")
    env = dict(sub.env)
    uri = sub.checkpoint_uri
    if array:  # every child appends its own index, as checkpoint_uri_for does
        uri = uri.rsplit("/", 1)[0]
    for key in (contract.CHECKPOINT_URI, contract.HALT_FILE):
        env.pop(key, None)
    if env.get(contract.NOTICE) == "auto":  # no cloud metadata service on a cluster: signals only
        env[contract.NOTICE] = "none"
    local_data = spec.local_data()
    if runtime == "none" and local_data:
        env.pop(contract.DATA_DIR, None)

    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH {_sbatch_word(o)}" for o in sbatch_options(subs, settings)]
    what = (f"{len(subs)} array children of job {sub.job_id}, attempt {sub.attempt}" if array
            else f"attempt {sub.attempt} of job {sub.job_id} (key {sub.key})")
    lines += [f"# spot-runner: {what}; runtime {runtime}. Generated: see docs/slurm.md.", "set -u"]
    prefix = "APPTAINERENV_" if runtime == "apptainer" else ""
    lines += [f"export {prefix}{k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    lines += ['spot_index="${SLURM_ARRAY_TASK_ID:-}"',
              'spot_scratch=$(mktemp -d "${TMPDIR:-/tmp}/spot-runner-${SLURM_JOB_ID}.XXXXXX") || exit 1',
              'mkdir -p "$spot_scratch/notice"',
              'spot_halt="$spot_scratch/notice/halt"',
              'spot_container="spot-runner-slurm-${SLURM_JOB_ID}"',
              'spot_pid=""']
    if uri.startswith("file://"):
        folder = uri[len("file://"):]
        lines.append(f"spot_checkpoint_dir={shlex.quote(folder)}" + ('"/$spot_index"' if array else ""))
        lines.append('mkdir -p "$spot_checkpoint_dir" || { echo "spot-runner: cannot create the checkpoint '
                     'folder $spot_checkpoint_dir on $(hostname)" >&2; exit 1; }')
        inner = f"file://{contract.CONTAINER_CHECKPOINT_DIR}" if container else 'file://$spot_checkpoint_dir'
        lines.append(f'export {prefix}{contract.CHECKPOINT_URI}="{inner}"')
    else:
        lines.append(f"export {prefix}{contract.CHECKPOINT_URI}={shlex.quote(uri)}" + ('"/$spot_index"' if array else ""))
    halt = f"{CONTAINER_NOTICE_DIR}/halt" if container else "$spot_halt"
    lines.append(f'export {prefix}{contract.HALT_FILE}="{halt}"')
    if runtime == "none" and local_data:
        lines.append('mkdir -p "$spot_scratch/data"')
        lines += [f'ln -s {shlex.quote(src)} "$spot_scratch/data/"{shlex.quote(name)}' for name, src in local_data.items()]
        lines.append(f'export {contract.DATA_DIR}="$spot_scratch/data"')
    if runtime == "none" and settings.venv:
        venv = shlex.quote(settings.venv)
        lines += [f"export VIRTUAL_ENV={venv}", f'export PATH={venv}/bin:"$PATH"']
    if runtime == "apptainer" and spec.resources.gpus:
        lines.append('[ -n "${CUDA_VISIBLE_DEVICES:-}" ] && export APPTAINERENV_CUDA_VISIBLE_DEVICES="$CUDA_VISIBLE_DEVICES"')
    lines += _traps(runtime)
    tool = _tool(runtime, spec.command)
    lines.append(f'echo "spot-runner: {what}: Slurm job ${{SLURM_JOB_ID}} on $(hostname), runtime {runtime}" >&2')
    if tool:
        lines.append(f"command -v {tool} >/dev/null 2>&1 || {{ echo \"spot-runner: {tool} is not installed on "
                     f"$(hostname); see docs/slurm.md (runtimes)\" >&2; exit 127; }}")
    launch = launch_words(subs, settings, sorted(env))
    if settings.srun:
        launch = ["srun", "--ntasks=1", "--export=ALL", "--kill-on-bad-exit=1", *launch]
    lines.append(" ".join(launch) + " &")
    lines += ['spot_pid=$!',
              '[ -e "$spot_halt" ] && spot_notice  # a notice that came before the task started',
              'while :; do',
              '  wait "$spot_pid"; spot_rc=$?',
              '  if [ "$spot_rc" -gt 128 ] && kill -0 "$spot_pid" 2>/dev/null; then continue; fi  # a trap ran',
              '  break',
              'done',
              'if [ "$spot_rc" -gt 128 ]; then wait "$spot_pid" 2>/dev/null; r=$?; [ "$r" -ne 127 ] && spot_rc=$r; fi',
              'echo "spot-runner: the task exited $spot_rc" >&2',
              'exit "$spot_rc"', ""]
    return "\n".join(lines)


def launch_words(subs: Sequence[Submission], settings: SlurmSettings, env_names: Sequence[str]) -> list[str]:
    """The command line that runs the task under ``settings.runtime`` (bash words, quoted)."""
    sub = subs[0]
    spec, res = sub.spec, sub.spec.resources
    runtime = settings.runtime
    q = shlex.quote
    args = [q(a) for a in spec.args]
    command = [q(c) for c in spec.command or []]
    file_uri = sub.checkpoint_uri.startswith("file://")
    if runtime == "none":
        return [*command, *args]
    if runtime == "apptainer":
        words = ["apptainer", "exec" if spec.command else "run", "--compat"]
        if file_uri:
            words += ["--bind", f'"$spot_checkpoint_dir":{contract.CONTAINER_CHECKPOINT_DIR}']
        words += ["--bind", f'"$spot_scratch/notice":{CONTAINER_NOTICE_DIR}:ro']
        for name, src in spec.local_data().items():
            words += ["--bind", q(f"{_bind_path(src, name)}:{contract.CONTAINER_DATA_DIR}/{name}:ro")]
        if res.gpus:
            words.append("--nv")
        words += [q(o) for o in settings.runtime_options]
        return [*words, q(settings.apptainer_image(spec.image)), *command, *args]
    memory_mib = max(6, math.ceil(res.memory_bytes / 2**20))
    words = [runtime, "run", "--rm", "--name", '"$spot_container"', "--label", "spot-runner.managed=1",
             "--label", q(f"spot-runner.key={sub.key if len(subs) == 1 else array_name(sub.job_id, sub.attempt)}"),
             "--label", '"spot-runner.slurm-job=${SLURM_JOB_ID}"', "--user", '"$(id -u):$(id -g)"',
             f"--cpus={res.cpus:g}", f"--memory={memory_mib}m", f"--memory-swap={memory_mib}m",
             f"--shm-size={max(64, memory_mib // 2)}m"]
    if file_uri:
        words += ["--volume", f'"$spot_checkpoint_dir":{contract.CONTAINER_CHECKPOINT_DIR}']
    words += ["--volume", f'"$spot_scratch/notice":{CONTAINER_NOTICE_DIR}:ro']
    for name, src in spec.local_data().items():
        words += ["--volume", q(f"{_bind_path(src, name)}:{contract.CONTAINER_DATA_DIR}/{name}:ro")]
    for name in env_names:
        words += ["--env", name]
    words += ["--env", contract.CHECKPOINT_URI, "--env", contract.HALT_FILE]
    if res.gpus and runtime == "docker":
        words += ["--gpus", '"$(spot_gpus)"']
    elif res.gpus:
        words.append("$(spot_cdi_devices)")
    words += [q(o) for o in settings.runtime_options]
    if spec.command:
        words += ["--entrypoint", command[0]]
    return [*words, q(spec.image), *command[1:], *args]


def _traps(runtime: str) -> list[str]:
    """The notice (USR1), stop (TERM) and exit handlers, and the GPU helpers, for ``runtime``."""
    if runtime in ("docker", "podman"):
        notify = f'{runtime} kill --signal TERM "$spot_container" >/dev/null 2>&1 || true'
        stop = (f'{runtime} stop --time {STOP_TIMEOUT_S} "$spot_container" >/dev/null 2>&1 || '
                f'{runtime} rm -f "$spot_container" >/dev/null 2>&1 || true')
        cleanup = f'{runtime} rm -f "$spot_container" >/dev/null 2>&1 || true; '
    else:
        notify = '[ -n "$spot_pid" ] && kill -TERM "$spot_pid" 2>/dev/null || true'
        stop = notify
        cleanup = ""
    return [
        "spot_notice() {",
        ('  echo "spot-runner: SIGUSR1 from Slurm (preemption, or the time limit is near): the task checkpoints '
         'and stops" >&2'),
        '  touch "$spot_halt"',
        f"  {notify}",
        "}",
        "spot_stop() {",
        ('  echo "spot-runner: SIGTERM from Slurm (cancelled, or the grace time or time limit ran out): stopping '
         'the task" >&2'),
        f"  {stop}",
        "}",
        f'spot_cleanup() {{ {cleanup}rm -rf "$spot_scratch"; }}',
        ('spot_gpus() { if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then echo "\\"device=$CUDA_VISIBLE_DEVICES\\""; '
         'else echo all; fi; }'),
        ('spot_cdi_devices() { local d; if [ -z "${CUDA_VISIBLE_DEVICES:-}" ]; then echo "--device nvidia.com/gpu=all"; '
         'return; fi; for d in ${CUDA_VISIBLE_DEVICES//,/ }; do printf -- "--device nvidia.com/gpu=%s " "$d"; done; }'),
        "trap spot_notice USR1",
        "trap spot_stop TERM",
        "trap spot_cleanup EXIT",
    ]


def _tool(runtime: str, command: list[str] | None) -> str | None:
    if runtime == "none":
        return shlex.quote(command[0]) if command else None
    return runtime


def _sbatch_word(option: str) -> str:
    """An option for an ``#SBATCH`` line: one word (sbatch splits the line on white space)."""
    if any(c.isspace() for c in option):
        raise SubmitError(f"sbatch option {option!r} has a space, which #SBATCH lines cannot carry")
    return option


def _bind_path(path: str, name: str) -> str:
    if ":" in path or "," in path:
        raise SubmitError(f"field 'data.{name}': {path} has a ':' or ',', which bind mounts cannot carry; "
                          "rename the folder or link it from a path without them")
    return path


__all__ = ["LOG_DIR", "RESERVED", "array_name", "array_spec", "launch_words", "log_name", "render", "sbatch_options"]
