"""A real server, real launchers and the real CLI, from trigger to log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from runyard.core.states import RunState
from runyard.wire import RegisterIn
from tests.e2e.conftest import LauncherFactory
from tests.harness import RUNYARD, PoolCreds, ServerProcess, clean_env, cli, wait_for


def make_stack(server: ServerProcess, tmp_path: Path, name: str = "s1", *extra: str) -> None:
    src = tmp_path / f"src-{name}"
    src.mkdir()
    (src / "main.sh").write_text('echo "phase $1 sees GREETING=$GREETING and TOKEN=$TOKEN"\n')
    (src / "data.txt").write_text("payload\n")
    cli(server, "stack", "create", name, "--pool", "p1", "--source", str(src), "--tool", "shell",
        "--init", "sh main.sh init", "--plan", "sh main.sh plan", "--apply", "sh main.sh apply",
        "--env", "GREETING=hello", "--secret", "TOKEN=tok-very-secret-123", *extra, check=True)


def run_state(server: ServerProcess, run_id: str) -> dict[str, Any]:
    return json.loads(cli(server, "run", "show", run_id, "--output", "json", check=True).stdout)


def wait_state(server: ServerProcess, run_id: str, *states: RunState, timeout: float = 30) -> dict[str, Any]:
    with server.client() as client:
        def ended():
            client.logs(run_id, after=10**9, wait=2)  # returns as soon as the run moves
            r = client.run(run_id)
            return r if r.state in states else None
        wait_for(ended, timeout, f"run {run_id} to be {[s.value for s in states]}")
    return run_state(server, run_id)


def log_text(server: ServerProcess, run_id: str) -> str:
    return cli(server, "run", "logs", run_id, check=True).stdout


def test_a_tracked_run_goes_queued_to_finished_with_its_logs(server, launcher: LauncherFactory, tmp_path):
    proc = launcher(extra_env={"RUNYARD_METADATA_zone": "eu-1"})
    make_stack(server, tmp_path)
    trig = cli(server, "run", "trigger", "s1", "--wait", "--output", "json", timeout=60)
    assert trig.returncode == 0, trig.stderr
    run = json.loads(trig.stdout)
    assert run["state"] == "FINISHED"
    states = [t["state"] for t in run["transitions"]]
    assert states == ["QUEUED", "READY", "PREPARING", "INITIALIZING", "PLANNING", "APPLYING", "FINISHED"]
    assert all(t["at"] for t in run["transitions"])
    text = log_text(server, run["id"])
    for phase in ("init", "plan", "apply"):
        assert f"phase {phase} sees GREETING=hello and TOKEN=***" in text
    assert "tok-very-secret-123" not in text
    # The workspace is gone after the run.
    assert list(proc.work_dir.iterdir()) == []
    shown = json.loads(cli(server, "pool", "show", "p1", "--output", "json", check=True).stdout)
    assert shown["workers"][0]["metadata"] == {"zone": "eu-1"}


def test_a_run_sees_only_its_stack_variables(server, launcher, tmp_path):
    launcher(extra_env={"LAUNCHER_ONLY_SECRET": "should-not-leak"})
    make_stack(server, tmp_path)
    r = cli(server, "run", "task", "s1", "--command", "env | sort", "--wait", "--output", "json", timeout=60)
    assert r.returncode == 0, r.stderr
    names = {line.split("=", 1)[0] for line in log_text(server, json.loads(r.stdout)["id"]).splitlines()
             if "=" in line and not line.startswith("[runyard]")}
    assert "LAUNCHER_ONLY_SECRET" not in names and "RUNYARD_TOKEN" not in names
    # A CI job that retries its step with the same key gets the same run.
    keyed = [cli(server, "run", "task", "s1", "--command", "true", "--idempotency-key", "ci-42/1", check=True)
             .stdout.strip() for _ in range(2)]
    assert keyed[0] == keyed[1] and len(keyed[0]) == 26
    refused = cli(server, "run", "task", "s1", "--command", "false", "--idempotency-key", "ci-42/1")
    assert refused.returncode == 4 and "a new run needs a new key" in refused.stderr
    bad = cli(server, "run", "task", "s1", "--command", "true", "--idempotency-key", "two words")
    assert bad.returncode == 2 and "idempotency-key" in bad.stderr.lower()
    assert {"GREETING", "TOKEN", "RUNYARD_RUN_ID", "PATH"} <= names


def test_wait_exits_non_zero_when_the_run_fails(server, launcher, tmp_path):
    launcher()
    make_stack(server, tmp_path)
    r = cli(server, "run", "task", "s1", "--command", "echo failing; exit 3", "--wait", timeout=60)
    assert r.returncode == 1
    assert "FAILED: task command exited with code 3" in r.stderr


def test_logs_follow_shows_lines_while_the_run_is_still_running(server, launcher, tmp_path, sync_dir):
    launcher()
    make_stack(server, tmp_path)
    go = sync_dir / "go"
    cmd = f"echo first-line; while [ ! -e {go} ]; do sleep 0.05; done; echo last-line"
    run_id = cli(server, "run", "task", "s1", "--command", cmd, check=True).stdout.strip()
    follow = subprocess.Popen([*RUNYARD, "run", "logs", run_id, "--follow"], stdout=subprocess.PIPE, text=True,
                              env=clean_env(RUNYARD_ENDPOINT=server.endpoint, RUNYARD_API_KEY=server.admin_key))
    try:
        assert follow.stdout is not None
        seen = []
        while "first-line" not in seen:
            seen.append(follow.stdout.readline().strip())
        # The run is still blocked on the file: the line came live.
        assert run_state(server, run_id)["state"] == "PERFORMING"
        go.touch()
        rest = follow.stdout.read()
        assert "last-line" in rest
        assert follow.wait(30) == 0
    finally:
        follow.kill()
        follow.wait()
        if follow.stdout is not None:
            follow.stdout.close()


@pytest.mark.parametrize("executor", ["docker", "process"], indirect=True)
def test_kill_9_of_the_launcher_fails_its_run_as_worker_lost_and_never_reruns_it(server, launcher, tmp_path):
    proc = launcher()
    make_stack(server, tmp_path)
    marker = f"sleep 6000.{os.getpid()}"  # a unique command line to look for
    run_id = cli(server, "run", "task", "s1", "--command", f"echo started; {marker}",
                 check=True).stdout.strip()
    with server.client() as client:
        wait_for(lambda: any(ln.msg == "started" for ln in client.logs(run_id, wait=2).lines), 30, "the run to start")
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait()
    run = wait_state(server, run_id, RunState.FAILED, timeout=30)
    assert run["reason"] == "worker lost"
    assert [t["state"] for t in run["transitions"]].count("READY") == 1
    # The run's process died with its launcher.
    wait_for(lambda: subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 1, 10,
             "the run's process to die")
    # A new launcher does not pick the run up again.
    launcher()
    assert run_state(server, run_id)["state"] == "FAILED"


def test_a_late_report_from_a_lost_worker_is_refused(server, pool: PoolCreds, tmp_path):
    """Act as a launcher that got partitioned away: it stops heartbeating,
    the server gives up on it, then its report arrives."""
    from runyard.client import Client
    from runyard.core.errors import WorkerGone
    from runyard.crypto import PoolToken, load_private_key_b64, sign_challenge

    make_stack(server, tmp_path)
    token = PoolToken.decode(pool.token)
    with Client([server.endpoint]) as worker:
        challenge = worker.challenge(pool.pool_id)
        reg = worker.register(RegisterIn(
            pool_id=pool.pool_id, certificate=token.certificate_pem, challenge=challenge,
            signature=sign_challenge(load_private_key_b64(pool.key_b64), challenge)))
        worker.credential = reg.token
        run_id = cli(server, "run", "trigger", "s1", check=True).stdout.strip()
        assignment = worker.poll(5).assignment
        assert assignment is not None and assignment.run.id == run_id
        worker.report(run_id, assignment.lease, RunState.PREPARING)
        assert wait_state(server, run_id, RunState.FAILED)["reason"] == "worker lost"
        try:
            worker.report(run_id, assignment.lease, RunState.INITIALIZING)
            raise AssertionError("the late report was accepted")
        except WorkerGone:
            pass
    assert run_state(server, run_id)["state"] == "FAILED"


def test_a_token_or_key_of_another_pool_is_refused(server, pool: PoolCreds, tmp_path):
    from tests.harness import LauncherProcess, make_pool

    with server.client() as client:
        other = make_pool(client, "p2")
    mixed = PoolCreds("p1", pool.pool_id, pool.token, other.key_b64)
    proc = LauncherProcess(mixed, tmp_path / "w").start()
    assert proc.wait(30) != 0
    assert "does not match the pool token" in proc.read_log()
    proc.stop()
    garbage = PoolCreds("p1", pool.pool_id, "bm90LWEtdG9rZW4=", pool.key_b64)
    proc = LauncherProcess(garbage, tmp_path / "w2").start()
    assert proc.wait(30) != 0
    assert "malformed pool token" in proc.read_log()
    proc.stop()
    with server.client() as client:
        assert client.workers("p1") == []


@pytest.mark.parametrize("executor", ["docker", "process"], indirect=True)
def test_cancel_stops_a_running_run_and_kills_its_processes(server, launcher, tmp_path):
    proc = launcher()
    make_stack(server, tmp_path)
    marker = f"sleep 6001.{os.getpid()}"
    run_id = cli(server, "run", "task", "s1", "--command", f"echo started; {marker}",
                 check=True).stdout.strip()
    with server.client() as client:
        wait_for(lambda: client.logs(run_id, wait=2).lines, 30, "the run to start")
    out = cli(server, "run", "cancel", run_id, check=True).stdout
    assert "stop requested" in out
    run = wait_state(server, run_id, RunState.STOPPED)
    assert run["reason"] == "stopped by user"
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 1
    assert list(proc.work_dir.iterdir()) == []


def test_a_server_restart_mid_run_loses_no_log_line(server, launcher, tmp_path, sync_dir):
    launcher()
    make_stack(server, tmp_path)
    go = sync_dir / "go"
    cmd = (f"for i in $(seq 1 20); do echo line-$i; done; while [ ! -e {go} ]; do sleep 0.05; done; "
           "for i in $(seq 21 40); do echo line-$i; sleep 0.02; done")
    run_id = cli(server, "run", "task", "s1", "--command", cmd, check=True).stdout.strip()
    with server.client() as client:
        wait_for(lambda: any(ln.msg == "line-20" for ln in client.logs(run_id, wait=2).lines), 30, "line 20")
    server.stop()
    go.touch()  # the run goes on printing while the server is down
    server.start()
    run = wait_state(server, run_id, RunState.FINISHED, RunState.FAILED, timeout=60)
    assert run["state"] == "FINISHED", run
    lines = [ln for ln in log_text(server, run_id).splitlines() if ln.startswith("line-")]
    assert lines == [f"line-{i}" for i in range(1, 41)]
    # Pools, stacks and workers survived the restart too.
    assert "p1" in cli(server, "pool", "list", check=True).stdout
    assert "s1" in cli(server, "stack", "list", check=True).stdout


def test_sigterm_ends_held_polls_cleanly_and_launchers_come_back(server, pool: PoolCreds, tmp_path):
    from tests.harness import LauncherProcess

    launchers = [LauncherProcess(pool, tmp_path / f"w{i}", extra_env={"RUNYARD_EXECUTOR": "process"}).start()
                 for i in range(3)]
    try:
        with server.client() as client:
            wait_for(lambda: len(client.workers("p1")) == 3, 30, "three launchers to hold polls")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        # Held polls are answered at once: no waiting out uvicorn's grace period
        # (uvicorn ends by re-raising the signal it caught).
        assert server.proc.wait(5) in (0, -signal.SIGTERM)
        log = server.read_log()
        assert "Traceback" not in log and "CancelledError" not in log, log
        server.log.close()
        server.start()  # the same port, data dir and key
        make_stack(server, tmp_path)
        run = cli(server, "run", "task", "s1", "--command", "echo back", "--wait", "--output", "json",
                  timeout=60, check=True)
        assert json.loads(run.stdout)["state"] == "FINISHED"
        for proc in launchers:
            assert proc.proc is not None and proc.proc.poll() is None  # none gave up
    finally:
        for proc in launchers:
            proc.stop()
