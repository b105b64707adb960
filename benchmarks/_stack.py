"""Shared by the benchmarks: a real server and launchers on this machine."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runyard.client import Client
from runyard.devstack import (
    LauncherProcess,
    PoolCreds,
    PostgresCluster,
    ServerProcess,
    free_port,
    make_pool,
    make_shell_stack,
    wait_for_launchers,
)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far (threads included)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile of ``values`` (nan when there are none)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Bench:
    client: Client
    tmp: Path
    pool: str
    creds: PoolCreds
    launchers: list[LauncherProcess]
    server: ServerProcess
    postgres: PostgresCluster | None = None

    def add_launchers(self, count: int, **env: str) -> None:
        known = {w.id for w in self.client.workers(self.pool)}
        started = [LauncherProcess(self.creds, self.tmp / f"work-{len(self.launchers) + i}", extra_env=env,
                                   quiet=True).start() for i in range(count)]
        self.launchers += started
        wait_for_launchers(self.client, self.pool, count, known, started)

    def wait_finished(self, run_id: str) -> None:
        while not self.client.logs(run_id, after=10**12, wait=20).done:
            pass


@contextlib.contextmanager
def bench_stack(stack_name: str = "bench", db: str = "sqlite", **env: str) -> Iterator[Bench]:
    """One server (on SQLite, or on a throwaway PostgreSQL with ``db="postgres"``),
    a pool "bench" and a shell stack whose plan is ``true``."""
    tmp = Path(tempfile.mkdtemp(prefix="runyard-bench-"))
    postgres = PostgresCluster() if db == "postgres" else None
    url = ""
    if postgres is not None:
        postgres.start()
        url = postgres.new_database()
    server = ServerProcess(tmp / "data", free_port(), database_url=url, extra_env=env).start()
    client = server.client()
    launchers: list[LauncherProcess] = []
    try:
        creds = make_pool(client, "bench")
        src = tmp / "src"
        src.mkdir()
        (src / "README").write_text("benchmark stack\n")
        make_shell_stack(client, stack_name, "bench", src, {"plan": "true"})
        yield Bench(client, tmp, "bench", creds, launchers, server, postgres)
    finally:
        for launcher in launchers:
            launcher.stop()
        server.stop()
        client.close()
        if postgres is not None:
            postgres.stop()


@dataclass
class BenchCluster:
    """Two servers on one PostgreSQL (a throwaway cluster), each with its own client."""

    servers: list[ServerProcess]
    clients: list[Client]
    tmp: Path
    creds: PoolCreds
    launchers: list[LauncherProcess]

    def add_launchers(self, count: int, endpoint: str, **env: str) -> None:
        known = {w.id for w in self.clients[0].workers("bench")}
        started = [LauncherProcess(self.creds, self.tmp / f"work-{len(self.launchers) + i}",
                                   extra_env={"RUNYARD_ENDPOINTS": endpoint, **env}, quiet=True).start()
                   for i in range(count)]
        self.launchers += started
        wait_for_launchers(self.clients[0], "bench", count, known, started)


@contextlib.contextmanager
def bench_cluster(lease_ttl: str = "10s") -> Iterator[BenchCluster]:
    tmp = Path(tempfile.mkdtemp(prefix="runyard-bench-"))
    postgres = PostgresCluster()
    postgres.start()
    servers: list[ServerProcess] = []
    clients: list[Client] = []
    launchers: list[LauncherProcess] = []
    try:
        url = postgres.new_database()
        ports = [free_port(), free_port()]
        env = {"RUNYARD_SECRET_KEY": "benchmark-shared-secret-key", "RUNYARD_SCHEDULER_LEASE_TTL": lease_ttl,
               "RUNYARD_BLOB_URL": f"file://{tmp / 'blobs'}",  # one object store for both
               "RUNYARD_PUBLIC_ENDPOINTS": ",".join(f"http://127.0.0.1:{p}" for p in ports)}
        first = ServerProcess(tmp / "a" / "data", ports[0], database_url=url, extra_env=env).start()
        servers.append(first)
        servers.append(ServerProcess(tmp / "b" / "data", ports[1], admin_key=first.admin_key, database_url=url,
                                     extra_env=env).start())
        clients += [s.client() for s in servers]
        creds = make_pool(clients[0], "bench")
        src = tmp / "src"
        src.mkdir()
        (src / "README").write_text("benchmark stack\n")
        make_shell_stack(clients[0], "bench", "bench", src, {"plan": "true"})
        yield BenchCluster(servers, clients, tmp, creds, launchers)
    finally:
        for launcher in launchers:
            launcher.stop()
        for server in servers:
            server.stop()
        for client in clients:
            client.close()
        postgres.stop()
