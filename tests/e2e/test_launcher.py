"""The launcher's isolation and settings, with a real server, launcher and Docker."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import textwrap
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from runyard.core.states import RunState
from tests.conftest import free_port
from tests.e2e.conftest import LauncherFactory
from tests.e2e.test_runs import log_text, make_stack, run_state, wait_state
from tests.harness import (
    RUNYARD,
    LauncherProcess,
    ServerProcess,
    clean_env,
    cli,
    idle_workers,
    make_pool,
    wait_for,
)

SECRET = "tok-very-secret-123"  # the stack's secret TOKEN (see make_stack)


def task(server: ServerProcess, command: str, stack: str = "s1", timeout: float = 60) -> dict[str, Any]:
    r = cli(server, "run", "task", stack, "--command", command, "--wait", "--output", "json", timeout=timeout)
    return json.loads(r.stdout)


def proposed(server: ServerProcess, stack: str = "s1") -> dict[str, Any]:
    r = cli(server, "run", "trigger", stack, "--proposed", "--wait", "--output", "json", timeout=60)
    return json.loads(r.stdout)


def containers_of(run_id: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=dev.runyard.run={run_id}"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def test_two_runs_cannot_see_each_others_files_or_processes(server, launcher: LauncherFactory, tmp_path, sync_dir):
    launcher()
    launcher()
    make_stack(server, tmp_path)
    make_stack(server, tmp_path, "s2")
    a = cli(server, "run", "task", "s1", "--command",
            f"echo a-private > mine.txt; touch {sync_dir}/a-ready; "
            f"while [ ! -e {sync_dir}/b-done ]; do sleep 0.0777; done", check=True).stdout.strip()
    # '0[.]0777' matches A's sleeps but not B's own command line.
    b = task(server, f"while [ ! -e {sync_dir}/a-ready ]; do sleep 0.05; done; "
                     f"echo files:; find / -name mine.txt 2>/dev/null; echo procs:; ps -o args | grep -c '0[.]0777'; "
                     f"touch {sync_dir}/b-done", stack="s2")
    assert b["state"] == "FINISHED"
    text = log_text(server, b["id"])
    assert "files:\nprocs:" in text  # no mine.txt anywhere B can look
    assert text.splitlines()[-1] == "0"  # A's processes are invisible to B
    assert wait_state(server, a, RunState.FINISHED)["state"] == "FINISHED"


def test_the_container_and_workspace_are_gone_after_each_kind_of_end(server, launcher, tmp_path):
    proc = launcher(extra_env={"RUNYARD_LAUNCHER_LOGS_TIMEOUT": "2s"})
    make_stack(server, tmp_path)
    finished = task(server, "mkdir -p d && touch d/f && chmod 000 d && echo root-files")
    failed = task(server, "exit 4")
    timed_out = task(server, "echo quiet-now; sleep 60")
    for run in (finished, failed, timed_out):
        assert containers_of(run["id"]) == []
    assert [finished["state"], failed["state"], timed_out["state"]] == ["FINISHED", "FAILED", "FAILED"]
    # Root-owned, unreadable files of the first run did not break the next ones.
    assert list(proc.work_dir.iterdir()) == []


def test_a_launcher_killed_with_9_leaves_no_container_behind(server, launcher, tmp_path):
    proc = launcher()
    make_stack(server, tmp_path)
    run_id = cli(server, "run", "task", "s1", "--command", "echo started; sleep 600", check=True).stdout.strip()
    with server.client() as client:
        wait_for(lambda: client.logs(run_id, wait=2).lines, 30, "the run to start")
    assert len(containers_of(run_id)) == 1
    proc.proc.send_signal(signal.SIGKILL)
    proc.proc.wait()
    # The container's first process reads the stdin the launcher held: it ends
    # with it, and the engine removes the container (not left "Exited").
    wait_for(lambda: containers_of(run_id) == [], 30, "the container to be removed")
    # A launcher started again on the same work dir removes the workspace left.
    again = LauncherProcess(proc.creds, proc.work_dir, extra_env={"RUNYARD_EXECUTOR": "docker"}).start()
    try:
        wait_for(lambda: list(proc.work_dir.glob("run-*")) == [], 30, "leftovers to be removed")
    finally:
        again.stop()
    assert wait_state(server, run_id, RunState.FAILED)["reason"] == "worker lost"


def test_logs_timeout_and_run_timeout_kill_the_run_with_a_reason(server, launcher, tmp_path):
    launcher(extra_env={"RUNYARD_LAUNCHER_LOGS_TIMEOUT": "1s", "RUNYARD_LAUNCHER_RUN_TIMEOUT": "3s"})
    make_stack(server, tmp_path)
    quiet = task(server, "echo about to go quiet; sleep 60")
    assert quiet["state"] == "FAILED"
    assert quiet["reason"] == "printed nothing for 1s: killed (RUNYARD_LAUNCHER_LOGS_TIMEOUT)"
    busy = task(server, "while true; do echo tick; sleep 0.2; done")
    assert busy["state"] == "FAILED"
    assert busy["reason"] == "ran longer than 3s: killed (RUNYARD_LAUNCHER_RUN_TIMEOUT)"
    assert "ran longer than 3s" in log_text(server, busy["id"])


def test_network_runtime_and_a_missing_image(server, launcher, tmp_path):
    launcher(extra_env={"RUNYARD_WORKER_NETWORK": "none", "RUNYARD_WORKER_RUNTIME": "runc"})
    make_stack(server, tmp_path)
    make_stack(server, tmp_path, "noimage", "--runner-image", "runyard/does-not-exist:1")
    run = task(server, "ls /sys/class/net")
    assert run["state"] == "FINISHED"
    assert [ln for ln in log_text(server, run["id"]).splitlines() if not ln.startswith("[")] == ["lo"]
    missing = task(server, "true", stack="noimage", timeout=30)
    assert missing["state"] == "FAILED"
    assert "runner image runyard/does-not-exist:1 is not on this host" in missing["reason"]


def test_default_runner_image_and_debug_print_the_exact_command(server, launcher, tmp_path):
    subprocess.run(["docker", "tag", "runyard/runner:latest", "runyard/runner:e2e-custom"], check=True)
    launcher(extra_env={"RUNYARD_DEFAULT_RUNNER_IMAGE": "runyard/runner:e2e-custom", "RUNYARD_DEBUG": "true"})
    make_stack(server, tmp_path)
    run = task(server, "echo debug-me")
    text = log_text(server, run["id"])
    assert "docker exec -w /workspace" in text and "sh -c 'echo debug-me'" in text
    assert "# image runyard/runner:e2e-custom" in text


def test_mounts_and_whitelisted_variables_follow_read_only_and_write_runs(server, launcher, tmp_path):
    dirs = {}
    for kind in ("all", "ro", "wo"):
        dirs[kind] = tmp_path / f"m-{kind}"
        dirs[kind].mkdir()
        (dirs[kind] / "marker").write_text(kind)
    launcher(extra_env={
        "RUNYARD_WORKER_EXTRA_MOUNTS": f"{dirs['all']}:/m/all",  # replaces the fixture's sync mount
        "RUNYARD_WORKER_RO_EXTRA_MOUNTS": f"{dirs['ro']}:/m/ro:ro",
        "RUNYARD_WORKER_WO_EXTRA_MOUNTS": f"{dirs['wo']}:/m/wo",
        "RUNYARD_WHITELIST_ENVS": "SHARED_VAR,ro_READ_VAR,wo_WRITE_VAR",
        "SHARED_VAR": "shared", "READ_VAR": "reader", "WRITE_VAR": "writer", "UNLISTED_VAR": "hidden",
    })
    src = tmp_path / "src-mounts"
    src.mkdir()
    probe = 'ls /m; echo "S=$SHARED_VAR R=$READ_VAR W=$WRITE_VAR U=$UNLISTED_VAR"'
    cli(server, "stack", "create", "m", "--pool", "p1", "--source", str(src), "--plan", probe, check=True)
    read_only = proposed(server, "m")
    write = task(server, probe, stack="m")
    ro_text, wo_text = log_text(server, read_only["id"]), log_text(server, write["id"])
    assert "all\nro\n" in ro_text and "wo" not in ro_text.split("S=")[0]
    assert "S=shared R=reader W= U=" in ro_text
    assert "all\nwo\n" in wo_text and "ro\n" not in wo_text.split("S=")[0]
    assert "S=shared R= W=writer U=" in wo_text


PEM = ("-----BEGIN TEST KEY-----\nQUJDREVGR0hJSktMTU5PUFFSU1RVVldY\n"
       "WVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2\n-----END TEST KEY-----")


def test_secrets_are_masked_in_every_form_in_stored_logs_and_stdout_json(server, launcher, tmp_path, sync_dir):
    (sync_dir / "pem").write_text(PEM + "\n")
    proc = launcher(extra_env={"RUNYARD_MASK_ENVS": "LAUNCHER_SECRET", "LAUNCHER_SECRET": "launcher-only-secret",
                               "RUNYARD_RUN_LOGS_ON_STANDARD_OUTPUT_ENABLED": "true"})
    src = tmp_path / "src-mask"
    src.mkdir()
    cli(server, "stack", "create", "mask", "--pool", "p1", "--source", str(src), "--plan", "true",
        "--secret", f"TOKEN={SECRET}", "--secret", f"PEM_KEY={PEM}", check=True)
    url_form = urllib.parse.quote(SECRET + "/x", safe="")
    script = textwrap.dedent(f"""\
        echo "plain $TOKEN"
        printf 'split tok-very-'; sleep 0.3; printf 'secret-123 end\\n'
        echo "b64 $(printf %s "$TOKEN" | base64)"
        echo "url {url_form}"
        echo "launcher $LAUNCHER_SECRET"
        cat {sync_dir}/pem
        echo "pem-b64 $(base64 {sync_dir}/pem | tr -d '\\n')"
        echo done
    """)
    # the URL-encoded form is of a secret with a slash: make that the stack's secret too
    cli(server, "stack", "create", "mask2", "--pool", "p1", "--source", str(src), "--plan", "true",
        "--secret", f"TOKEN={SECRET}/x", check=True)
    run = task(server, script, stack="mask")
    run2 = task(server, f'echo "url {url_form}"', stack="mask2")
    stored = log_text(server, run["id"]) + log_text(server, run2["id"])
    proc.stop()
    stdout_lines = [json.loads(ln) for ln in proc.read_log().splitlines() if ln.startswith("{")]
    ours = [d for d in stdout_lines if d["run_ulid"] in (run["id"], run2["id"])]
    assert ours and set(ours[0]) == {"run_ulid", "stack_id", "ts", "msg"}
    stdout_text = "\n".join(d["msg"] for d in ours)
    assert "plain ***" in stored and "split *** end" in stored and "done" in stored
    leaks = [SECRET, "tok-very-", base64.b64encode(SECRET.encode()).decode(), url_form, "launcher-only-secret",
             "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY", base64.b64encode((PEM + "\n").encode()).decode()[:40]]
    for text in (stored, stdout_text):
        for leak in leaks:
            assert leak not in text, leak


MULTI_SECRET = 'first "line" of the key\\\nsecond line/with+signs\nthird-line-123'


@pytest.mark.parametrize("executor", ["docker", "process"], indirect=True)
def test_json_escaped_and_url_encoded_multiline_secrets_are_masked_in_pieces(server, launcher, tmp_path, sync_dir):
    launcher()
    src = tmp_path / "src-json"
    src.mkdir()
    cli(server, "stack", "create", "js", "--pool", "p1", "--source", str(src), "--plan", "true",
        "--secret", f"KEY={MULTI_SECRET}", check=True)
    forms = {
        "json": json.dumps(MULTI_SECRET)[1:-1],
        "quote": urllib.parse.quote(MULTI_SECRET),
        "quote_plus": urllib.parse.quote_plus(MULTI_SECRET),
        "b64wrapped": "\n".join(textwrap.wrap(base64.b64encode(MULTI_SECRET.encode()).decode(), 76)),
    }
    steps = []
    for name, form in forms.items():
        (sync_dir / name).write_text(form)
        half = len(form) // 2  # printed in two reads, 0.3 s apart
        steps.append(f"printf '{name}: '; head -c {half} {sync_dir}/{name}; sleep 0.3; "
                     f"tail -c +{half + 1} {sync_dir}/{name}; echo ' end'")
    run = task(server, "\n".join([*steps, "echo done"]), stack="js")
    assert run["state"] == "FINISHED"
    stored = log_text(server, run["id"])
    assert "done" in stored
    for name, form in forms.items():
        assert f"{name}: *** end" in stored, stored
        for piece in [*form.split("\n"), form[:len(form) // 2], form[len(form) // 2:]]:
            assert piece not in stored, (name, piece)


QUOTED_SECRET = "it's-a!*(s3cret)=42"  # every character jq @uri and encodeURIComponent treat apart
SHELL_FORMS = {
    "set -x": 'set -x; : "$KEY"; set +x',
    "export -p": 'export KEY; export -p | grep " KEY="',
    "gzip | base64": 'printf %s "$KEY" | gzip | base64',
    "echo | gzip -n | base64 -w0": 'echo "$KEY" | gzip -n | base64 -w0; echo',
    "gzip file | base64": 'echo "$KEY" > k.txt; gzip -c k.txt | base64',
    "spaced": "echo \"$KEY\" | sed 's/./& /g'",
    "percent": "printf %s \"$KEY\" | od -An -tx1 -v | tr -d ' \\n' | sed 's/../%&/g'; echo",
}
HOST_FORMS = {  # tools the process executor's host has (bash, Python)
    "printf %q": "bash -c 'printf \"%q\\n\" \"$KEY\"'",
    "python repr": "python3 -c 'import os; print(repr(os.environ[\"KEY\"]))'",
    "python json": "python3 -c 'import json, os; print(json.dumps({\"k\": os.environ[\"KEY\"]}))'",
}


@pytest.mark.parametrize("executor", ["docker", "process"], indirect=True)
def test_a_secret_with_quotes_is_masked_in_what_real_tools_print(server, launcher, executor, tmp_path):
    """busybox's `set -x` and `export -p` splice a quote, gzip and base64
    compress and encode, od spells it byte by byte: each line keeps its
    label and nothing of the value."""
    launcher()
    src = tmp_path / "src-quoted"
    src.mkdir()
    cli(server, "stack", "create", "q", "--pool", "p1", "--source", str(src), "--plan", "true",
        "--secret", f"KEY={QUOTED_SECRET}", check=True)
    forms = {**SHELL_FORMS, **(HOST_FORMS if executor == "process" else {})}
    script = "\n".join(f"echo '== {name}'; {command} 2>&1" for name, command in forms.items())
    run = task(server, script + "\necho done", stack="q")
    assert run["state"] == "FINISHED"
    stored = log_text(server, run["id"])
    assert stored.rstrip().endswith("done")
    printed = {name: stored.split(f"== {name}\n", 1)[1].split("\n==", 1)[0] for name in forms}
    raw = QUOTED_SECRET.encode()
    leaks = [QUOTED_SECRET, QUOTED_SECRET.replace("'", "'\"'\"'"), urllib.parse.quote(QUOTED_SECRET, safe=""),
             "s3cret", "!*(", base64.b64encode(raw).decode()[:12], raw.hex()[:12]]
    for name, text in printed.items():
        assert "***" in text, (name, text)
        for leak in leaks:
            assert leak not in text, (name, leak, text)


def test_a_mask_env_too_short_to_mask_stops_the_launcher(server, pool, tmp_path):
    proc = LauncherProcess(pool, tmp_path / "w", extra_env={"RUNYARD_MASK_ENVS": "PIN", "PIN": "123"}).start()
    assert proc.wait(30) != 0
    assert "secret PIN is shorter than 6 characters" in proc.read_log()
    proc.stop()


def test_explain_config_shows_values_and_origins(tmp_path):
    cfg = tmp_path / "l.yaml"
    cfg.write_text("launcher_logs_timeout: 90s\nworker_network: filenet\n")
    env = clean_env(RUNYARD_WORKER_NETWORK="envnet", RUNYARD_TOKEN="secret-token-value")
    r = subprocess.run([*RUNYARD, "launcher", "--config", str(cfg), "--explain-config", "--worker-runtime", "runc"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = {ln.split()[0]: ln for ln in r.stdout.splitlines()[1:]}
    assert "envnet" in rows["worker_network"] and "environment" in rows["worker_network"]
    assert "90.0" in rows["launcher_logs_timeout"] and "file" in rows["launcher_logs_timeout"]
    assert "runc" in rows["worker_runtime"] and rows["worker_runtime"].rstrip().endswith("flag")
    assert "secret-token-value" not in r.stdout and "********" in rows["token"]
    cfg.write_text("worker_netwrk: x\n")
    bad = subprocess.run([*RUNYARD, "launcher", "--config", str(cfg)], capture_output=True, text=True,
                         env=clean_env(), timeout=60)
    assert bad.returncode == 2 and "unknown setting 'worker_netwrk'" in bad.stderr


def hook(tmp_path: Path, sync_dir: Path) -> Path:
    script = tmp_path / "hook.sh"
    script.write_text(f'#!/bin/sh\necho "$RUNYARD_SHUTDOWN_REASON" >> {sync_dir}/reasons\n')
    script.chmod(0o755)
    return script


def test_sigterm_lets_a_short_run_finish_and_stops_a_long_one(server, launcher, tmp_path, sync_dir):
    make_stack(server, tmp_path)
    env = {"RUNYARD_INTERRUPTION_GRACE_PERIOD": "30s", "RUNYARD_SHUTDOWN_HOOK_PATH": str(hook(tmp_path, sync_dir))}
    short = launcher(extra_env=env)
    cmd = f"echo started; while [ ! -e {sync_dir}/finish ]; do sleep 0.05; done; echo finished-in-grace"
    run_id = cli(server, "run", "task", "s1", "--command", cmd, check=True).stdout.strip()
    with server.client() as client:
        wait_for(lambda: client.logs(run_id, wait=2).lines, 30, "the run to start")
    short.proc.send_signal(signal.SIGTERM)
    (sync_dir / "finish").touch()
    assert short.wait(30) == 0
    assert run_state(server, run_id)["state"] == "FINISHED"
    assert "finished-in-grace" in log_text(server, run_id)
    assert (sync_dir / "reasons").read_text().split() == ["interrupted"]

    long = launcher(extra_env={**env, "RUNYARD_INTERRUPTION_GRACE_PERIOD": "1s"})
    run_id = cli(server, "run", "task", "s1", "--command", "echo started; sleep 600", check=True).stdout.strip()
    with server.client() as client:
        wait_for(lambda: client.logs(run_id, wait=2).lines, 30, "the run to start")
    long.proc.send_signal(signal.SIGTERM)
    assert long.wait(30) == 0
    run = run_state(server, run_id)  # already ended: the launcher reported it before exiting
    assert run["state"] == "STOPPED" and run["reason"] == "interrupted"
    assert containers_of(run_id) == []


def test_a_second_sigterm_stops_the_run_at_once(server, launcher, tmp_path):
    make_stack(server, tmp_path)
    proc = launcher(extra_env={"RUNYARD_INTERRUPTION_GRACE_PERIOD": "10m"})
    run_id = cli(server, "run", "task", "s1", "--command", "echo started; sleep 600", check=True).stdout.strip()
    with server.client() as client:
        wait_for(lambda: client.logs(run_id, wait=2).lines, 30, "the run to start")
    proc.proc.send_signal(signal.SIGTERM)
    # Two signals sent before the handler runs are one: wait until it has run.
    wait_for(lambda: "the current run has 600s to finish" in proc.read_log(), 10, "the first SIGTERM")
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert run_state(server, run_id)["reason"] == "interrupted"


def test_disconnect_after_job_and_after_idle_timeout_run_the_shutdown_hook(server, launcher, tmp_path, sync_dir):
    make_stack(server, tmp_path)
    script = str(hook(tmp_path, sync_dir))
    once = launcher(extra_env={"RUNYARD_SHUTDOWN_HOOK_PATH": script}, args=["--disconnect-after-job"])
    assert task(server, "echo one job")["state"] == "FINISHED"
    assert once.wait(30) == 0
    idle = launcher(extra_env={"RUNYARD_SHUTDOWN_HOOK_PATH": script, "RUNYARD_DISCONNECT_AFTER_IDLE_TIMEOUT": "1s"})
    assert idle.wait(30) == 0
    assert (sync_dir / "reasons").read_text().split() == ["job-finished", "idle"]
    assert "launcher exiting: idle" in idle.read_log()


POLICY = """package runyard.initialization
import rego.v1

deny contains msg if {
  input.stack.labels[_] == "frozen"
  msg := sprintf("stack %s is frozen", [input.stack.name])
}
"""


def test_an_initialization_policy_denies_runs_before_anything_executes(server, launcher, tmp_path, sync_dir):
    policy = tmp_path / "init.rego"
    policy.write_text(POLICY)
    launcher(extra_env={"RUNYARD_LAUNCHER_RUN_INITIALIZATION_POLICY": str(policy)})
    make_stack(server, tmp_path)
    make_stack(server, tmp_path, "cold", "--label", "frozen")
    allowed = task(server, f"touch {sync_dir}/allowed-ran")
    denied = task(server, f"touch {sync_dir}/denied-ran", stack="cold")
    assert allowed["state"] == "FINISHED" and (sync_dir / "allowed-ran").exists()
    assert denied["state"] == "FAILED"
    assert denied["reason"] == "denied by the run initialization policy: stack cold is frozen"
    assert not (sync_dir / "denied-ran").exists()
    assert "PREPARING" not in [t["state"] for t in denied["transitions"]]


def test_a_policy_that_does_not_parse_stops_the_launcher_naming_file_and_line(server, pool, tmp_path):
    policy = tmp_path / "broken.rego"
    policy.write_text("package runyard\n\ndeny contains msg if {\n  input.x ==== 1\n}\n")
    proc = LauncherProcess(pool, tmp_path / "w", extra_env={
        "RUNYARD_LAUNCHER_RUN_INITIALIZATION_POLICY": str(policy)}).start()
    assert proc.wait(30) != 0
    assert f"{policy}:4:" in proc.read_log()
    proc.stop()


def test_pool_cycle_ends_idle_launchers_at_once_and_busy_ones_after_their_run(server, launcher, tmp_path, sync_dir):
    make_stack(server, tmp_path)
    busy, idle = launcher(), launcher()
    cmd = f"echo started; while [ ! -e {sync_dir}/go ]; do sleep 0.05; done; echo done"
    run_id = cli(server, "run", "task", "s1", "--command", cmd, check=True).stdout.strip()
    with server.client() as client:
        wait_for(lambda: client.logs(run_id, wait=2).lines, 30, "the run to start")
    holder = busy if run_state(server, run_id)["worker_id"] in busy.read_log() else idle
    other = idle if holder is busy else busy
    out = cli(server, "pool", "cycle", "p1", check=True).stdout
    assert "told 2 worker(s)" in out
    assert other.wait(20) == 0 and "launcher exiting: cycled" in other.read_log()
    assert holder.proc.poll() is None  # still running its run
    (sync_dir / "go").touch()
    assert holder.wait(20) == 0 and "launcher exiting: cycled" in holder.read_log()
    assert run_state(server, run_id)["state"] == "FINISHED"


def test_the_launcher_serves_its_own_metrics(server, launcher, tmp_path):
    import httpx

    port = free_port()
    launcher(extra_env={"RUNYARD_METRICS_PORT": str(port)})
    make_stack(server, tmp_path)
    assert task(server, "echo hi")["state"] == "FINISHED"
    # The server learns of the end a moment before the launcher is idle again.
    def idle_metrics() -> str:
        body = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        return body if 'runyard_launcher_state{runyard_launcher_state="idle"} 1.0' in body else ""

    text = wait_for(idle_metrics, 10, "the launcher to report idle")
    assert 'runyard_launcher_runs_total{state="FINISHED"} 1.0' in text


def test_exit_codes_and_hook_reasons_match_the_docs(server, pool, tmp_path, sync_dir):
    import dataclasses

    from runyard.crypto import PoolToken, generate_key, key_to_pem
    from tests.harness import PoolCreds

    script = hook(tmp_path, sync_dir)
    env = {"RUNYARD_SHUTDOWN_HOOK_PATH": str(script), "RUNYARD_EXECUTOR": "process"}
    # A key that does not match the token: bad settings, exit 2, the hook still runs.
    other = base64.b64encode(key_to_pem(generate_key(2048))).decode()
    wrong_key = LauncherProcess(PoolCreds("p1", pool.pool_id, pool.token, other), tmp_path / "a",
                                extra_env=env).start()
    assert wrong_key.wait(30) == 2
    assert "does not match the pool token" in wrong_key.read_log()
    # A pool the server does not know: a fatal error after start, exit 1.
    doc = PoolToken.decode(pool.token)
    unknown = dataclasses.replace(doc, pool_id="01JUNKNOWNPOOL00000000000")
    gone = LauncherProcess(PoolCreds("p1", unknown.pool_id, unknown.encode(), pool.key_b64), tmp_path / "b",
                           extra_env=env).start()
    assert gone.wait(30) == 1
    # Removed by a person: exit 0, reason "removed", and it does not join again.
    removed = LauncherProcess(pool, tmp_path / "c", extra_env=env).start()
    with server.client() as client:
        worker = wait_for(lambda: client.workers("p1"), 30, "the launcher to register")[0]
        client.remove_worker(worker.id, "removed by a person")
        assert removed.wait(30) == 0
        assert client.workers("p1") == []
    assert "launcher exiting: removed" in removed.read_log()
    for proc in (wrong_key, gone, removed):
        proc.stop()
    assert (sync_dir / "reasons").read_text().split() == ["error", "error", "removed"]


def test_worker_user_and_extra_root_cas_reach_the_run_container(server, launcher, tmp_path, sync_dir):
    from runyard.crypto import CertificateAuthority

    ca = tmp_path / "acme-root.pem"
    ca.write_text(CertificateAuthority.create("Acme Internal Root").cert_pem())
    marker = ca.read_text().splitlines()[1]
    launcher(extra_env={"RUNYARD_WORKER_USER": "4321:4321", "RUNYARD_CA_CERTIFICATES": str(ca)})
    make_stack(server, tmp_path)
    run = task(server, 'id -u; id -g; touch written-by-run && echo wrote; '
                       f'grep -q "{marker}" "$SSL_CERT_FILE" && echo "ca at $SSL_CERT_FILE"')
    assert run["state"] == "FINISHED", run
    lines = log_text(server, run["id"]).splitlines()
    assert "4321" in lines and "wrote" in lines
    assert "ca at /etc/ssl/runyard/ca-bundle.pem" in lines


def test_an_idle_launchers_held_poll_keeps_it_alive_until_the_launcher_dies(tmp_path):
    """No heartbeats at all (one an hour): the held polls alone keep an idle
    worker in its pool past the lost-worker limit; killed, it is lost in time."""
    (tmp_path / "server").mkdir()
    server = ServerProcess(tmp_path / "server", free_port(), extra_env={
        "RUNYARD_WORKER_LOST_AFTER": "3s", "RUNYARD_REAPER_INTERVAL": "0.5s"}).start()
    try:
        with server.client() as client:
            creds = make_pool(client, "p1")
            proc = LauncherProcess(creds, tmp_path / "work", extra_env={
                "RUNYARD_EXECUTOR": "process", "RUNYARD_HEARTBEAT_INTERVAL": "1h", "RUNYARD_LONG_POLL": "20s"}).start()
            try:
                worker = wait_for(lambda: idle_workers(client, creds.pool_id), 30, "the launcher to register")[0]
                # Time passing is what is tested: three lost-worker limits within one held poll.
                time.sleep(9)
                assert [w.id for w in client.workers(creds.pool_id)] == [worker.id]
                make_stack(server, tmp_path)
                assert task(server, "echo alive")["state"] == "FINISHED"
                assert proc.proc is not None
                proc.proc.kill()  # its poll's connection closes: the poll stops counting at once
                proc.proc.wait(10)
                wait_for(lambda: not client.workers(creds.pool_id), 10, "the killed launcher's worker to be lost")
            finally:
                proc.stop()
    finally:
        server.stop()
