"""Terraform stacks end to end: real server, launchers, Docker and terraform."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runyard.core.states import TERMINAL, RunState
from tests.conftest import free_port, missing
from tests.e2e.test_runs import log_text, run_state, wait_state
from tests.harness import PoolCreds, ServerProcess, cli, make_pool, wait_for

TERRAFORM = shutil.which("terraform") or "/usr/local/bin/terraform"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "terraform-hello"
MARKER = "runyard-plaintext-marker-7f3a"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server that containers on the bridge network can reach."""
    if not Path(TERRAFORM).exists():
        missing("no terraform binary")
    (tmp_path / "server").mkdir()
    proc = ServerProcess(tmp_path / "server", free_port(), host="0.0.0.0").start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def pool(server: ServerProcess) -> PoolCreds:
    with server.client() as client:
        key_pool = make_pool(client, "p1")
    return key_pool


def tf_stack(server: ServerProcess, tmp_path: Path, name: str = "tf", code: str | None = None,
             *extra: str) -> Path:
    src = tmp_path / f"src-{name}"
    shutil.copytree(EXAMPLE, src)
    if code is not None:
        (src / "main.tf").write_text(code)
    cli(server, "stack", "create", name, "--pool", "p1", "--source", str(src), "--tool", "terraform",
        "--env", f"TF_VAR_greeting={MARKER}", *extra, check=True)
    return src


def trigger(server: ServerProcess, stack: str, *flags: str) -> tuple[int, dict[str, Any]]:
    r = cli(server, "run", "trigger", stack, *flags, "--wait", "--output", "json", timeout=120)
    return r.returncode, json.loads(r.stdout)


def test_a_proposed_run_reports_what_would_change(server, launcher, tmp_path):
    launcher()
    tf_stack(server, tmp_path)
    code, run = trigger(server, "tf", "--proposed")
    assert code == 0 and run["state"] == "FINISHED"
    assert run["changes"] == {"add": 2, "change": 0, "destroy": 0}
    assert "Plan: 2 to add, 0 to change, 0 to destroy." in log_text(server, run["id"])
    assert cli(server, "state", "versions", "tf", "-o", "json", check=True).stdout.strip() == "[]"


def test_tracked_run_waits_for_confirmation_then_any_worker_applies_it(server, launcher, tmp_path):
    first = launcher()
    tf_stack(server, tmp_path)
    code, run = trigger(server, "tf")
    assert code == 10 and run["state"] == "UNCONFIRMED"
    assert run["changes"] == {"add": 2, "change": 0, "destroy": 0}
    first.stop()  # the apply goes to another worker
    launcher()
    confirmed = cli(server, "run", "confirm", run["id"], "--wait", "--output", "json", timeout=120)
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    done = run_state(server, run["id"])
    states = [t["state"] for t in done["transitions"]]
    assert states == ["QUEUED", "READY", "PREPARING", "INITIALIZING", "PLANNING", "UNCONFIRMED", "CONFIRMED",
                      "READY", "PREPARING", "APPLYING", "FINISHED"]
    workers = [t["note"] for t in done["transitions"] if t["state"] == "READY"]
    assert workers[0] != workers[1]
    text = log_text(server, run["id"])
    assert "Plan: 2 to add" in text and "Apply complete! Resources: 2 added" in text
    with server.client() as client:
        seqs = [ln.seq for ln in client.logs(run["id"]).lines]
    assert seqs == list(range(1, len(seqs) + 1))  # one log, numbered on across both workers
    outputs = {o["name"]: o for o in json.loads(cli(server, "stack", "outputs", "tf", "-o", "json").stdout)}
    assert outputs["greeting"]["value"] == MARKER
    assert outputs["greeting_secret"]["sensitive"] and outputs["greeting_secret"]["sealed"] is None
    versions = json.loads(cli(server, "state", "versions", "tf", "-o", "json", check=True).stdout)
    assert len(versions) == 1 and versions[0]["run_id"] == run["id"]


def test_sensitive_outputs_are_uploaded_sealed_only_when_enabled(server, launcher, tmp_path):
    launcher(extra_env={"RUNYARD_SENSITIVE_OUTPUT_UPLOAD_ENABLED": "true"})
    tf_stack(server, tmp_path, "tf", None, "--autodeploy")
    code, _ = trigger(server, "tf")
    assert code == 0
    outputs = {o["name"]: o for o in json.loads(cli(server, "stack", "outputs", "tf", "-o", "json").stdout)}
    sealed = outputs["greeting_secret"]["sealed"]
    assert sealed and MARKER not in sealed and outputs["greeting_secret"]["value"] is None
    assert "(sensitive, sealed)" in cli(server, "stack", "outputs", "tf").stdout


def test_a_discarded_plan_changes_nothing(server, launcher, tmp_path):
    launcher()
    tf_stack(server, tmp_path)
    _, run = trigger(server, "tf")
    blob = server.data_dir / "blobs" / "workspaces" / f"{run['id']}.sealed"
    assert blob.exists()
    assert cli(server, "run", "discard", run["id"], check=True).returncode == 0
    assert run_state(server, run["id"])["state"] == "DISCARDED"
    assert not blob.exists()
    assert json.loads(cli(server, "state", "versions", "tf", "-o", "json").stdout) == []


def test_two_tracked_runs_go_one_after_the_other_and_the_second_sees_the_first_state(server, launcher, tmp_path):
    launcher()
    launcher()
    tf_stack(server, tmp_path, "tf", None, "--autodeploy")
    first = cli(server, "run", "trigger", "tf", check=True).stdout.strip()
    second = cli(server, "run", "trigger", "tf", check=True).stdout.strip()
    waiting = run_state(server, second)
    if waiting["state"] == "QUEUED" and f"run {first}" not in waiting["waiting_for"]:
        # A run takes under a second here: the first may have ended before the
        # second was read, which then waits for nothing and is about to start.
        assert run_state(server, first)["state"] in {s.value for s in TERMINAL}, waiting
    a = wait_state(server, first, RunState.FINISHED, RunState.FAILED, timeout=120)
    b = wait_state(server, second, RunState.FINISHED, RunState.FAILED, timeout=120)
    assert a["state"] == b["state"] == "FINISHED", (a["reason"], b["reason"])
    first_end = a["transitions"][-1]["at"]
    second_start = next(t["at"] for t in b["transitions"] if t["state"] == "READY")
    assert second_start >= first_end
    assert a["changes"] == {"add": 2, "change": 0, "destroy": 0}
    # The second plan read the first one's state: only the stamp is replaced.
    assert b["changes"] == {"add": 1, "change": 0, "destroy": 1}
    versions = json.loads(cli(server, "state", "versions", "tf", "-o", "json").stdout)
    assert [v["run_id"] for v in versions] == [first, second]
    assert versions[0]["lineage"] == versions[1]["lineage"] and versions[1]["serial"] > versions[0]["serial"]
    old = json.loads(cli(server, "state", "pull", "tf", "--version", "1", check=True).stdout)
    assert old["serial"] == versions[0]["serial"]


BLOCKING = """
variable "greeting" { type = string }
variable "sync" { type = string }
resource "terraform_data" "slow" {
  input = var.greeting
  provisioner "local-exec" {
    command = "while [ ! -e ${var.sync}/go ]; do sleep 0.1; done"
  }
}
"""


def person_terraform(
    tmp_path: Path, server: ServerProcess, stack_id: str, *args: str
) -> subprocess.CompletedProcess[str]:
    work = tmp_path / "person"
    work.mkdir(exist_ok=True)
    address = f"{server.endpoint}/api/v1/stacks/{stack_id}/state"
    (work / "main.tf").write_text(
        'terraform {\n  backend "http" {\n'
        f'    address = "{address}"\n    lock_address = "{address}/lock"\n    unlock_address = "{address}/lock"\n'
        '    username = "me"\n  }\n}\n')
    env = {**os.environ, "TF_HTTP_PASSWORD": server.admin_key, "TF_CLI_CONFIG_FILE": "/dev/null",
           "CHECKPOINT_DISABLE": "1"}
    return subprocess.run([TERRAFORM, *args], cwd=work, env=env, capture_output=True, text=True, timeout=120)


def test_a_persons_own_terraform_pulls_the_state_and_meets_the_runs_lock(server, launcher, tmp_path, sync_dir):
    launcher()
    tf_stack(server, tmp_path, "tf", BLOCKING, "--autodeploy", "--env", f"TF_VAR_sync={sync_dir}")
    stack_id = json.loads(cli(server, "stack", "show", "tf", "-o", "json").stdout)["id"]
    run_id = cli(server, "run", "trigger", "tf", check=True).stdout.strip()
    lock_url = f"{server.endpoint}/api/v1/stacks/{stack_id}/state/lock"
    auth = ("me", server.admin_key)

    def held() -> dict[str, Any] | None:
        resp = httpx.get(lock_url, auth=auth)
        return resp.json() if resp.status_code == 200 else None

    # Plan and apply each take the lock; wait for the apply's (it then blocks on the sync file).
    holder = wait_for(lambda: run_state(server, run_id)["state"] == "APPLYING" and held(), 60,
                      "the run's apply to take the state lock")
    raw = httpx.request("LOCK", lock_url, auth=auth, json={"ID": "someone-else", "Who": "me"})
    assert holder is not None
    assert raw.status_code == 423 and raw.json()["ID"] == holder["ID"]
    assert person_terraform(tmp_path, server, stack_id, "init", "-input=false", "-no-color").returncode == 0
    blocked = person_terraform(tmp_path, server, stack_id, "plan", "-input=false", "-no-color", "-lock-timeout=0s")
    assert blocked.returncode != 0 and "Error acquiring the state lock" in blocked.stderr
    (sync_dir / "go").touch()
    assert wait_state(server, run_id, RunState.FINISHED, RunState.FAILED, timeout=120)["state"] == "FINISHED"
    assert held() is None
    pulled = person_terraform(tmp_path, server, stack_id, "state", "pull")
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads(pulled.stdout)["resources"][0]["type"] == "terraform_data"
    # Credentials reach runs through the environment only: never the workspace files or the log.
    assert "ryr_" not in log_text(server, run_id)


def test_the_stored_workspace_is_ciphertext_and_tampering_fails_the_apply(server, launcher, tmp_path):
    launcher()
    tf_stack(server, tmp_path)
    _, run = trigger(server, "tf")
    blob = server.data_dir / "blobs" / "workspaces" / f"{run['id']}.sealed"
    data = blob.read_bytes()
    assert MARKER.encode() not in data and b"terraform_data" not in data and b"tfplan" not in data
    tampered = bytearray(data)
    tampered[len(tampered) // 2] ^= 0xFF
    blob.write_bytes(bytes(tampered))
    confirmed = cli(server, "run", "confirm", run["id"], "--wait", "--output", "json", timeout=120)
    assert confirmed.returncode == 1
    failed = run_state(server, run["id"])
    assert failed["state"] == "FAILED"
    assert "the saved workspace cannot be opened" in failed["reason"]
    assert json.loads(cli(server, "state", "versions", "tf", "-o", "json").stdout) == []


def test_secret_variables_are_stored_sealed_and_reach_the_run(server, launcher, tmp_path):
    launcher()
    src = tmp_path / "src-shell"
    src.mkdir()
    cli(server, "stack", "create", "sh", "--pool", "p1", "--source", str(src), "--plan", "true",
        "--secret", "DB_PASSWORD=pa55-w0rd-value", check=True)
    for stored in (server.data_dir / "runyard.db", server.data_dir / "runyard.db-wal"):
        if stored.exists():
            assert b"pa55-w0rd-value" not in stored.read_bytes()
    r = cli(server, "run", "task", "sh", "--command", 'test "$DB_PASSWORD" = pa55-w0rd-value && echo matches',
            "--wait", "--output", "json", timeout=60)
    assert r.returncode == 0
    assert "matches" in log_text(server, json.loads(r.stdout)["id"])


def test_drift_detection_runs_respect_the_pools_limit(server, pool, launcher, tmp_path, sync_dir):
    # The fixture's pool p1 has drift detection disabled: drift runs are refused there.
    tf_stack(server, tmp_path, "nodrift")
    refused = cli(server, "run", "trigger", "nodrift", "--drift-detection")
    assert refused.returncode == 2 and "drift detection disabled" in refused.stderr

    with server.client() as client:
        drifty = make_pool(client, "drifty", drift_detection_limit=1)
    launcher(creds=drifty)
    launcher(creds=drifty)
    gate = f"while [ ! -e {sync_dir}/release ]; do sleep 0.1; done"
    for name in ("d1", "d2"):
        src = tmp_path / f"src-{name}"
        shutil.copytree(EXAMPLE, src)
        cli(server, "stack", "create", name, "--pool", "drifty", "--source", str(src), "--tool", "terraform",
            "--hook", f"before_plan={gate}", "--drift-schedule", "0 3 * * *", check=True)
    first = cli(server, "run", "trigger", "d1", "--drift-detection", check=True).stdout.strip()
    second = cli(server, "run", "trigger", "d2", "--drift-detection", check=True).stdout.strip()
    wait_for(lambda: run_state(server, first)["state"] == "PLANNING", 60, "the first drift run to plan")
    # Two idle workers, but the pool allows one drift run at a time.
    with server.client() as client:
        assert any(w.status == "IDLE" for w in client.workers("drifty"))
    assert run_state(server, second)["state"] == "QUEUED"
    (sync_dir / "release").touch()
    a = wait_state(server, first, RunState.FINISHED, RunState.FAILED, timeout=120)
    b = wait_state(server, second, RunState.FINISHED, RunState.FAILED, timeout=120)
    assert a["kind"] == b["kind"] == "DRIFT_DETECTION"
    assert a["state"] == b["state"] == "FINISHED"
    # No state yet, so everything counts as drift; the run records it.
    assert a["changes"] == {"add": 2, "change": 0, "destroy": 0}
    assert a["reason"] == "drift detected: 2 to add, 0 to change, 0 to destroy"
    second_start = next(t["at"] for t in b["transitions"] if t["state"] == "READY")
    assert second_start >= a["transitions"][-1]["at"]
