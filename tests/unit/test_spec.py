"""Job specs: good ones load, bad ones give one line naming the file, the field and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.contract import parse_duration
from runner.errors import SpecError
from runner.spec import (
    JobSpec,
    check_uri,
    load_spec,
    parse_simulate_preemption,
    parse_size,
    spec_from_dict,
)

from runner.plugins import backend_class  # noqa: E402
from tests.conftest import cloud_overrides  # noqa: E402

JOBS = Path(__file__).resolve().parents[2] / "jobs"
BASE = "name: demo\nimage: localhost/runner-cifar:latest\n"

# (case id, YAML text, a substring the message must contain: the field or the problem)
BAD_SPECS: list[tuple[str, str, str]] = [
    ("bad-yaml", "name: demo\nimage: [unclosed\n", "not valid YAML"),
    ("bad-yaml-tab", "name: demo\n\timage: x\n", "not valid YAML"),
    ("duplicate-key", BASE + "image: other\n", "'image' is written twice"),
    ("empty-file", "", "is empty"),
    ("comment-only", "# nothing here\n", "is empty"),
    ("top-level-list", "- name: demo\n- image: x\n", "top level is a list"),
    ("top-level-string", "just a string\n", "top level is a string"),
    ("missing-image", "name: demo\n", "field 'image'"),
    ("missing-name", "image: localhost/x:1\n", "field 'name'"),
    ("empty-image", "name: demo\nimage: ''\n", "field 'image'"),
    ("bad-name-upper", "name: Demo\nimage: x\n", "field 'name'"),
    ("bad-name-underscore", "name: my_job\nimage: x\n", "field 'name'"),
    ("bad-name-long", f"name: {'a' * 64}\nimage: x\n", "field 'name'"),
    ("name-not-string", "name: [a]\nimage: x\n", "field 'name'"),
    ("unknown-top-field", BASE + "resurces: {cpus: 2}\n", "unknown field 'resurces'"),
    ("misspelt-required-field", "nmae: demo\nimage: x\n", "unknown field 'nmae'"),
    ("unknown-nested-field", BASE + "resources: {memroy: 8Gi}\n", "unknown field 'resources.memroy'"),
    ("unknown-aws-field", BASE + "aws: {queue: q}\n", "unknown field 'aws.queue'"),
    ("unknown-sim-field", BASE + "simulate_preemption: {every: 5s, foo: 1}\n", "simulate_preemption.foo"),
    ("cpus-zero", BASE + "resources: {cpus: 0}\n", "field 'resources.cpus'"),
    ("cpus-negative", BASE + "resources: {cpus: -2}\n", "field 'resources.cpus'"),
    ("cpus-string", BASE + "resources: {cpus: 'two'}\n", "field 'resources.cpus'"),
    ("gpus-negative", BASE + "resources: {gpus: -1}\n", "field 'resources.gpus'"),
    ("gpus-float", BASE + "resources: {gpus: 1.5}\n", "field 'resources.gpus'"),
    ("memory-bad-unit", BASE + "resources: {memory: 8Gx}\n", "field 'resources.memory'"),
    ("memory-negative", BASE + "resources: {memory: -8Gi}\n", "field 'resources.memory'"),
    ("memory-zero", BASE + "resources: {memory: 0Gi}\n", "field 'resources.memory'"),
    ("memory-no-unit", BASE + "resources: {memory: 8}\n", "use a string such as 8Gi"),
    ("memory-no-unit-string", BASE + "resources: {memory: '8'}\n", "has no unit"),
    ("disk-words", BASE + "resources: {disk: lots}\n", "field 'resources.disk'"),
    ("gpu-type-without-gpus", BASE + "resources: {gpu_type: nvidia-tesla-t4}\n", "resources.gpu_type"),
    ("resources-list", BASE + "resources: [2, 8Gi]\n", "field 'resources'"),
    ("unknown-backend", BASE + "backend: kubernetes\n", "field 'backend'"),
    ("aws-without-queue", BASE + "backend: aws\n", "field 'aws.job_queue'"),
    ("aws-section-without-queue", BASE + "backend: aws\naws: {region: us-east-1}\n", "aws.job_queue"),
    ("gcp-without-project", BASE + "backend: gcp\ngcp: {region: us-central1}\n", "field 'gcp.project'"),
    ("azure-without-pool", BASE + "backend: azure\nazure: {account_url: 'https://a.b'}\n", "azure.pool_id"),
    ("azure-bad-url", BASE + "azure: {account_url: myaccount}\n", "field 'azure.account_url'"),
    ("uri-relative-file", BASE + "checkpoint: {uri: 'file://ckpt/demo'}\n", "field 'checkpoint.uri'"),
    ("uri-no-scheme", BASE + "checkpoint: {uri: /tmp/ckpt}\n", "file:///tmp/ckpt"),
    ("uri-relative-path", BASE + "checkpoint: {uri: ckpt/demo}\n", "field 'checkpoint.uri'"),
    ("uri-http", BASE + "checkpoint: {uri: 'http://example.com/ckpt'}\n", "scheme 'http'"),
    ("uri-s3-no-bucket", BASE + "checkpoint: {uri: 's3:///prefix'}\n", "names no bucket"),
    ("uri-s3-bad-bucket", BASE + "checkpoint: {uri: 's3://My_Bucket/p'}\n", "field 'checkpoint.uri'"),
    ("uri-gs-no-bucket", BASE + "checkpoint: {uri: 'gs://'}\n", "field 'checkpoint.uri'"),
    ("uri-az-double-hyphen", BASE + "checkpoint: {uri: 'az://a--b/p'}\n", "field 'checkpoint.uri'"),
    ("uri-query", BASE + "checkpoint: {uri: 's3://bucket/p?x=1'}\n", "field 'checkpoint.uri'"),
    ("uri-dotdot", BASE + "checkpoint: {uri: 'file:///tmp/../etc'}\n", "field 'checkpoint.uri'"),
    ("every-bad", BASE + "checkpoint: {every: sometimes}\n", "field 'checkpoint.every'"),
    ("every-zero", BASE + "checkpoint: {every: 0}\n", "field 'checkpoint.every'"),
    ("every-negative-duration", BASE + "checkpoint: {every: 0s}\n", "field 'checkpoint.every'"),
    ("keep-zero", BASE + "checkpoint: {keep: 0}\n", "field 'checkpoint.keep'"),
    ("retries-negative", BASE + "retries: {preemptions: -1}\n", "field 'retries.preemptions'"),
    ("retries-string", BASE + "retries: {failures: many}\n", "field 'retries.failures'"),
    ("array-zero", BASE + "array: 0\n", "field 'array'"),
    ("array-too-big", BASE + "array: 10001\n", "field 'array'"),
    ("runner-env-key", BASE + "env: {RUNNER_JOB_ID: x}\n", "field 'env.RUNNER_JOB_ID'"),
    ("env-bad-key", BASE + "env: {'1BAD': x}\n", "field 'env.1BAD'"),
    ("env-bool-value", BASE + "env: {DEBUG: true}\n", "field 'env.DEBUG'"),
    ("env-list", BASE + "env: [A=1]\n", "field 'env'"),
    ("args-string", BASE + "args: --epochs 2\n", "field 'args'"),
    ("command-mapping", BASE + "command: {a: b}\n", "field 'command'"),
    ("spot-string", BASE + "spot: maybe\n", "field 'spot'"),
    ("notice-unknown", BASE + "notice: ibm\n", "field 'notice'"),
    ("timeout-words", BASE + "timeout: five minutes\n", "field 'timeout'"),
    ("timeout-number", BASE + "timeout: 300\n", "use a string such as 300s"),
    ("sim-bad-duration", BASE + "simulate_preemption: {every: 20 seconds}\n", "simulate_preemption.every"),
    ("sim-no-clock", BASE + "simulate_preemption: {notice: 5s}\n", "simulate_preemption.every"),
    ("sim-bad-mode", BASE + "simulate_preemption: {every: 5s, mode: chaos}\n", "simulate_preemption.mode"),
    ("local-negative-price", BASE + "local: {price_per_hour: -1}\n", "field 'local.price_per_hour'"),
    ("aws-max-vcpus-zero", BASE + "aws: {max_vcpus: 0}\n", "field 'aws.max_vcpus'"),
]


def _write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / "jobs" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in BAD_SPECS], ids=[c[0] for c in BAD_SPECS])
def test_bad_spec_gives_one_line_naming_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert info.value.exit_code == 2
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "; " in message, f"no fix in: {message}"
    assert "Traceback" not in message and "pydantic" not in message


def test_there_are_at_least_25_bad_specs() -> None:
    assert len(BAD_SPECS) >= 25


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope\.yaml: no such job spec file"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="is a folder"):
        load_spec(tmp_path)


def test_binary_file_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(SpecError, match=r"job\.yaml"):
        load_spec(path)


def test_unknown_field_lists_valid_fields_and_a_guess(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, BASE + "resurces: {}\n"))
    message = str(info.value)
    assert message.endswith("; did you mean 'resources'?")
    assert "(valid fields: name, image," in message


@pytest.mark.parametrize("path", sorted(JOBS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_job_file_loads(path: Path) -> None:
    spec = load_spec(path)
    assert spec.backend == "local"
    # A named URI or the per-job default under $RUNNER_HOME: both are file:// locally.
    assert spec.checkpoint_uri_for(0, "job-1").startswith("file:///")
    assert spec.image.startswith("localhost/runner-")


@pytest.mark.parametrize("backend", ["aws", "gcp", "azure"])
@pytest.mark.parametrize("name", ["cifar", "imagenet", "bert", "cifar-smoke"])
def test_job_files_go_to_every_cloud(name: str, backend: str) -> None:
    overrides = cloud_overrides(JOBS / f"{name}.yaml", backend)
    spec = load_spec(JOBS / f"{name}.yaml", overrides)
    assert spec.backend == backend
    cls = backend_class(backend)
    assert cls.check_runnable(spec) is None
    moved = load_spec(JOBS / f"{name}.yaml", {**overrides, "checkpoint.uri": "file:///tmp/x"})
    field, problem = cls.check_runnable(moved) or ("", "")
    assert field == "checkpoint.uri" and "a local folder cannot be reached from" in problem


def test_expected_job_files_exist() -> None:
    names = {p.stem for p in JOBS.glob("*.yaml")}
    assert {"cifar", "cifar-smoke", "imagenet", "imagenet-smoke", "bert", "bert-smoke"} <= names


def test_cifar_smoke_is_small_and_synthetic() -> None:
    spec = load_spec(JOBS / "cifar-smoke.yaml")
    assert spec.args[:4] == ["--data", "synthetic", "--epochs", "4"]
    assert spec.resources.cpus <= 2 and spec.resources.gpus == 0


def test_yaml_merge_keys_work(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, BASE + "resources:\n  <<: {cpus: 3, memory: 1Gi}\n  memory: 2Gi\n"))
    assert (spec.resources.cpus, spec.resources.memory) == (3.0, "2Gi")


def test_defaults() -> None:
    spec = spec_from_dict({"name": "demo", "image": "img"})
    assert (spec.backend, spec.spot, spec.array, spec.notice) == ("local", True, 1, "auto")
    assert (spec.resources.cpus, spec.resources.gpus) == (2.0, 0)
    assert (spec.checkpoint.every, spec.checkpoint.keep) == ("auto", 3)
    assert (spec.retries.preemptions, spec.retries.failures) == (20, 2)
    assert spec.command is None and spec.args == [] and spec.env == {}


def test_numbers_in_args_and_env_become_strings() -> None:
    spec = spec_from_dict({"name": "d", "image": "i", "args": ["--epochs", 2, "--lr", 0.5], "env": {"N": 4}})
    assert spec.args == ["--epochs", "2", "--lr", "0.5"]
    assert spec.env == {"N": "4"}


def test_overrides_apply_before_validation(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + "aws: {job_queue: q}\n")
    spec = load_spec(path, {"backend": "aws", "resources.gpus": 1, "checkpoint.keep": 5, "checkpoint.uri": "s3://b-1/x"})
    assert (spec.backend, spec.resources.gpus, spec.checkpoint.keep) == ("aws", 1, 5)
    with pytest.raises(SpecError, match="field 'backend'"):
        load_spec(path, {"backend": "k8s"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8Gi", 8 * 2**30),
        ("512Mi", 512 * 2**20),
        ("16GB", 16 * 10**9),
        ("1.5G", 1_500_000_000),
        ("100", 100),
        (2048, 2048),
        ("1Ti", 2**40),
        ("64k", 64_000),
        ("2gi", 2 * 2**30),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "Gi", "8 G i", "-1Gi", "0", "1Xi", "1.2.3G", True, None, 1.5])
def test_parse_size_rejects(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_parse_duration() -> None:
    assert [parse_duration(t) for t in ("250ms", "90s", "5m", "1.5h")] == [0.25, 90.0, 300.0, 5400.0]
    with pytest.raises(ValueError):
        parse_duration("90")


@pytest.mark.parametrize(
    ("uri", "normal"),
    [
        ("file:///tmp/x/", "file:///tmp/x"),
        ("s3://bucket/a/b/", "s3://bucket/a/b"),
        ("s3://bucket", "s3://bucket"),
        ("gs://my_bucket.x/p", "gs://my_bucket.x/p"),
        ("az://ckpt-container/run", "az://ckpt-container/run"),
    ],
)
def test_check_uri_accepts(uri: str, normal: str) -> None:
    assert check_uri(uri) == normal


def test_checkpoint_every_forms() -> None:
    def every(value: Any) -> Any:
        return spec_from_dict({"name": "d", "image": "i", "checkpoint": {"every": value}}).checkpoint.every

    assert [every(v) for v in ("epoch", "auto", 200, "200", "90s")] == ["epoch", "auto", 200, 200, "90s"]


def test_container_env_puts_the_contract_over_env() -> None:
    spec = spec_from_dict(
        {
            "name": "d",
            "image": "i",
            "env": {"A": "1"},
            "notice": "gcp",
            "checkpoint": {"every": "epoch", "keep": 4},
        }
    )
    env = spec.container_env("d-abc123", 3, "s3://b/p")
    assert env == {
        "A": "1", "RUNNER_JOB_ID": "d-abc123", "RUNNER_ATTEMPT": "3", "RUNNER_CHECKPOINT_URI": "s3://b/p",
        "RUNNER_NOTICE": "gcp", "RUNNER_CHECKPOINT_EVERY": "epoch", "RUNNER_CHECKPOINT_KEEP": "4",
        "RUNNER_THREADS": "2",  # resources.cpus (default 2): the task's thread count
    }  # fmt: skip


def test_checkpoint_uri_for_array_children(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = spec_from_dict({"name": "d", "image": "i", "checkpoint": {"uri": "s3://bucket/run"}})
    many = spec_from_dict({"name": "d", "image": "i", "array": 3, "checkpoint": {"uri": "s3://bucket/run"}})
    assert one.checkpoint_uri_for(0) == "s3://bucket/run"
    assert [many.checkpoint_uri_for(i) for i in range(3)] == [f"s3://bucket/run/{i}" for i in range(3)]
    with pytest.raises(ValueError):
        many.checkpoint_uri_for(3)
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path))
    bare = spec_from_dict({"name": "d", "image": "i"})
    assert bare.checkpoint_uri_for(0, job_id="d-123456") == f"file://{tmp_path}/checkpoints/d-123456"


def test_simulate_preemption_cli_form() -> None:
    sim = parse_simulate_preemption("every=20s, notice=5s,mode=mixed,count=3,seed=7")
    assert (sim.every_s, sim.mean_s, sim.notice_s, sim.mode, sim.count, sim.seed) == (
        20.0,
        None,
        5.0,
        "mixed",
        3,
        7,
    )
    assert parse_simulate_preemption("mean=2m").mean_s == 120.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("every", "not key=value"),
        ("every=20", "field 'every'"),
        ("every=1s,mean=2s", "not both"),
        ("every=1s,mode=x", "field 'mode'"),
        ("every=1s,count=x", "field 'count'"),
        ("every=1s,when=now", "unknown field"),
    ],
)
def test_simulate_preemption_cli_errors(text: str, expected: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_simulate_preemption(text)
    assert str(info.value).startswith("--simulate-preemption: ") and expected in str(info.value)


def test_spec_round_trips_through_json() -> None:
    spec = load_spec(JOBS / "cifar.yaml")
    assert type(spec).model_validate_json(spec.model_dump_json()) == spec


# ---------------------------------------------------------------------------- property tests

_FIELD_NAMES = st.sampled_from(
    [*JobSpec.model_fields, "cpus", "memory", "gpus", "uri", "every", "keep", "job_queue", "mode", "RUNNER_X"]
)
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["8Gi", "90s", "epoch", "aws", "s3://b/p", "file:///x", "demo", "-1"]),
)  # fmt: skip
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(_FIELD_NAMES, st.text(max_size=6)), inner, max_size=5),
    ),
    max_leaves=20,
)
_MAPPINGS = st.dictionaries(
    st.one_of(_FIELD_NAMES, st.text(max_size=8), st.integers()), _VALUES, max_size=8
).map(lambda d: {"name": "demo", "image": "img", **d} if len(d) % 2 else d)


@settings(max_examples=300, deadline=None)
@given(_MAPPINGS)
def test_random_mappings_give_a_spec_or_a_spec_error(data: dict[Any, Any]) -> None:
    try:
        spec = spec_from_dict(data, "fuzz.yaml")
    except SpecError as exc:
        assert str(exc).startswith("fuzz.yaml: ") and "\n" not in str(exc)
    else:
        assert isinstance(spec, JobSpec)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=80), _MAPPINGS.map(lambda d: yaml.safe_dump(d, allow_unicode=True))))
def test_random_files_give_a_spec_or_a_spec_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_spec(path)
    except SpecError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            paths += _paths(value, (*prefix, key))
    return paths


_CIFAR = yaml.safe_load((JOBS / "cifar.yaml").read_text())
_CIFAR_PATHS = _paths(_CIFAR)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_CIFAR_PATHS), _VALUES, st.sampled_from(["local", "aws", "gcp", "azure"]))
def test_one_wrong_value_in_a_real_spec_gives_a_spec_or_a_spec_error(
    path: tuple[str, ...], value: Any, backend: str
) -> None:
    data = json.loads(json.dumps(_CIFAR))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    data["backend"] = backend
    try:
        spec_from_dict(data, "cifar.yaml")
    except SpecError as exc:
        assert str(exc).startswith("cifar.yaml: ") and "\n" not in str(exc)
