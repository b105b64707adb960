"""Several servers on one PostgreSQL and one S3 bucket (moto): any server
answers any request, wake-ups cross servers, and launchers carry on through
the next server when theirs dies."""

from __future__ import annotations

import base64
import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from runyard.core.states import RunState
from runyard.crypto import generate_key, key_to_pem, make_csr
from runyard.devstack import PostgresCluster
from tests.conftest import free_port
from tests.e2e.test_runs import log_text
from tests.harness import LauncherProcess, PoolCreds, ServerProcess, cli, wait_for

SHARED_KEY = "a-secret-key-every-server-shares"


@dataclass
class Cluster:
    a: ServerProcess
    b: ServerProcess
    bucket: str
    creds: PoolCreds
    s3_endpoint: str


@pytest.fixture
def cluster(tmp_path: Path, postgres: PostgresCluster, aws_env: str, sync_dir: Path) -> Iterator[Cluster]:
    bucket = f"runyard-{free_port()}"
    boto3.client("s3", endpoint_url=aws_env).create_bucket(Bucket=bucket)
    url = postgres.new_database()
    ports = free_port(), free_port()
    env = {"RUNYARD_BLOB_URL": f"s3://{bucket}/prod?endpoint_url={aws_env}", "RUNYARD_SECRET_KEY": SHARED_KEY,
           "RUNYARD_PUBLIC_ENDPOINTS": ",".join(f"http://127.0.0.1:{p}" for p in ports),
           "RUNYARD_SCHEDULER_LEASE_TTL": "3s"}
    a = ServerProcess(tmp_path / "a" / "data", ports[0], database_url=url, extra_env=env).start()
    b = ServerProcess(tmp_path / "b" / "data", ports[1], admin_key=a.admin_key, database_url=url,
                      extra_env=env).start()
    key = generate_key(2048)
    with a.client() as client:
        created = client.create_pool("p1", make_csr(key).decode())
    with b.client() as client:
        token = client.pool_token("p1")  # from the other server: the same pool, both endpoints
    creds = PoolCreds("p1", created.pool.id, token, base64.b64encode(key_to_pem(key)).decode())
    try:
        yield Cluster(a, b, bucket, creds, aws_env)
    finally:
        a.stop()
        b.stop()


def test_two_servers_share_runs_logs_and_sources_and_survive_losing_one(cluster: Cluster, tmp_path: Path,
                                                                       sync_dir: Path) -> None:
    a, b = cluster.a, cluster.b
    launchers = [LauncherProcess(cluster.creds, tmp_path / f"w{i}", extra_env={"RUNYARD_EXECUTOR": "process"})
                 .start() for i in range(2)]
    try:
        with a.client() as client:  # the token lists server a first: the launchers poll it
            wait_for(lambda: len(client.workers("p1")) == 2, 30, "both launchers to register")
        src = tmp_path / "src"
        src.mkdir()
        (src / "main.sh").write_text('for i in $(seq 1 5); do echo "line $i of $RUNYARD_RUN_ID"; done\n')
        cli(b, "stack", "create", "s1", "--pool", "p1", "--source", str(src), "--plan", "sh main.sh", check=True)
        # Triggered and followed on b; taken by launchers polling a (woken through PostgreSQL).
        runs = [json.loads(cli(b, "run", "trigger", "s1", "--proposed", "--wait", "--output", "json",
                               check=True).stdout) for _ in range(3)]
        assert [r["state"] for r in runs] == ["FINISHED"] * 3
        for run in runs:
            from_a, from_b = log_text(a, run["id"]), log_text(b, run["id"])
            assert from_a == from_b and f"line 5 of {run['id']}" in from_b
        s3 = boto3.client("s3", endpoint_url=cluster.s3_endpoint)
        objects = s3.list_objects_v2(Bucket=cluster.bucket, Prefix="prod/")["Contents"]
        keys = {o["Key"] for o in objects}
        assert any(k.startswith("prod/sources/") for k in keys) and any(k.startswith("prod/logs/") for k in keys)

        # A run in progress when server a dies finishes through b, its log whole.
        go = sync_dir / "go"
        long = cli(b, "run", "task", "s1", "--command",
                   f"echo before; while [ ! -e {go} ]; do sleep 0.05; done; echo after", check=True).stdout.strip()
        with b.client() as client:
            wait_for(lambda: any(ln.msg == "before" for ln in client.logs(long, wait=2).lines), 30, "the run to start")
        assert a.proc is not None
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        go.touch()
        more = [json.loads(cli(b, "run", "trigger", "s1", "--proposed", "--wait", "--output", "json",
                               timeout=90, check=True).stdout) for _ in range(2)]
        assert [r["state"] for r in more] == ["FINISHED"] * 2
        with b.client() as client:
            wait_for(lambda: client.run(long).state.terminal, 60, "the long run to end")
            assert client.run(long).state == RunState.FINISHED
            lines = [ln.msg for ln in client.logs(long).lines]
        assert lines.count("before") == 1 and lines.count("after") == 1
        assert [ln for ln in lines if not ln.startswith("[runyard]")] == ["before", "after"]
        for proc in launchers:
            assert proc.proc is not None and proc.proc.poll() is None  # none gave up
    finally:
        for proc in launchers:
            proc.stop()
