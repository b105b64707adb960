"""The AWS worker pool template: cfn-lint clean, deployed on moto's
CloudFormation through boto3, driven by the autoscaler; and the host setup
its user data runs, against moto's SSM."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from runyard.aws import AutoScalingGroup
from runyard.deploy import AWS_POOL, aws_pool_template
from runyard.launcher.host import HostSettings, fetch_secret, setup
from tests.conftest import free_port, missing

REGION = "us-east-1"


def test_the_template_is_cfn_lint_clean(tmp_path: Path) -> None:
    cfn_lint = shutil.which("cfn-lint", path=str(Path(sys.executable).parent))
    if cfn_lint is None:
        missing("cfn-lint is not installed (pip install cfn-lint)")
        return
    filled = tmp_path / "pool.yaml"
    filled.write_text(aws_pool_template("builders", "https://runyard.internal"))
    for template in (AWS_POOL, filled):
        done = subprocess.run([cfn_lint, str(template)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr


def test_deploy_template_fills_in_the_pools_values() -> None:
    text = aws_pool_template("builders", "https://a.internal,https://b.internal")
    assert 'Default: "builders"' in text and 'Default: "https://a.internal,https://b.internal"' in text
    assert 'Default: "/runyard/builders/token"' in text and 'Default: "runyard-builders"' in text


def network(endpoint: str) -> tuple[str, str, str]:
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.7.1.0/24", AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=f"runyard-{free_port()}", Description="runyard workers",
                                      VpcId=vpc)["GroupId"]
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    return subnet, group, ami


def test_the_template_deploys_on_cloudformation_and_the_autoscaler_drives_its_group(aws_env: str) -> None:
    subnet, security_group, ami = network(aws_env)
    name = f"runyard-builders-{free_port()}"
    cfn = boto3.client("cloudformation", region_name=REGION, endpoint_url=aws_env)
    params = {"PoolName": "builders", "ImageId": ami, "InstanceType": "t3.small", "SubnetIds": subnet,
              "SecurityGroupIds": security_group, "GroupName": name, "MinSize": "0", "MaxSize": "5",
              "DesiredCapacity": "1", "UseSpot": "true", "TokenName": "/runyard/builders/token",
              "PrivateKeyName": "/runyard/builders/private-key"}
    cfn.create_stack(StackName=name, TemplateBody=aws_pool_template("builders", ""),
                     Capabilities=["CAPABILITY_NAMED_IAM"],
                     Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()])
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs["AutoScalingGroupName"] == name
    assert f"asg_name: {name}" in outputs["AutoscalerSettings"]
    asg = boto3.client("autoscaling", region_name=REGION, endpoint_url=aws_env)
    (group,) = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (0, 5, 1)
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=aws_env)
    (template,) = ec2.describe_launch_templates(LaunchTemplateNames=[name])["LaunchTemplates"]
    data = ec2.describe_launch_template_versions(LaunchTemplateId=template["LaunchTemplateId"])[
        "LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["ImageId"] == ami and data["InstanceType"] == "t3.small"
    assert data["InstanceMarketOptions"]["MarketType"] == "spot"
    role = boto3.client("iam", endpoint_url=aws_env).get_role(RoleName=f"{name}-worker")["Role"]
    assert "ec2.amazonaws.com" in str(role["AssumeRolePolicyDocument"])
    # The autoscaler's AWS provider drives the group the stack made.
    provider = AutoScalingGroup(name, REGION, aws_env)
    provider.set_desired(3)
    state = provider.describe()
    assert state.desired == 3 and len(state.instances) == 3
    provider.terminate(state.instances[0].id)
    assert provider.describe().desired == 2


def test_host_setup_reads_credentials_from_ssm_and_writes_the_launchers_unit(aws_env: str, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_env)
    ssm = boto3.client("ssm", region_name=REGION)
    ssm.put_parameter(Name="/runyard/p1/token", Value="the-pool-token", Type="SecureString", Overwrite=True)
    ssm.put_parameter(Name="/runyard/p1/private-key", Value="YmFzZTY0IGtleQ==", Type="SecureString", Overwrite=True)
    ssm.put_parameter(Name="/runyard/ca", Value="-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
                      Type="String", Overwrite=True)
    host = HostSettings.from_env({
        "RUNYARD_POOL": "p1", "RUNYARD_STORE": "ssm", "RUNYARD_TOKEN_NAME": "/runyard/p1/token",
        "RUNYARD_KEY_NAME": "/runyard/p1/private-key", "RUNYARD_INSTANCE_ID": "i-0abc", "AWS_REGION": REGION,
        "RUNYARD_SERVER_ENDPOINTS": "https://a,https://b", "HTTPS_PROXY": "http://proxy:3128",
        "RUNYARD_CA_PARAMETER": "/runyard/ca", "RUNYARD_POWER_OFF": "true"})
    commands: list[list[str]] = []
    env_file = setup(host, fetch_secret(REGION), tmp_path, run=commands.append)
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert env["RUNYARD_TOKEN"] == '"the-pool-token"' and env["RUNYARD_POOL_PRIVATE_KEY"] == '"YmFzZTY0IGtleQ=="'
    assert env["RUNYARD_METADATA_instance_id"] == '"i-0abc"' and env["RUNYARD_ENDPOINTS"] == '"https://a,https://b"'
    assert env["RUNYARD_SPOT_INTERRUPTION_WATCH"] == '"true"' and env["HTTPS_PROXY"] == '"http://proxy:3128"'
    assert (tmp_path / "etc/runyard/ca-certificates.pem").read_text().startswith("-----BEGIN CERTIFICATE")
    assert env_file.stat().st_mode & 0o777 == 0o600
    unit = (tmp_path / "etc/systemd/system/runyard-launcher.service").read_text()
    assert "User=runyard" in unit and "ExecStopPost=/usr/bin/systemctl poweroff" in unit
    assert ["useradd", "--system", "--create-home", "--home-dir", "/var/lib/runyard", "--shell",
            "/usr/sbin/nologin", "runyard"] in commands
    assert commands[-1] == ["systemctl", "enable", "--now", "runyard-launcher.service"]
    # As root, and kept up after the launcher exits (for debugging).
    debug = HostSettings(**{**host.__dict__, "as_root": True, "power_off": False})
    commands.clear()
    setup(debug, fetch_secret(REGION), tmp_path / "debug", run=commands.append)
    unit = (tmp_path / "debug/etc/systemd/system/runyard-launcher.service").read_text()
    assert "User=root" in unit and "poweroff" not in unit
    assert not any(c[0] == "useradd" for c in commands)
