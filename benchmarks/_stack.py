"""Shared by the benchmarks: a real server and launchers on this machine."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runyard.archive import pack_directory
from runyard.client import Client
from runyard.core.errors import Unavailable
from runyard.crypto import generate_key, key_to_pem, make_csr, new_secret
from runyard.wire import SourceIO, StackCreate

RUNYARD = [sys.executable, "-m", "runyard"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Bench:
    client: Client
    tmp: Path
    pool: str
    procs: list[subprocess.Popen[bytes]]
    launcher_env: dict[str, str]

    def add_launchers(self, count: int, **env: str) -> None:
        known = {w.id for w in self.client.workers(self.pool)}
        for i in range(count):
            extra = {"RUNYARD_WORK_DIR": str(self.tmp / f"work-{len(self.procs)}-{i}"), **env}
            self.procs.append(subprocess.Popen([*RUNYARD, "launcher"], env={**self.launcher_env, **extra},
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while len({w.id for w in self.client.workers(self.pool) if w.status == "IDLE"} - known) < count:
            if time.monotonic() > deadline:
                raise SystemExit("launchers did not register within 60s")
            time.sleep(0.1)

    def wait_finished(self, run_id: str) -> None:
        while not self.client.logs(run_id, after=10**12, wait=20).done:
            pass


@contextlib.contextmanager
def bench_stack(stack_name: str = "bench") -> Iterator[Bench]:
    tmp = Path(tempfile.mkdtemp(prefix="runyard-bench-"))
    port = free_port()
    key = new_secret("ryk_")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    server = subprocess.Popen(
        [*RUNYARD, "server", "--data-dir", str(tmp / "data"), "--port", str(port)],
        env={**env, "RUNYARD_ADMIN_API_KEY": key}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    procs = [server]
    client = Client([f"http://127.0.0.1:{port}"], key)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client.request("GET", "/healthz", timeout=1)
                break
            except Unavailable:
                if time.monotonic() > deadline:
                    raise SystemExit("server did not start") from None
                time.sleep(0.1)
        pool_key = generate_key(2048)
        token = client.create_pool("bench", make_csr(pool_key).decode()).token
        src = tmp / "src"
        src.mkdir()
        (src / "README").write_text("benchmark stack\n")
        upload = client.upload_source(pack_directory(src))
        client.create_stack(StackCreate(name=stack_name, pool="bench", source=SourceIO(kind="upload", upload_id=upload),
                                        tool="shell", commands={"plan": "true"}))
        launcher_env = {**env, "RUNYARD_TOKEN": token,
                        "RUNYARD_POOL_PRIVATE_KEY": base64.b64encode(key_to_pem(pool_key)).decode()}
        yield Bench(client, tmp, "bench", procs, launcher_env)
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        client.close()
