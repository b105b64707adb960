from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.harness import LauncherProcess, PoolCreds, ServerProcess, idle_workers, make_pool, wait_for


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    (tmp_path / "server").mkdir()
    proc = ServerProcess(tmp_path / "server", free_port()).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def pool(server: ServerProcess) -> PoolCreds:
    with server.client() as client:
        return make_pool(client, "p1")


LauncherFactory = Callable[..., LauncherProcess]


@pytest.fixture
def launcher(tmp_path: Path, pool: PoolCreds, server: ServerProcess) -> Iterator[LauncherFactory]:
    started: list[LauncherProcess] = []

    def start(creds: PoolCreds | None = None, wait_idle: bool = True, **kw: object) -> LauncherProcess:
        work = tmp_path / f"work-{len(started)}"
        pool_id = (creds or pool).pool_id
        with server.client() as client:
            known = {w.id for w in client.workers(pool_id)}
            proc = LauncherProcess(creds or pool, work, **kw).start()  # type: ignore[arg-type]
            started.append(proc)
            if wait_idle:
                wait_for(lambda: {w.id for w in idle_workers(client, pool_id)} - known, 30,
                         "the launcher to register")
        return proc

    yield start
    for proc in started:
        proc.stop()
