"""The Azure Batch payloads (pool, job, tasks) against golden files and the SDK's own models.

The payloads are built from jobs/cifar-smoke.yaml with fixed ids and serialised exactly as the
SDK sends them (``SdkJSONEncoder``, read-only fields dropped). Every field name in the golden
files must be a REST name of the matching ``azure.batch.models`` class, checked recursively
through the classes' attribute maps. ``RUNNER_UPDATE_GOLDEN=1 pytest tests/unit/test_azure_golden.py``
rewrites the files after a deliberate change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.batch")

from azure.batch import models as m  # noqa: E402
from azure.batch._utils.model_base import Model, SdkJSONEncoder  # noqa: E402

from runner.backends.azure_setup import job_options, pool_options, task_options  # noqa: E402
from runner.backends.base import Submission  # noqa: E402
from runner.spec import load_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
JOB_ID = "cifar-smoke-0a1b2c"
URI = "az://checkpoints/cifar-smoke"


def sdk_json(model: Any) -> Any:
    """Serialise a model the way the SDK's operations do before sending it."""
    return json.loads(json.dumps(model, cls=SdkJSONEncoder, exclude_readonly=True))


def payloads() -> dict[str, tuple[Any, type[Model]]]:
    spec = load_spec(ROOT / "jobs" / "cifar-smoke.yaml", {"backend": "azure", "checkpoint.uri": URI})
    subs = [Submission(spec=spec, job_id=JOB_ID, key=f"{JOB_ID}-{i}-1", attempt=1, array_index=i,
                       checkpoint_uri=f"{URI}/{i}", env=spec.container_env(JOB_ID, 1, f"{URI}/{i}"))
            for i in range(2)]
    tasks = m.BatchTaskGroup(task_values=[task_options(s) for s in subs])  # the addtaskcollection body
    return {"azure_pool": (sdk_json(pool_options(spec)), m.BatchPoolCreateOptions),
            "azure_job": (sdk_json(job_options(JOB_ID, spec)), m.BatchJobCreateOptions),
            "azure_tasks": (sdk_json(tasks), m.BatchTaskGroup)}


def unknown_fields(data: Any, cls: type[Model], where: str = "") -> list[str]:
    """Return the dotted paths of keys in ``data`` that ``cls`` (recursively) does not define."""
    instance = cls(data)  # attribute access deserialises nested values into their model classes
    by_rest = {rf._rest_name: attr for attr, rf in type(instance)._attr_to_rest_field.items()}
    bad = []
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in by_rest:
            bad.append(f"{path} (not in {cls.__name__})")
            continue
        typed = getattr(instance, by_rest[key])
        if isinstance(typed, Model) and isinstance(value, dict):
            bad += unknown_fields(value, type(typed), path)
        elif isinstance(typed, list) and isinstance(value, list):
            for i, (item, raw) in enumerate(zip(typed, value)):
                if isinstance(item, Model) and isinstance(raw, dict):
                    bad += unknown_fields(raw, type(item), f"{path}[{i}]")
    return bad


@pytest.mark.parametrize("name", ["azure_pool", "azure_job", "azure_tasks"])
def test_payload_matches_golden(name):
    payload, _ = payloads()[name]
    path = GOLDEN / f"{name}.json"
    if os.environ.get("RUNNER_UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    assert payload == json.loads(path.read_text()), f"{name} changed; RUNNER_UPDATE_GOLDEN=1 if on purpose"


@pytest.mark.parametrize("name", ["azure_pool", "azure_job", "azure_tasks"])
def test_golden_field_names_are_the_sdks(name):
    _, cls = payloads()[name]
    golden = json.loads((GOLDEN / f"{name}.json").read_text())
    assert unknown_fields(golden, cls) == []


def test_the_field_check_catches_a_misspelling():
    golden = json.loads((GOLDEN / "azure_tasks.json").read_text())
    golden["value"][0]["containerSettings"]["imageNmae"] = "x"
    golden["value"][0]["constraint"] = {}
    assert unknown_fields(golden, m.BatchTaskGroup) == [
        "value[0].containerSettings.imageNmae (not in BatchTaskContainerSettings)",
        "value[0].constraint (not in BatchTaskCreateOptions)"]


def test_pool_is_spot_with_containers_and_tasks_never_retry():
    pool = json.loads((GOLDEN / "azure_pool.json").read_text())
    assert pool["targetLowPriorityNodes"] >= 1 and pool["targetDedicatedNodes"] == 0
    containers = pool["virtualMachineConfiguration"]["containerConfiguration"]
    assert containers == {"type": "dockerCompatible", "containerImageNames": ["localhost/runner-cifar:latest"]}
    tasks = json.loads((GOLDEN / "azure_tasks.json").read_text())["value"]
    assert [t["id"] for t in tasks] == [f"{JOB_ID}-0-1", f"{JOB_ID}-1-1"]
    for task in tasks:
        assert task["constraints"]["maxTaskRetryCount"] == 0
        assert task["containerSettings"]["imageName"] == "localhost/runner-cifar:latest"
        env = {e["name"]: e["value"] for e in task["environmentSettings"]}
        assert env["RUNNER_JOB_ID"] == JOB_ID and env["RUNNER_CHECKPOINT_URI"].startswith(URI)
