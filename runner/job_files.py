"""What the runner reads and writes beside a job's attempts: its checkpoint store and its spec file.

- the ``HALT`` object under each checkpoint URI, with why the runner asks the attempts to commit and
  stop (``runner halt``, a switch of capacity, a budget), and its removal;
- the final result (each array child's final manifest) read when a job succeeds;
- the secret ``env`` values the ledger does not keep, put back from the spec file or the environment.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from runner.contract import HALT_KEY
from runner.errors import RunnerError, SubmitError
from runner.ledger import REDACTED, Job
from runner.spec import JobSpec, load_spec


def resolve_secrets(spec: JobSpec, job: Job) -> JobSpec:
    """Put back env values the ledger redacted: from the job's spec file, else this process's environment.

    The spec file comes first: it holds the job's own value, which a same-named variable of the
    watcher's environment (its own cloud credentials, say) must not replace.
    """
    missing = [k for k, v in spec.env.items() if v == REDACTED]
    if not missing:
        return spec
    env = dict(spec.env)
    from_file: JobSpec | None = None
    if job.spec_path and os.path.exists(job.spec_path):
        try:
            from_file = load_spec(job.spec_path)
        except RunnerError:
            from_file = None  # edited since: fall back to the environment
    for key in missing:
        if from_file is not None and from_file.env.get(key, REDACTED) != REDACTED:
            env[key] = from_file.env[key]
        elif key in os.environ:
            env[key] = os.environ[key]
        else:
            raise SubmitError(f"env {key} of job {job.id} is a secret the ledger does not keep: "
                              f"export {key} where the watcher runs")
    return spec.model_copy(update={"env": env})


def write_halt(job: Job, spec: JobSpec | None, why: str, index: int | None = None) -> None:
    """Ask the job's attempts (one array index, or all) to commit and stop: the HALT object, with why."""
    from runner.stores import open_store

    spec = spec or job.spec()
    body = json.dumps({"requested_at": time.time(), "job_id": job.id, "why": why}).encode()
    for i in range(job.array_size) if index is None else (index,):
        open_store(spec.checkpoint_uri_for(i, job.id)).write_bytes(HALT_KEY, body)


def clear_halt(job: Job, spec: JobSpec | None = None, index: int | None = None) -> None:
    """Remove the HALT object (of one array index, or all)."""
    from runner.stores import open_store

    spec = spec or job.spec()
    for i in range(job.array_size) if index is None else (index,):
        open_store(spec.checkpoint_uri_for(i, job.id)).delete([HALT_KEY])


def read_result(job: Job) -> dict[str, Any]:
    """Read each array child's final manifest from its checkpoint store (a ``runner exec`` job has none:
    its last folder snapshot, done, is its result)."""
    from runner.stores import open_store
    from runner.task import manifest as mf

    spec = job.spec()
    results = []
    for index in range(job.array_size):
        uri = spec.checkpoint_uri_for(index, job.id)
        try:
            store = open_store(uri)
            try:
                final = mf.read_manifest(store, mf.FINAL)
            except FileNotFoundError as exc:
                progress = mf.read_progress(store) or {}
                if progress.get("task") == "exec" and progress.get("state") == "done":  # runner exec: a folder
                    results.append({"checkpoint_uri": uri, "kind": "exec-folder", "step": progress.get("step"),
                                    "files": progress.get("files"), "bytes": progress.get("bytes"), "metrics": {}})
                else:
                    results.append({"checkpoint_uri": uri, "error": f"no final result: {exc}"})
                continue
        except (RunnerError, OSError) as exc:
            results.append({"checkpoint_uri": uri, "error": f"no final result: {exc}"})
            continue
        results.append({"checkpoint_uri": uri, "weights_sha256": final.get("weights_sha256"),
                        "metrics": final.get("metrics", {}), "step": final.get("step")})
    return results[0] if job.array_size == 1 else {"children": results}
