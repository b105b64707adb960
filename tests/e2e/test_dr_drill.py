"""The DR drill: a primary and a standby in two sites on one PostgreSQL, each
with its own bucket (moto), two launchers that know both. The primary is
lost in the middle of dispatching, killed with SIGKILL or with its host gone
(stopped, every packet to and from it dropped); the standby takes over by
itself; every run ends as it would have, none starts twice, every log is
whole. Then the old primary comes back as a standby and fails back."""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
import pytest

from runyard.client import Client
from runyard.core.states import RunKind, RunState
from runyard.crypto import generate_key, key_to_pem, make_csr
from runyard.devstack import PostgresCluster
from tests.conftest import free_port, gone
from tests.harness import LauncherProcess, PoolCreds, ServerProcess, cli, wait_for

TICKS = 100  # the long run prints a line every 50 ms


@dataclass
class Sites:
    primary: ServerProcess
    standby: ServerProcess
    creds: PoolCreds


@pytest.fixture
def sites(tmp_path: Path, postgres: PostgresCluster, aws_env: str) -> Iterator[Sites]:
    s3 = boto3.client("s3", endpoint_url=aws_env)
    buckets = f"primary-{free_port()}", f"standby-{free_port()}"
    for bucket in buckets:
        s3.create_bucket(Bucket=bucket)
    url = postgres.new_database()
    ports = free_port(), free_port()
    endpoints = [f"http://127.0.0.1:{p}" for p in ports]
    blob = [f"s3://{b}/runyard?endpoint_url={aws_env}" for b in buckets]
    common = {"RUNYARD_SECRET_KEY": "dr-drill-shared-secret-key", "RUNYARD_PUBLIC_ENDPOINTS": ",".join(endpoints),
              "RUNYARD_WORKER_LOST_AFTER": "60s"}
    primary = ServerProcess(tmp_path / "primary" / "data", ports[0], database_url=url, extra_env={
        **common, "RUNYARD_SITE": "eu-west", "RUNYARD_BLOB_URL": blob[0], "RUNYARD_PEER_BLOB_URL": blob[1]}).start()
    wait_for(lambda: primary.role() == "primary", 15, "the primary to take the lease")
    standby = ServerProcess(tmp_path / "standby" / "data", ports[1], admin_key=primary.admin_key, database_url=url,
                            extra_env={**common, "RUNYARD_STANDBY": "true", "RUNYARD_SITE": "eu-central",
                                       "RUNYARD_BLOB_URL": blob[1], "RUNYARD_PEER_BLOB_URL": blob[0]}).start()
    key = generate_key(2048)
    with primary.client() as client:
        created = client.create_pool("p1", make_csr(key).decode())
    creds = PoolCreds("p1", created.pool.id, created.token, base64.b64encode(key_to_pem(key)).decode())
    try:
        yield Sites(primary, standby, creds)
    finally:
        primary.stop()
        standby.stop()


def both(sites: Sites) -> Client:
    """A client that, like the launchers, knows both sites."""
    return Client([sites.primary.endpoint, sites.standby.endpoint], sites.primary.admin_key)


def starts(run: dict) -> int:  # type: ignore[type-arg]
    return [t["state"] for t in run["transitions"]].count("PREPARING")


@pytest.mark.parametrize("lose", ["kill", "host"])
def test_the_standby_takes_over_by_itself_and_nothing_is_lost_or_run_twice(sites: Sites, tmp_path: Path,
                                                                         sync_dir: Path, lose: str) -> None:
    launchers = [LauncherProcess(sites.creds, tmp_path / f"w{i}", extra_env={"RUNYARD_EXECUTOR": "process"})
                 .start() for i in range(2)]
    client = both(sites)
    try:
        wait_for(lambda: len(client.workers("p1")) == 2, 30, "both launchers to register")
        src = tmp_path / "src"
        src.mkdir()
        (src / "tick.sh").write_text(f'for i in $(seq 1 {TICKS}); do echo "tick $i"; sleep 0.05; done\n')
        cli(sites.primary, "stack", "create", "s1", "--pool", "p1", "--source", str(src), "--plan", "true",
            check=True)
        cli(sites.primary, "stack", "create", "gated", "--pool", "p1", "--source", str(src), "--plan",
            "echo planned", "--apply", "echo applied", "--no-autodeploy", check=True)
        # A Terraform state written before the failure, as terraform's http backend writes it.
        state = {"version": 4, "serial": 3, "lineage": "drill-lineage", "terraform_version": "1.11.0",
                 "resources": [], "outputs": {}}
        stack_id = client.stack("s1").id
        stored = httpx.post(f"{sites.primary.endpoint}/api/v1/stacks/{stack_id}/state", json=state,
                            auth=("runyard", sites.primary.admin_key))
        assert stored.status_code == 200, stored.text
        # Waiting for confirmation.
        gated = client.trigger("gated", RunKind.TRACKED)
        wait_for(lambda: client.run(gated.id).state == RunState.UNCONFIRMED, 30, "the plan to wait for confirmation")
        # Running, printing a line every 50 ms.
        ticking = client.trigger("s1", RunKind.TASK, "sh tick.sh")
        wait_for(lambda: any(ln.msg == "tick 5" for ln in client.logs(ticking.id).lines), 30, "the ticks to start")
        # Mid-dispatch: a burst triggered at once, the primary killed while they are handed out.
        with ThreadPoolExecutor(4) as pool:
            burst = list(pool.map(lambda _: client.trigger("s1", RunKind.PROPOSED).id, range(8)))
        assert sites.primary.proc is not None
        with contextlib.ExitStack() as lost:
            if lose == "host":  # it neither refuses nor answers: only waiting tells
                lost.enter_context(gone(sites.primary.port))
            sites.primary.proc.send_signal(signal.SIGKILL if lose == "kill" else signal.SIGSTOP)
            killed = time.monotonic()
            wait_for(lambda: sites.standby.role() == "primary", 20, "the standby to take over")
            took = time.monotonic() - killed
            assert took < 15, f"the standby took {took:.1f}s to hold the lease"
            # After the failure: confirm the waiting plan through the new primary.
            client.confirm(gated.id)
            every = [ticking.id, gated.id, *burst]
            wait_for(lambda: all(client.run(r).state.terminal for r in every), 90, "every run to end")
        sites.primary.proc.kill()
        sites.primary.proc.wait(10)
        runs = {r: json.loads(cli(sites.standby, "run", "show", r, "-o", "json", check=True).stdout) for r in every}
        assert {r["state"] for r in runs.values()} == {"FINISHED"}, {k: (v["state"], v["reason"])
                                                                     for k, v in runs.items()}
        assert all(starts(runs[r]) == 1 for r in [ticking.id, *burst])  # none started twice
        assert starts(runs[gated.id]) == 2  # its plan, then its apply
        ticks = [ln.msg for ln in client.logs(ticking.id).lines if ln.msg.startswith("tick ")]
        assert ticks == [f"tick {i}" for i in range(1, TICKS + 1)]  # whole: none missing, none twice
        seqs = [ln.seq for ln in client.logs(ticking.id).lines]
        assert seqs == list(range(1, len(seqs) + 1))
        gated_log = [ln.msg for ln in client.logs(gated.id).lines]
        assert gated_log.count("planned") == 1 and gated_log.count("applied") == 1
        # The state written before the failure, read from the standby's site.
        read = httpx.get(f"{sites.standby.endpoint}/api/v1/stacks/{stack_id}/state",
                         auth=("runyard", sites.primary.admin_key))
        assert read.status_code == 200 and read.json()["lineage"] == "drill-lineage"

        # The old primary comes back: it finds the lease with the other site and stands by.
        sites.primary.log.close() if sites.primary.log else None
        sites.primary.start()
        wait_for(lambda: sites.primary.role() == "standby", 15, "the old primary to come back as a standby")
        # Fail back under load.
        with ThreadPoolExecutor(4) as pool:
            during = list(pool.map(lambda _: client.trigger("s1", RunKind.PROPOSED).id, range(6)))
            promoted = cli(sites.primary, "dr", "promote", "--endpoint", sites.primary.endpoint, check=True)
            after = list(pool.map(lambda _: client.trigger("s1", RunKind.PROPOSED).id, range(6)))
        assert "role primary" in promoted.stdout
        wait_for(lambda: sites.standby.role() == "standby", 15, "the standby to stand by again")
        wait_for(lambda: all(client.run(r).state.terminal for r in during + after), 90, "the failback runs to end")
        for run_id in during + after:
            shown = client.run(run_id)
            assert shown.state == RunState.FINISHED, (run_id, shown.reason)
            assert [t.state for t in shown.transitions].count(RunState.PREPARING) == 1
        status = cli(sites.primary, "dr", "status", "--endpoint", sites.primary.endpoint, "--endpoint",
                     sites.standby.endpoint, check=True).stdout
        assert "eu-west" in status and "primary" in status and "standby" in status
        for proc in launchers:
            assert proc.proc is not None and proc.proc.poll() is None  # no launcher restarted or gave up
    finally:
        client.close()
        for proc in launchers:
            proc.stop()
