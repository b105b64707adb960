"""Real processes for end-to-end tests: a server, launchers, the CLI."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from runyard.client import Client
from runyard.core.errors import Unavailable
from runyard.crypto import generate_key, key_to_pem, make_csr, new_secret

T = TypeVar("T")
RUNYARD = [sys.executable, "-m", "runyard"]


def wait_for(check: Callable[[], T], timeout: float = 30, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy (for conditions that
    have no event to wait on, such as a process appearing)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env.update(extra)
    return env


@dataclass
class ServerProcess:
    data_dir: Path
    port: int
    admin_key: str = field(default_factory=lambda: new_secret("ryk_"))
    extra_env: dict[str, str] = field(default_factory=dict)
    database_url: str = ""
    host: str = "127.0.0.1"  # 0.0.0.0 when containers on a bridge network must reach it
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        env = clean_env(**{"RUNYARD_ADMIN_API_KEY": self.admin_key, "RUNYARD_WORKER_LOST_AFTER": "3s",
                           "RUNYARD_REAPER_INTERVAL": "0.5s", **self.extra_env})
        cmd = [*RUNYARD, "server", "--data-dir", str(self.data_dir), "--port", str(self.port), "--host", self.host]
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        self.log = open(self.data_dir.parent / f"server-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        client = self.client()

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.read_log()}")
            try:
                client.request("GET", "/healthz", timeout=1)
                return True
            except Unavailable:
                return False

        wait_for(up, 60, "the server to answer")
        client.close()
        return self

    def read_log(self) -> str:
        return (self.data_dir.parent / f"server-{self.port}.log").read_text(errors="replace")

    def client(self) -> Client:
        return Client([self.endpoint], self.admin_key)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig)
        self.log.close()


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    """Signal a process and wait for it; kill it if it does not end in 20 s."""
    if proc and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class PoolCreds:
    name: str
    pool_id: str
    token: str
    key_b64: str


def make_pool(client: Client, name: str, bits: int = 2048, drift_detection_limit: int | None = None) -> PoolCreds:
    key = generate_key(bits)
    created = client.create_pool(name, make_csr(key).decode(), drift_detection_limit=drift_detection_limit)
    return PoolCreds(name, created.pool.id, created.token, base64.b64encode(key_to_pem(key)).decode())


@dataclass
class LauncherProcess:
    creds: PoolCreds
    work_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    args: Sequence[str] = ()
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LauncherProcess:
        env = clean_env(**{
            "RUNYARD_TOKEN": self.creds.token,
            "RUNYARD_POOL_PRIVATE_KEY": self.creds.key_b64,
            "RUNYARD_WORK_DIR": str(self.work_dir),
            "RUNYARD_HEARTBEAT_INTERVAL": "0.5s",
            **self.extra_env,
        })
        self.log_path = self.work_dir.parent / f"launcher-{id(self)}.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([*RUNYARD, "launcher", *self.args], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        return self

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig)
        self.log.close()


def cli(
    server: ServerProcess, *args: str, timeout: float = 60, check: bool = False, **env: str
) -> subprocess.CompletedProcess[str]:
    full_env = clean_env(**{"RUNYARD_ENDPOINT": server.endpoint, "RUNYARD_API_KEY": server.admin_key, **env})
    proc = subprocess.run([*RUNYARD, *args], env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"runyard {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def idle_workers(client: Client, pool: str) -> list[Any]:
    return [w for w in client.workers(pool) if w.status == "IDLE"]
