from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runyard.config import RUNNER_IMAGE
from tests.conftest import free_port, missing
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


def docker_ready() -> bool:
    from runyard.launcher.executors.docker import image_available

    return image_available(RUNNER_IMAGE)


@pytest.fixture(params=["docker"])
def executor(request: pytest.FixtureRequest) -> str:
    """The executor e2e launchers use; tests that matter for both parametrize it."""
    if request.param == "docker" and not docker_ready():
        missing(f"no Docker engine, or no {RUNNER_IMAGE} image (run `runyard runner-image build`)")
    return str(request.param)


@pytest.fixture
def sync_dir(tmp_path: Path) -> Path:
    """A directory runs see at the same path on either executor: tests and runs
    hand each other files through it."""
    path = tmp_path / "sync"
    path.mkdir(exist_ok=True)
    path.chmod(0o777)
    return path


@pytest.fixture
def launcher(
    tmp_path: Path, pool: PoolCreds, server: ServerProcess, executor: str, sync_dir: Path
) -> Iterator[LauncherFactory]:
    started: list[LauncherProcess] = []

    def start(creds: PoolCreds | None = None, wait_idle: bool = True, extra_env: dict[str, str] | None = None,
              **kw: object) -> LauncherProcess:
        work = tmp_path / f"work-{len(started)}"
        pool_id = (creds or pool).pool_id
        env = {"RUNYARD_EXECUTOR": executor, "RUNYARD_WORKER_EXTRA_MOUNTS": f"{sync_dir}:{sync_dir}",
               **(extra_env or {})}
        with server.client() as client:
            known = {w.id for w in client.workers(pool_id)}
            proc = LauncherProcess(creds or pool, work, extra_env=env, **kw).start()  # type: ignore[arg-type]
            started.append(proc)
            if wait_idle:
                wait_for(lambda: {w.id for w in idle_workers(client, pool_id)} - known, 30,
                         "the launcher to register")
        return proc

    yield start
    for proc in started:
        proc.stop()
