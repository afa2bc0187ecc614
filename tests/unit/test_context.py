"""The contract's environment, read by every task."""

from __future__ import annotations

import pytest

from runner.errors import ConfigError
from runner.task.context import CheckpointEvery, RunContext


def test_defaults_and_values():
    ctx = RunContext.from_env({"RUNNER_ATTEMPT": "3", "RUNNER_CHECKPOINT_EVERY": "90s", "RUNNER_NOTICE": "GCP"})
    assert ctx.attempt == 3 and ctx.notice == "gcp" and ctx.checkpoint_every == CheckpointEvery("seconds", 90.0)
    assert RunContext.from_env({}).checkpoint_every.kind == "auto"
    assert RunContext.from_env({"RUNNER_CHECKPOINT_EVERY": "200"}).checkpoint_every == CheckpointEvery("steps", 200)


@pytest.mark.parametrize("env, field", [
    ({"RUNNER_ATTEMPT": "zero"}, "RUNNER_ATTEMPT"),
    ({"RUNNER_NOTICE": "pigeon"}, "RUNNER_NOTICE"),
    ({"RUNNER_CHECKPOINT_EVERY": "often"}, "RUNNER_CHECKPOINT_EVERY"),
    ({"RUNNER_CHECKPOINT_KEEP": "0"}, "RUNNER_CHECKPOINT_KEEP"),
    ({"RUNNER_ARRAY_INDEX_VAR": "BATCH_TASK_INDEX"}, "RUNNER_ARRAY_INDEX_VAR"),
])
def test_bad_values_name_the_variable(env, field):
    with pytest.raises(ConfigError, match=field):
        RunContext.from_env(env)


def test_array_children_get_their_own_folder():
    aws = {"RUNNER_CHECKPOINT_URI": "s3://b/job/", "RUNNER_ARRAY_INDEX_VAR": "AWS_BATCH_JOB_ARRAY_INDEX",
           "AWS_BATCH_JOB_ARRAY_INDEX": "7"}
    assert RunContext.from_env(aws).checkpoint_uri == "s3://b/job/7"
    moto = {**aws, "AWS_BATCH_JOB_ID": "abc-123:4"}
    del moto["AWS_BATCH_JOB_ARRAY_INDEX"]
    assert RunContext.from_env(moto).checkpoint_uri == "s3://b/job/4"
    gcp = {"RUNNER_CHECKPOINT_URI": "gs://b/job", "RUNNER_ARRAY_INDEX_VAR": "BATCH_TASK_INDEX", "BATCH_TASK_INDEX": "0"}
    assert RunContext.from_env(gcp).checkpoint_uri == "gs://b/job/0"
