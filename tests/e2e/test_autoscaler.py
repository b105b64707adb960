"""The autoscaler with the local provider: real server, autoscaler and launcher processes."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

from tests.e2e.test_runs import make_stack
from tests.harness import RUNYARD, PoolCreds, ServerProcess, clean_env, cli, wait_for


def test_ten_runs_on_an_empty_pool_get_workers_that_retire_after(server: ServerProcess, pool: PoolCreds,
                                                                  tmp_path: Path):
    # Ten stacks: tracked runs and tasks of one stack would go one at a time.
    for i in range(10):
        make_stack(server, tmp_path, f"st{i}")
    env = clean_env(**{
        "RUNYARD_ENDPOINT": server.endpoint, "RUNYARD_API_KEY": server.admin_key,
        "RUNYARD_TOKEN": pool.token, "RUNYARD_POOL_PRIVATE_KEY": pool.key_b64,
        "RUNYARD_EXECUTOR": "process", "RUNYARD_HEARTBEAT_INTERVAL": "0.5s",
    })
    log = open(tmp_path / "autoscaler.log", "wb")  # noqa: SIM115 - closed below
    scaler = subprocess.Popen(
        [*RUNYARD, "autoscaler", "--pool", "p1", "--provider", "local", "--min", "0", "--max", "4",
         "--launcher-idle-timeout", "2s", "--idle-before-scale-in", "1h", "--scale-in-cooldown", "1h"],
        env={**env, "RUNYARD_WORK_DIR": str(tmp_path / "scaler")}, stdout=log, stderr=subprocess.STDOUT)
    peak = {"workers": 0}
    watching = threading.Event()

    def watch() -> None:
        with server.client() as client:
            while not watching.wait(0.1):
                peak["workers"] = max(peak["workers"], len(client.workers("p1")))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        ids = [cli(server, "run", "trigger", f"st{i}", "--proposed", check=True).stdout.strip() for i in range(10)]
        with server.client() as client:
            wait_for(lambda: client.workers("p1"), 60, "workers to appear")

            def all_ended() -> bool:
                return all(client.run(i).state.terminal for i in ids)

            wait_for(all_ended, 120, "all runs to end")
            states = {client.run(i).state.value for i in ids}
            assert states == {"FINISHED"}, states  # none killed by a scale-in
            # Idle launchers retire themselves; the group shrinks with them.
            wait_for(lambda: client.workers("p1") == [], 60, "the workers to retire")
        assert 1 <= peak["workers"] <= 4
        for run_id in ids:
            shown = json.loads(cli(server, "run", "show", run_id, "-o", "json").stdout)
            assert [t["state"] for t in shown["transitions"]].count("READY") == 1
    finally:
        watching.set()
        scaler.terminate()
        scaler.wait(30)
        log.close()
