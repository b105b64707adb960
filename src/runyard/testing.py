"""Fakes of every boundary, shipped with the package for fast tests.

Each fake stands in for one real part behind the same small interface: a
clock, the object store, the database (SQLite in memory, the real schema),
the server as a launcher or an autoscaler sees it (calling the services
directly, no HTTP), an executor, a cloud provider. Integration tests use
the real parts instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runyard.core.errors import NotFound, Unavailable
from runyard.core.models import LogBlock, RunEnd, Worker
from runyard.core.scaling import GroupState, Instance
from runyard.core.states import RunState
from runyard.crypto import CertificateAuthority
from runyard.launcher.executors import Output, RunSpec, StepStopped
from runyard.server.db.dialects import make_engine
from runyard.server.db.repository import Repository
from runyard.server.db.tables import metadata
from runyard.server.services import Context
from runyard.server.services.registry import Services
from runyard.wire import (
    AssignmentOut,
    DemandOut,
    FleetWorker,
    HeartbeatOut,
    LogsAck,
    OutputIO,
    PollOut,
    RegisterIn,
    RegisterOut,
    RunOut,
    WorkerOut,
)


class FakeClock:
    """Time that moves only when told (``advance``, or ``sleep``)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)


class MemoryBlobStore:
    """The object store, in a dict."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self.blobs[key] = bytes(data)

    def get(self, key: str) -> bytes:
        with self._lock:
            if key not in self.blobs:
                raise NotFound(f"no blob {key}")
            return self.blobs[key]

    def exists(self, key: str) -> bool:
        with self._lock:
            return key in self.blobs

    def delete(self, key: str) -> None:
        with self._lock:
            self.blobs.pop(key, None)

    def keys(self, prefix: str) -> Iterator[str]:
        with self._lock:
            found = [k for k in self.blobs if k.startswith(prefix)]
        yield from found


@functools.cache
def _test_ca() -> CertificateAuthority:
    return CertificateAuthority.create("runyard test CA")


@functools.cache
def _template() -> sqlite3.Connection:
    """The schema (as the server's engine makes it) and a test CA (RSA keys
    are slow to make), once per process, in memory: each test's database is
    a page copy of it (SQLite's backup), not a run of the DDL."""
    disk = Path(tempfile.mkdtemp(prefix="runyard-template-")) / "runyard.db"
    engine = make_engine(f"sqlite:///{disk}")
    metadata.create_all(engine)
    with engine.begin() as conn:
        repo = Repository(conn)
        repo.put_setting_if_absent("ca_key", _test_ca().key_pem())
        repo.put_setting_if_absent("ca_cert", _test_ca().cert_pem())
    engine.dispose()
    template = sqlite3.connect(":memory:", check_same_thread=False)
    with contextlib.closing(sqlite3.connect(disk)) as made:
        made.backup(template)
    return template


def memory_services(clock: Callable[[], float] | None = None, blobs: MemoryBlobStore | None = None,
                    long_poll: float = 0.05, directory: Path | None = None) -> Services:
    """Every server service over a throwaway SQLite file (the models' schema,
    as the server's engine opens it) and a memory object store: the server
    without its HTTP layer. Launcher threads may use it concurrently."""
    folder = directory or Path(tempfile.mkdtemp(prefix="runyard-test-"))
    path = folder / "runyard.db"
    with contextlib.closing(sqlite3.connect(path)) as fresh:  # the schema and CA, copied page by page
        _template().backup(fresh)
    engine = make_engine(f"sqlite:///{path}")
    ctx = Context(engine=engine, blobs=blobs or MemoryBlobStore(), clock=clock or FakeClock(),
                  endpoints=("http://runyard.test",), long_poll=long_poll)
    services = Services.build(ctx)
    services.pools.preload_ca(_test_ca())
    return services


class InProcessWorkerApi:
    """The server as a launcher sees it (``runyard.client.WorkerApi``), calling
    the services directly and answering in the wire schemas, as the routes do."""

    endpoint = "http://runyard.test"

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.credential = ""
        self.calls: list[str] = []

    def _worker(self) -> Worker:
        return self.svc.auth.check_worker_token(self.credential)

    def challenge(self, pool_id: str) -> str:
        return self.svc.workers.challenge(pool_id)

    def register(self, body: RegisterIn) -> RegisterOut:
        worker, token = self.svc.workers.register(body.pool_id, body.certificate, body.challenge, body.signature,
                                                  body.metadata, body.version)
        return RegisterOut(worker_id=worker.id, token=token)

    def heartbeat(self) -> HeartbeatOut:
        return HeartbeatOut.model_validate(asyncio.run(self.svc.workers.heartbeat(self._worker())))

    def deregister(self, reason: str) -> None:
        self.svc.workers.deregister(self._worker(), reason)

    def drain_self(self) -> None:
        self.svc.workers.drain(self._worker().id, True)

    def poll(self, wait: float) -> PollOut:
        return PollOut.model_validate(asyncio.run(self.svc.dispatch.poll(self._worker(), wait)))

    def report(self, run_id: str, lease: int, state: RunState, note: str = "",
               changes: dict[str, int] | None = None, via: Sequence[RunState] = ()) -> RunOut:
        self.calls.append(f"report {state.value}")
        return RunOut.model_validate(self.svc.runs.report(self._worker(), run_id, lease, state, note, changes,
                                                          via=via))

    def put_workspace(self, run_id: str, lease: int, sealed: bytes) -> None:
        self.svc.runs.put_workspace(self._worker(), run_id, lease, sealed)

    def get_workspace(self, run_id: str, lease: int) -> bytes:
        return self.svc.runs.get_workspace(self._worker(), run_id, lease)

    def put_outputs(self, run_id: str, lease: int, outputs: Sequence[OutputIO]) -> None:
        self.svc.runs.put_outputs(self._worker(), run_id, lease, [o.to_domain() for o in outputs])

    def send_logs(self, run_id: str, lease: int, blocks: Sequence[LogBlock], end: RunEnd | None = None,
                  take_next: bool = False) -> LogsAck:
        stop, following = self.svc.dispatch.append_logs(self._worker(), run_id, lease, list(blocks), end, take_next)
        return LogsAck(stop_run=stop,
                       assignment=None if following is None else AssignmentOut.model_validate(following))

    def source_archive(self, upload_id: str) -> bytes:
        return self.svc.stacks.source_for_worker(self._worker(), upload_id)

    def close(self) -> None:
        pass


class Flaky:
    """Wraps an API object: the next ``failures[method]`` calls of a method
    fail as if the server were unreachable. ``lose_answers``: the call reaches
    the server, but its answer is lost (the caller sees Unavailable)."""

    def __init__(self, inner: Any, failures: dict[str, int] | None = None,
                 lose_answers: dict[str, int] | None = None) -> None:
        self._inner = inner
        self.failures = dict(failures or {})
        self.lose_answers = dict(lose_answers or {})

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.failures.get(name, 0) > 0:
                self.failures[name] -= 1
                raise Unavailable(f"{name}: connection refused (fake)")
            result = target(*args, **kwargs)
            if self.lose_answers.get(name, 0) > 0:
                self.lose_answers[name] -= 1
                raise Unavailable(f"{name}: the answer was lost (fake)")
            return result

        return call

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("_inner", "failures", "lose_answers"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._inner, name, value)


@dataclass
class Step:
    """What a fake command does: print, then exit with ``code``; ``hang``:
    run until the run is stopped (or ``on_start`` lets time pass)."""

    output: str = ""
    code: int = 0
    hang: bool = False
    on_start: Callable[[], None] | None = None


@dataclass
class FakeExecutor:
    """An executor whose commands do what ``steps`` say (unknown commands
    succeed silently); records every session and command."""

    steps: dict[str, Step] = field(default_factory=dict)
    name: str = "fake"
    commands: list[str] = field(default_factory=list)
    opened: list[RunSpec] = field(default_factory=list)
    closed: int = 0

    def open(self, spec: RunSpec) -> FakeSession:
        self.opened.append(spec)
        return FakeSession(self, spec)

    def remove_leftovers(self) -> int:
        return 0

    def reach(self, url: str) -> str:
        return url


@dataclass
class FakeSession:
    executor: FakeExecutor
    spec: RunSpec

    def run(self, command: str, workdir: str, output: Output, stop: threading.Event) -> int:
        self.executor.commands.append(command)
        step = self.executor.steps.get(command, Step())
        if step.on_start is not None:
            step.on_start()
        if step.output:
            output(step.output)
        if step.hang:
            stop.wait()
            raise StepStopped()
        return step.code

    def describe(self, command: str, workdir: str) -> str:
        return f"fake: {command}"

    def close(self) -> None:
        self.executor.closed += 1


class InProcessFleetApi:
    """The server as an autoscaler sees it (``runyard.client.FleetApi``)."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def demand(self, pool: str, since: int = -1, wait: float = 0) -> DemandOut:
        found = asyncio.run(self.svc.dispatch.demand(self.svc.pools.get(pool), since, wait))
        fleet = [FleetWorker(**WorkerOut.model_validate(m.worker).model_dump(), idle_since=m.idle_since)
                 for m in found.fleet]
        return DemandOut(version=found.version, queued=found.queued, running=found.running, workers=fleet)

    def workers(self, pool: str) -> list[WorkerOut]:
        return [WorkerOut.model_validate(w) for w in self.svc.workers.list(self.svc.pools.get(pool).id)]

    def drain(self, worker_id: str, drained: bool = True) -> WorkerOut:
        return WorkerOut.model_validate(self.svc.workers.drain(worker_id, drained))

    def remove_worker(self, worker_id: str, reason: str) -> None:
        self.svc.workers.remove(worker_id, reason)


class FakeProvider:
    """A cloud group in memory: set_desired launches instances at once (they
    boot: no worker until a test registers one), terminate decrements."""

    name = "fake"

    def __init__(self, clock: Callable[[], float], desired: int = 0, max_size: int = 100) -> None:
        self.clock = clock
        self.max_size = max_size
        self.instances: dict[str, Instance] = {}
        self.terminated: list[str] = []
        self._seq = 0
        self.set_desired(desired)

    def describe(self) -> GroupState:
        return GroupState(len(self.instances), 0, self.max_size, tuple(self.instances.values()))

    def set_desired(self, desired: int) -> None:
        while len(self.instances) < desired:
            self._seq += 1
            iid = f"i-{self._seq:08d}"
            self.instances[iid] = Instance(iid, "InService", self.clock())
        while len(self.instances) > desired:
            self.terminate(next(reversed(self.instances)))

    def terminate(self, instance_id: str) -> None:
        self.instances.pop(instance_id)
        self.terminated.append(instance_id)

