"""The AWS template's user data, run in a fresh Debian container as on a new
instance: it installs runyard from this checkout, reads the pool's token and
key from SSM (moto), makes the runyard user, and its launcher registers and
takes a run as that user."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import boto3
import pytest

from runyard.core.states import RunKind, RunState
from runyard.deploy import aws_pool_template
from runyard.devstack import DevStackError
from tests.conftest import missing
from tests.harness import ServerProcess, cli, make_pool, wait_for

IMAGE = "runyard/test-host:bookworm"
CHECKOUT = Path(__file__).resolve().parents[2]
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def user_data(values: dict[str, str]) -> str:
    """The template's user data as CloudFormation renders it (``!Sub``)."""
    text = aws_pool_template(values["PoolName"], values["ServerEndpoints"])
    head, script_marker = "            - |\n", "            - Script: |\n"
    body = text[text.index(head) + len(head):text.index(script_marker)]
    script = text[text.index(script_marker) + len(script_marker):text.index("\n  AutoScalingGroup:")]
    rendered = "\n".join([ln[14:] for ln in body.splitlines()] + [ln[16:] for ln in script.splitlines()])
    rendered = rendered.replace("${Script}", "").replace("${AWS::Region}", values["AWSRegion"])
    for name, value in values.items():
        rendered = rendered.replace("${" + name + "}", value)
    return rendered.replace("${!", "${") + "\n"  # ${!X} is CloudFormation's literal ${X}


@pytest.fixture
def host_image() -> str:
    done = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, timeout=60)
    if done.returncode != 0:
        missing(f"no {IMAGE} image (scripts/test builds it with debootstrap)")
    return IMAGE


def test_the_user_data_installs_runyard_and_its_launcher_takes_a_run_as_the_runyard_user(
        server: ServerProcess, tmp_path: Path, host_image: str, aws_env: str) -> None:
    with server.client() as client:
        creds = make_pool(client, "fleet")
    ssm = boto3.client("ssm", endpoint_url=aws_env)
    ssm.put_parameter(Name="/runyard/fleet/token", Value=creds.token, Type="SecureString", Overwrite=True)
    ssm.put_parameter(Name="/runyard/fleet/private-key", Value=creds.key_b64, Type="SecureString", Overwrite=True)
    script = user_data({
        "PoolName": "fleet", "ServerEndpoints": server.endpoint, "HttpProxy": "", "HttpsProxy": "", "NoProxy": "",
        "AWSRegion": "us-east-1", "CredentialsStore": "ssm", "TokenName": "/runyard/fleet/token",
        "PrivateKeyName": "/runyard/fleet/private-key", "RunyardPackage": "/src", "RunAsRoot": "false",
        "PowerOffOnExit": "true", "CustomUserDataSecretArn": "", "CaCertificatesParameter": ""})
    (tmp_path / "user-data.sh").write_text(script)
    name = f"runyard-host-{uuid.uuid4().hex[:8]}"
    env = {"RUNYARD_INSTANCE_ID": "i-0fromuserdata", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_ENDPOINT_URL": aws_env, "PIP_CERT": "/etc/ssl/certs/host-ca.crt",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    mounts = ["-v", f"{CHECKOUT}:/src-ro:ro", "-v", f"{tmp_path / 'user-data.sh'}:/user-data.sh:ro"]
    if HOST_CA.is_file():  # this network's TLS goes through the host's roots
        mounts += ["-v", f"{HOST_CA}:/etc/ssl/certs/host-ca.crt:ro"]
    # The checkout is copied first: pip builds in it, and it is read-only.
    command = "cp -r /src-ro /src && rm -rf /src/.venv && exec bash /user-data.sh"
    subprocess.run(["docker", "run", "-d", "--name", name, "--pull", "never", "--network", "host",
                    *[a for k, v in env.items() for a in ("-e", f"{k}={v}")], *mounts, host_image,
                    "bash", "-c", command], check=True, capture_output=True, timeout=60)
    try:
        def registered() -> bool:
            state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name], capture_output=True,
                                   text=True, timeout=30).stdout.strip()
            if state != "true":
                raise DevStackError("the instance's container exited")
            with server.client() as client:
                return any(w.metadata.get("instance_id") == "i-0fromuserdata" for w in client.workers("fleet"))

        try:
            wait_for(registered, 600, "the instance's launcher to register")
        except DevStackError:
            logs = subprocess.run(["docker", "logs", "--tail", "60", name], capture_output=True, text=True)
            raise AssertionError(f"the user data did not bring a launcher up:\n{logs.stdout}{logs.stderr}") from None
        src = tmp_path / "src"
        src.mkdir()
        (src / "x").write_text("x\n")
        cli(server, "stack", "create", "who", "--pool", "fleet", "--source", str(src), "--plan", "id -un",
            check=True)
        with server.client() as client:
            run = client.trigger("who", RunKind.PROPOSED)
            wait_for(lambda: client.run(run.id).state.terminal, 60, "the run to end")
            done = client.run(run.id)
            lines = [ln.msg for ln in client.logs(run.id).lines]
            assert done.state == RunState.FINISHED, (done.reason, lines)
            assert "runyard" in lines
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


