"""The autoscaler against a real AWS API emulator (moto's server) through boto3,
and a real runyard server."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from runyard.autoscaler.loop import Autoscaler
from runyard.aws import AutoScalingGroup
from runyard.client import Client
from runyard.config import LauncherSettings
from runyard.core.errors import WorkerGone
from runyard.core.scaling import Limits, Reason
from runyard.core.states import RunKind, RunState
from runyard.launcher.executors.process import ProcessExecutor
from runyard.launcher.launcher import Launcher, with_pool_token
from tests.conftest import free_port
from tests.harness import wait_for
from tests.integration.conftest import Api, b64key

REGION = "us-east-1"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": moto_endpoint}.items():
        monkeypatch.setenv(name, value)
    asg = boto3.client("autoscaling", region_name=REGION, endpoint_url=moto_endpoint)
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto_endpoint)
    group = f"g{free_port()}"
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    asg.create_launch_configuration(LaunchConfigurationName=group, ImageId=ami, InstanceType="t3.micro")
    asg.create_auto_scaling_group(AutoScalingGroupName=group, LaunchConfigurationName=group, MinSize=0,
                                  MaxSize=10, DesiredCapacity=0, AvailabilityZones=[f"{REGION}a"])
    return {"asg": asg, "group": group, "endpoint": moto_endpoint}


def scaler(api: Api, aws: dict[str, Any], limits: Limits, client: Client | None = None,
           boot_grace: float = 300) -> Autoscaler:
    provider = AutoScalingGroup(aws["group"], REGION, aws["endpoint"])
    return Autoscaler(client or api.client, "p1", provider, limits, boot_grace=boot_grace)


def instances(aws: dict[str, Any]) -> list[str]:
    group = aws["asg"].describe_auto_scaling_groups(AutoScalingGroupNames=[aws["group"]])["AutoScalingGroups"][0]
    return [i["InstanceId"] for i in group["Instances"]]


def desired(aws: dict[str, Any]) -> int:
    group = aws["asg"].describe_auto_scaling_groups(AutoScalingGroupNames=[aws["group"]])["AutoScalingGroups"][0]
    return int(group["DesiredCapacity"])


def test_scale_out_from_zero_on_queued_runs_without_overshoot_and_within_max(api: Api, aws):
    api.pool()
    api.stack()
    for _ in range(3):
        api.client.trigger("s1", RunKind.PROPOSED)
    auto = scaler(api, aws, Limits(0, 4))
    assert auto.step(api.client.demand("p1")).reason == Reason.SCALE_OUT
    assert desired(aws) == 3 and len(instances(aws)) == 3
    # The instances boot (no worker yet): they count, so nothing more is asked.
    assert auto.step(api.client.demand("p1")).reason == Reason.STEADY
    assert desired(aws) == 3
    for _ in range(7):
        api.client.trigger("s1", RunKind.PROPOSED)
    assert auto.step(api.client.demand("p1")).reason == Reason.AT_MAX
    assert desired(aws) == 4


def test_min_holds(api: Api, aws):
    api.pool()
    auto = scaler(api, aws, Limits(1, 4))
    auto.step(api.client.demand("p1"))
    assert desired(aws) == 1


def register_on(api: Api, creds: tuple[str, str, RSAPrivateKey], instance: str) -> Client:
    return api.worker(*creds, metadata={"instance_id": instance})


def test_scale_in_takes_only_idle_workers_with_a_decrement_each(api: Api, aws):
    creds = api.pool()
    api.stack()
    aws["asg"].set_desired_capacity(AutoScalingGroupName=aws["group"], DesiredCapacity=3)
    ids = instances(aws)
    workers = [register_on(api, creds, i) for i in ids]
    run = api.client.trigger("s1", RunKind.PROPOSED)
    busy = workers[0].poll(2).assignment
    assert busy is not None and busy.run.id == run.id
    auto = scaler(api, aws, Limits(0, 4, scale_in_cooldown=0, idle_before_scale_in=0))
    decision = auto.step(api.client.demand("p1"))
    assert decision.reason == Reason.SCALE_IN and len(decision.retire) == 2
    assert desired(aws) == 1 and instances(aws) == [ids[0]]  # the busy worker's instance stays
    left = api.client.workers("p1")
    assert len(left) == 1 and left[0].current_run_id == run.id
    assert api.client.run(run.id).state == RunState.READY  # never killed


class RacingClient(Client):
    """Makes the retired worker take a run between the decision and the drain."""

    def __init__(self, endpoint: str, key: str, worker: Client) -> None:
        super().__init__([endpoint], key)
        self.worker = worker
        self.raced = False

    def drain(self, worker_id: str, drained: bool = True) -> Any:
        if drained and not self.raced:
            self.raced = True
            assert self.worker.poll(2).assignment is not None
        return super().drain(worker_id, drained)


def test_a_worker_that_takes_a_run_while_being_retired_is_undrained_and_kept(api: Api, aws):
    creds = api.pool()
    api.stack()
    aws["asg"].set_desired_capacity(AutoScalingGroupName=aws["group"], DesiredCapacity=1)
    (instance,) = instances(aws)
    worker = register_on(api, creds, instance)
    racing = RacingClient(api.url, api.client.credential, worker)
    api.opened.append(racing)
    auto = scaler(api, aws, Limits(0, 4, scale_in_cooldown=0, idle_before_scale_in=0), client=racing)
    demand = api.client.demand("p1")  # idle worker, nothing queued: it would be retired...
    api.client.trigger("s1", RunKind.PROPOSED)  # ...but a run arrives and it takes it in between
    decision = auto.step(demand)
    assert racing.raced and decision.reason == Reason.NO_IDLE
    assert instances(aws) == [instance] and desired(aws) == 1
    (kept,) = api.client.workers("p1")
    assert kept.status == "BUSY" and kept.current_run_id


def test_reconcile_stray_instances_and_ghost_workers(api: Api, aws):
    creds = api.pool()
    api.stack()
    aws["asg"].set_desired_capacity(AutoScalingGroupName=aws["group"], DesiredCapacity=2)
    _stray, served = instances(aws)  # the first never registers a worker
    register_on(api, creds, served)
    ghost = register_on(api, creds, "i-00000000gone")
    run = api.client.trigger("s1", RunKind.PROPOSED)
    assignment = ghost.poll(2).assignment
    assert assignment is not None
    ghost.report(run.id, assignment.lease, RunState.PREPARING)  # it had started the run
    auto = scaler(api, aws, Limits(0, 4, scale_in_cooldown=3600), boot_grace=0)
    auto.step(api.client.demand("p1"))
    assert instances(aws) == [served]  # the instance that never registered is gone...
    assert desired(aws) == 1  # ...with its capacity
    assert [w.metadata["instance_id"] for w in api.client.workers("p1")] == [served]
    failed = api.client.run(run.id)
    assert failed.state == RunState.FAILED and failed.reason == "worker lost"


def test_the_pool_token_can_come_from_an_ssm_secure_string(api: Api, aws, tmp_path):
    pool_id, token, key = api.pool()
    ssm = boto3.client("ssm", region_name=REGION, endpoint_url=aws["endpoint"])
    ssm.put_parameter(Name="/runyard/p1/token", Value=token, Type="SecureString", Overwrite=True)
    settings, _ = LauncherSettings.resolve(
        {"token_ssm_parameter": "/runyard/p1/token", "pool_private_key": b64key(key), "work_dir": tmp_path},
        env={})
    launcher = Launcher(with_pool_token(settings), ProcessExecutor(), env={})
    assert launcher.token.pool_id == pool_id
    with pytest.raises(Exception, match="SSM parameter /runyard/nope"):
        Launcher(with_pool_token(settings.model_copy(update={"token_ssm_parameter": "/runyard/nope"})),
                 ProcessExecutor(), env={})


def test_the_shipped_shutdown_hook_ends_an_idle_instance_with_a_decrement(aws):
    aws["asg"].set_desired_capacity(AutoScalingGroupName=aws["group"], DesiredCapacity=2)
    first, second = instances(aws)
    hook = ROOT / "deploy" / "aws" / "shutdown-hook.sh"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "RUNYARD_METADATA_instance_id": first}
    assert subprocess.run([str(hook)], env={**env, "RUNYARD_SHUTDOWN_REASON": "cycled"}, timeout=60).returncode == 0
    assert desired(aws) == 2  # only an idle exit ends the instance
    done = subprocess.run([str(hook)], env={**env, "RUNYARD_SHUTDOWN_REASON": "idle"}, timeout=60,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert desired(aws) == 1 and instances(aws) == [second]


def test_autoscaler_metrics(api: Api, aws):
    import httpx

    from runyard.autoscaler.metrics import serve

    api.pool()
    api.stack()
    api.client.trigger("s1", RunKind.PROPOSED)
    auto = scaler(api, aws, Limits(0, 4))
    auto.step(api.client.demand("p1"))
    port = free_port()
    serve([auto], port)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'runyard_autoscaler_desired{pool="p1"} 1.0' in text
    assert 'runyard_autoscaler_booting{pool="p1"} 1.0' in text
    assert 'runyard_autoscaler_decisions_total{pool="p1",reason="scale-out"} 1.0' in text


def ended(api: Api, run_id: str) -> bool:
    return api.client.run(run_id).state.terminal


class LauncherThread:
    """A real launcher (process executor) in a thread, as one instance's worker."""

    def __init__(self, api: Api, creds: tuple[str, str, RSAPrivateKey], instance: str, work_dir: Path) -> None:
        _, token, key = creds
        settings, _ = LauncherSettings.resolve(
            {"token": token, "pool_private_key": b64key(key), "work_dir": work_dir, "executor": "process",
             "endpoints": api.url,
             "long_poll": "5s", "heartbeat_interval": "1s"}, env={})
        self.launcher = Launcher(settings, ProcessExecutor(), env={"RUNYARD_METADATA_instance_id": instance,
                                                                   "PATH": os.environ["PATH"]})
        self.instance = instance
        self.reason = ""
        self.thread = threading.Thread(target=self._run, name=f"launcher-{instance}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.reason = self.launcher.run()

    def end(self) -> None:
        """The instance goes away: SIGTERM, as EC2 sends at shutdown."""
        self.launcher.interrupt()
        self.thread.join(30)


def test_a_scaled_in_launcher_exits_instead_of_joining_again_and_no_run_is_lost(api: Api, aws, tmp_path):
    creds = api.pool()
    api.stack()
    aws["asg"].set_desired_capacity(AutoScalingGroupName=aws["group"], DesiredCapacity=2)
    launchers = [LauncherThread(api, creds, i, tmp_path / i) for i in instances(aws)]
    try:
        wait_for(lambda: len(api.client.workers("p1")) == 2, 30, "both launchers to register")
        auto = scaler(api, aws, Limits(1, 4, scale_in_cooldown=0, idle_before_scale_in=0))
        decision = auto.step(api.client.demand("p1"))
        assert decision.reason == Reason.SCALE_IN and len(decision.retire) == 1
        retired = next(ln for ln in launchers if ln.instance == decision.retire[0].instance_id)
        kept = next(ln for ln in launchers if ln is not retired)
        # EC2 takes a while to stop a terminated instance: its launcher is still
        # running while runs arrive. It must leave, not join again and take them.
        runs = [api.client.trigger("s1", RunKind.PROPOSED).id for _ in range(5)]
        retired.thread.join(30)
        assert retired.reason == "scaled-in" and retired.launcher.registrations == 1
        for run_id in runs:
            wait_for(functools.partial(ended, api, run_id), 60, f"run {run_id} to end")
        done = [api.client.run(r) for r in runs]
        assert [r.state for r in done] == [RunState.FINISHED] * 5
        assert {r.worker_id for r in done} == {kept.launcher.worker_id}
        assert [w.id for w in api.client.workers("p1")] == [kept.launcher.worker_id]
        # A launcher of an older release on that instance would try again: refused.
        with pytest.raises(WorkerGone, match="scaled in"):
            register_on(api, creds, retired.instance)
    finally:
        for ln in launchers:
            ln.end()


def test_a_launcher_the_server_lost_joins_again_with_a_delay_and_takes_runs(api: Api, aws, tmp_path):
    creds = api.pool()
    api.stack()
    launcher = LauncherThread(api, creds, "i-00000000lost", tmp_path / "w")
    try:
        first = wait_for(lambda: api.client.workers("p1"), 30, "the launcher to register")[0]
        api.client.remove_worker(first.id, "worker lost")
        second = wait_for(lambda: [w for w in api.client.workers("p1") if w.id != first.id], 30,
                          "the launcher to register again")[0]
        # The server stores the registration before the launcher hears its answer.
        wait_for(lambda: launcher.launcher.registrations == 2, 10, "the launcher to hear it registered again")
        run = api.client.trigger("s1", RunKind.PROPOSED)
        wait_for(lambda: api.client.run(run.id).state.terminal, 60, "the run to end")
        done = api.client.run(run.id)
        assert done.state == RunState.FINISHED and done.worker_id == second.id
    finally:
        launcher.end()
    assert launcher.reason == "interrupted"
