"""A server without HTTP (services over SQLite in memory) and launchers wired
to it through the in-process worker API: the unit tier's world."""

from __future__ import annotations

import base64
import functools
import io
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runyard import retry
from runyard.config import LauncherSettings
from runyard.core.models import EnvVar, Source, SourceKind, Stack, Tool
from runyard.core.states import RunKind
from runyard.crypto import generate_key, key_to_pem, make_csr
from runyard.launcher.launcher import Launcher
from runyard.server.services.registry import Services
from runyard.testing import FakeClock, FakeExecutor, InProcessWorkerApi, MemoryBlobStore, memory_services


@pytest.fixture(autouse=True)
def _retries_without_waits() -> Iterator[None]:
    """The fake server answers at once: a retry need not wait for it."""
    retry.set_testing(True)
    yield
    retry.set_testing(False)


@functools.cache
def pool_key() -> Any:
    return generate_key(2048)  # made once: RSA key generation is the slow part


def source_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"echo hi\n"
        info = tarfile.TarInfo("main.sh")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class World:
    svc: Services
    clock: FakeClock
    blobs: MemoryBlobStore
    tmp: Path
    token: str = ""
    pool_id: str = ""
    launchers: list[Launcher] = field(default_factory=list)

    def pool(self, name: str = "p1", drift_detection_limit: int | None = None) -> str:
        pool, self.token = self.svc.pools.create(name, make_csr(pool_key()).decode(),
                                                 drift_detection_limit=drift_detection_limit)
        self.pool_id = pool.id
        return pool.id

    def stack(self, name: str = "s1", pool: str = "p1", tool: Tool = Tool.SHELL, **kw: Any) -> Stack:
        upload = self.svc.stacks.upload_source(source_tar())
        commands = kw.pop("commands", {"init": "init", "plan": "plan", "apply": "apply"})
        return self.svc.stacks.create(name, pool, Source(SourceKind.UPLOAD, upload_id=upload), tool,
                                      commands=commands, **kw)

    def trigger(self, stack: str = "s1", kind: RunKind = RunKind.TRACKED, command: str = "") -> str:
        self.clock.advance(0.002)  # ids order runs by creation: keep them milliseconds apart
        return self.svc.runs.trigger(stack, kind, command).id

    def settings(self, **overrides: Any) -> LauncherSettings:
        values = {"token": self.token, "pool_private_key": base64.b64encode(key_to_pem(pool_key())).decode(),
                  "work_dir": self.tmp / f"work-{len(self.launchers)}", "long_poll": "0.05s",
                  # Each phase reported at once unless a test holds them
                  # (test_run_execution.py: held reports).
                  "heartbeat_interval": "0.02s", "report_hold": "0s", **overrides}
        settings, _ = LauncherSettings.resolve(values, env={})
        return settings

    def launcher(self, executor: FakeExecutor | None = None, api: Any = None, **overrides: Any) -> Launcher:
        launcher = Launcher(self.settings(**overrides), executor or FakeExecutor(), env={},
                            clock=self.clock, client=api or InProcessWorkerApi(self.svc),
                            sleep=lambda _: None)  # retries go at once: the fake server answers at once
        launcher.log_linger = 0.005  # lines go at once: no test waits for a batch to fill
        self.launchers.append(launcher)
        return launcher


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = FakeClock()
    blobs = MemoryBlobStore()
    w = World(memory_services(clock, blobs, directory=tmp_path), clock, blobs, tmp_path)
    yield w
    for launcher in w.launchers:
        launcher.stop("test over")
    w.svc.close()


def calls_of(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[tuple[Any, ...]]:
    """Record the arguments of every call of ``owner.name`` (a class's method:
    the instance comes first), which still does what it did."""
    calls: list[tuple[Any, ...]] = []
    real = getattr(owner, name)

    def recorded(*args: Any) -> Any:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(owner, name, recorded)
    return calls


def secret_var(name: str, value: str) -> EnvVar:
    return EnvVar(name, value, True)
