"""An idle worker's poll: renewed without touching the database while
nothing it waits for moved, and at once when something did."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator

import pytest

from runyard.core.states import RunKind
from runyard.server.notifier import pool_topic
from runyard.server.services.dispatch import DispatchService
from runyard.testing import InProcessWorkerApi
from tests.unit.conftest import World, calls_of


def idle_worker(world: World) -> InProcessWorkerApi:
    world.pool()
    world.stack()
    launcher = world.launcher()
    launcher.register()
    assert isinstance(launcher.client, InProcessWorkerApi)
    return launcher.client


def test_a_renewed_idle_poll_looks_again_only_once_something_moved(world: World,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    api = idle_worker(world)
    looks = calls_of(monkeypatch, DispatchService, "_look")
    assert api.poll(0).assignment is None
    assert len(looks) == 1
    for _ in range(3):
        assert api.poll(0).assignment is None  # renewed: nothing moved, no look
    assert len(looks) == 1

    run_id = world.trigger(kind=RunKind.PROPOSED)  # moves the pool's topic
    answer = api.poll(0)
    assert answer.assignment is not None and answer.assignment.run.id == run_id
    assert len(looks) == 2


def test_a_cycled_pool_is_seen_by_a_renewed_idle_poll_at_once(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    api = idle_worker(world)
    looks = calls_of(monkeypatch, DispatchService, "_look")
    assert api.poll(0).exit_reason == ""
    world.svc.pools.cycle(world.pool_id)  # moves the fleet's topic
    assert api.poll(0).exit_reason == "cycled"
    assert len(looks) == 2


def test_a_poll_parked_while_another_took_the_pools_turn_neither_claims_nor_looks_again(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.pool()
    launchers = [world.launcher() for _ in range(3)]
    for launcher in launchers[:2]:
        launcher.register()
    workers = world.svc.workers
    workers.ctx.long_poll = 5.0
    first, second = (workers.refresh(launcher.worker_id) for launcher in launchers[:2])
    looks = calls_of(monkeypatch, DispatchService, "_look")
    claims = calls_of(monkeypatch, DispatchService, "claim")

    async def scenario() -> None:
        polls = [asyncio.create_task(world.svc.dispatch.poll(first, 0.3))]
        while workers.ctx.notifier.waiting(pool_topic(world.pool_id)) < 1:
            await asyncio.sleep(0.001)
        polls.append(asyncio.create_task(world.svc.dispatch.poll(second, 0.3)))
        while workers.ctx.notifier.waiting(pool_topic(world.pool_id)) < 2:
            await asyncio.sleep(0.001)
        looks.clear()
        claims.clear()
        launchers[2].register()  # moves the pool: the first poll's turn (nothing to claim)
        assert [p.assignment for p in await asyncio.gather(*polls)] == [None, None]
        await world.svc.dispatch.poll(second, 0)  # renewed after its timeout

    asyncio.run(scenario())
    # The turn's holder tried a claim and looked; the other poll, parked
    # throughout, had nothing to do when it timed out nor when renewed.
    assert [worker_id for _, worker_id in claims] == [first.id]
    assert [worker_id for _, worker_id in looks] == [first.id]


def test_workers_short_calls_run_as_few_at_a_time_as_the_database_takes(world: World) -> None:
    from runyard.server.services import SHORT_CALLS

    ctx = world.svc.ctx
    running, most = 0, 0
    lock = threading.Lock()

    def call() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    async def many() -> None:
        await asyncio.gather(*(ctx.short_call(call) for _ in range(6)))

    with writing_elsewhere(world):  # the calls go to threads
        asyncio.run(many())
    assert most == SHORT_CALLS[ctx.engine.dialect.name] == 1  # SQLite: one at a time


@contextlib.contextmanager
def writing_elsewhere(world: World) -> Iterator[None]:
    """Another thread of the server holds a write transaction open throughout."""
    opened, done = threading.Event(), threading.Event()

    def writer() -> None:
        with world.svc.ctx.tx():
            opened.set()
            done.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    assert opened.wait(10)
    try:
        yield
    finally:
        done.set()
        thread.join(10)


def test_on_sqlite_a_short_call_runs_on_the_event_loop_unless_another_thread_is_writing(world: World) -> None:
    ctx = world.svc.ctx

    async def where() -> tuple[int, int]:
        return threading.get_ident(), await ctx.short_call(threading.get_ident)

    loop_thread, ran_on = asyncio.run(where())
    assert ran_on == loop_thread  # no hand-off to a thread and back

    proceed = threading.Event()

    def slow() -> int:
        proceed.wait(10)
        return threading.get_ident()

    async def while_another_writes() -> tuple[int, int, bool]:
        waiting = asyncio.ensure_future(ctx.short_call(slow))
        await asyncio.sleep(0.05)  # the loop goes on serving others meanwhile
        pending = not waiting.done()
        proceed.set()
        return threading.get_ident(), await waiting, pending

    with writing_elsewhere(world):
        loop_thread, ran_on, pending = asyncio.run(while_another_writes())
    assert ran_on != loop_thread and pending
