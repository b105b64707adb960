"""Real processes for end-to-end tests: the dev-stack harness, plus the CLI."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from runyard import devstack
from runyard.devstack import (
    RUNYARD,
    LauncherProcess,
    PoolCreds,
    clean_env,
    idle_workers,
    make_pool,
    stop_process,
    wait_for,
)

__all__ = ["RUNYARD", "LauncherProcess", "PoolCreds", "ServerProcess", "clean_env", "cli", "idle_workers",
           "make_pool", "stop_process", "wait_for"]


# Lost workers are noticed within seconds, not a minute, in the tests.
TEST_SERVER_ENV = {"RUNYARD_WORKER_LOST_AFTER": "3s", "RUNYARD_REAPER_INTERVAL": "0.5s"}


@dataclass
class ServerProcess(devstack.ServerProcess):
    def __post_init__(self) -> None:
        self.extra_env = {**TEST_SERVER_ENV, **self.extra_env}


def cli(
    server: ServerProcess, *args: str, timeout: float = 60, check: bool = False, **env: str
) -> subprocess.CompletedProcess[str]:
    """`runyard ARGS` against ``server``, as a person would run it."""
    full_env = clean_env(**{"RUNYARD_ENDPOINT": server.endpoint, "RUNYARD_API_KEY": server.admin_key, **env})
    proc = subprocess.run([*RUNYARD, *args], env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"runyard {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc
