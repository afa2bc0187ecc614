"""`runner init aws` gives the compute environment a launch template with IMDSv2 hop limit 2 (moto_server).

With the EC2 default hop limit of 1 the IMDSv2 token's answer never reaches a container on a
bridge network, so a task could not read its spot interruption notice with a token.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

from runner.backends.aws_setup import IMDS_OPTIONS, ensure_batch, ensure_imds_template
from runner.spec import spec_from_dict

REGION = "us-east-1"


def client(emu: Any, service: str) -> Any:
    import boto3

    return boto3.client(service, region_name=REGION, endpoint_url=emu.url, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def prerequisites(emu: Any) -> dict[str, Any]:
    iam, ec2 = client(emu, "iam"), client(emu, "ec2")
    tag = uuid.uuid4().hex[:8]
    trust = '{"Version":"2012-10-17","Statement":[]}'
    service_role = iam.create_role(RoleName=f"batch-{tag}", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    iam.create_role(RoleName=f"ecs-{tag}", AssumeRolePolicyDocument=trust)
    profile = iam.create_instance_profile(InstanceProfileName=f"ecs-{tag}")["InstanceProfile"]["Arn"]
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=f"b-{tag}", Description="batch", VpcId=vpc)["GroupId"]
    return {"region": REGION, "service_role": service_role, "instance_role": profile, "subnets": [subnet],
            "security_group_ids": [group], "instance_types": ["m5.large"], "max_vcpus": 8, "job_queue": f"q-{tag}"}


def options_of(ec2: Any, template: dict[str, Any]) -> dict[str, Any]:
    [version] = ec2.describe_launch_template_versions(LaunchTemplateName=template["launchTemplateName"],
                                                      Versions=[str(template["version"])])["LaunchTemplateVersions"]
    return dict(version["LaunchTemplateData"]["MetadataOptions"])


def test_init_aws_sets_the_launch_template_and_says_so(moto_server: Any, tmp_path: Path) -> None:
    settings = prerequisites(moto_server)
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({"name": "imds", "image": "localhost/x:1", "backend": "aws", "aws": settings,
                                    "checkpoint": {"uri": "s3://bucket/imds"}}))
    proc = subprocess.run([sys.executable, "-m", "runner.cli", "init", "aws", "--spec", str(spec)], check=False,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **moto_server.env, "RUNNER_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "hop limit 2" in proc.stdout and "IMDSv2" in proc.stdout, proc.stdout
    batch, ec2 = client(moto_server, "batch"), client(moto_server, "ec2")
    [env] = batch.describe_compute_environments(computeEnvironments=[f"{settings['job_queue']}-spot"])[
        "computeEnvironments"]
    template = env["computeResources"]["launchTemplate"]
    assert template["launchTemplateName"] == f"{settings['job_queue']}-spot-imds"
    assert {k: options_of(ec2, template)[k] for k in IMDS_OPTIONS} == IMDS_OPTIONS


def test_the_template_is_brought_up_to_date_and_reused(moto_server: Any) -> None:
    ec2 = client(moto_server, "ec2")
    name = f"t-{uuid.uuid4().hex[:8]}"
    ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={
        "MetadataOptions": {"HttpTokens": "optional", "HttpPutResponseHopLimit": 1}})
    first = ensure_imds_template(ec2, name)
    assert first["version"] == "2" and {k: options_of(ec2, first)[k] for k in IMDS_OPTIONS} == IMDS_OPTIONS
    assert ensure_imds_template(ec2, name) == first  # up to date: no new version


def old_environment(batch: Any, name: str, settings: dict[str, Any], **resources: Any) -> None:
    """A compute environment as an older `runner init aws` (or its user) made it."""
    batch.create_compute_environment(
        computeEnvironmentName=name, type="MANAGED", state="ENABLED", serviceRole=settings["service_role"],
        computeResources={"type": "SPOT", "allocationStrategy": "SPOT_PRICE_CAPACITY_OPTIMIZED", "minvCpus": 0,
                          "maxvCpus": 8, "instanceTypes": ["m5.large"], "subnets": settings["subnets"],
                          "securityGroupIds": settings["security_group_ids"],
                          "instanceRole": settings["instance_role"], **resources})


def sent_updates(batch: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    batch.meta.events.register("provide-client-params.batch.UpdateComputeEnvironment",
                               lambda params, **kwargs: sent.append(dict(params)))
    return sent


def test_init_again_finds_the_template_unchanged(moto_server: Any) -> None:
    settings = prerequisites(moto_server)
    batch = client(moto_server, "batch")
    spec = spec_from_dict({"name": "imds", "image": "localhost/x:1", "backend": "aws", "aws": settings,
                           "checkpoint": {"uri": "s3://bucket/imds"}})
    ensure_batch(batch, spec, lambda line: None, wait_s=30)
    said: list[str] = []
    updates = sent_updates(batch)
    ensure_batch(batch, spec, said.append, wait_s=30)
    assert said[0].startswith("found compute environment") and "hop limit 2" in said[0], said
    assert said[0].endswith("unchanged") and updates == [], said


def test_an_older_environment_gets_the_template_and_a_users_template_is_left_alone(moto_server: Any) -> None:
    """moto keeps launchTemplate as created (its UpdateComputeEnvironment ignores it): check what is sent."""
    settings = prerequisites(moto_server)
    batch = client(moto_server, "batch")
    spec = spec_from_dict({"name": "imds", "image": "localhost/x:1", "backend": "aws", "aws": settings,
                           "checkpoint": {"uri": "s3://bucket/imds"}})
    ce_name = f"{settings['job_queue']}-spot"
    old_environment(batch, ce_name, settings)
    updates = sent_updates(batch)
    said: list[str] = []
    ensure_batch(batch, spec, said.append, wait_s=30)
    assert said[0].startswith(f"updated compute environment {ce_name}: launch template {ce_name}-imds"), said
    [update] = updates
    assert update["computeResources"]["launchTemplate"] == {"launchTemplateName": f"{ce_name}-imds", "version": "1"}

    theirs = {**settings, "job_queue": f"{settings['job_queue']}x", "compute_environment": f"{ce_name}-theirs"}
    old_environment(batch, f"{ce_name}-theirs", settings,
                    launchTemplate={"launchTemplateName": "users-own", "version": "3"})
    spec = spec_from_dict({"name": "imds", "image": "localhost/x:1", "backend": "aws", "aws": theirs,
                           "checkpoint": {"uri": "s3://bucket/imds"}})
    said = []
    ensure_batch(batch, spec, said.append, wait_s=30)
    assert said[0].startswith(f"note: compute environment {ce_name}-theirs uses your launch template users-own")
    assert "HttpPutResponseHopLimit=2" in said[0] and len(updates) == 1, said
