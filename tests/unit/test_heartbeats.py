"""Heartbeats cost no write of their own: they are kept in memory and
written in one batch, and the reaper writes them before it judges. An idle
worker's held poll is its heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from runyard.testing import InProcessWorkerApi
from runyard.wire import PollOut
from tests.unit.conftest import World


def test_heartbeats_are_written_in_a_batch_and_count_before_the_reaper_judges(world: World) -> None:
    world.pool()
    launcher = world.launcher()
    launcher.register()
    registered = world.clock()
    world.clock.advance(50)
    launcher.client.heartbeat()
    stored = world.svc.workers.list(world.pool_id)[0].last_seen_at.timestamp()
    assert stored == registered  # not written yet: no transaction per heartbeat

    world.clock.advance(20)  # 70 s since it registered, 20 s since its heartbeat
    assert world.svc.workers.reap(60, started_at=0) == []
    assert world.svc.workers.list(world.pool_id)[0].last_seen_at.timestamp() == registered + 50

    world.clock.advance(41)  # silent for 61 s now
    assert world.svc.workers.reap(60, started_at=0) == [launcher.worker_id]


def test_one_flush_writes_every_worker_seen_and_never_moves_a_time_back(world: World) -> None:
    world.pool()
    launchers = [world.launcher() for _ in range(3)]
    for launcher in launchers:
        launcher.register()
    world.clock.advance(5)
    for launcher in launchers:
        launcher.client.heartbeat()
    assert world.svc.workers.flush_seen() == 3
    assert world.svc.workers.flush_seen() == 0  # nothing new
    later = world.clock()
    world.svc.workers.saw(launchers[0].worker_id)
    world.clock.advance(-3)  # a time older than the stored one (another server's) ...
    world.svc.workers.saw(launchers[0].worker_id)
    world.svc.workers.flush_seen()
    seen = {w.id: w.last_seen_at.timestamp() for w in world.svc.workers.list(world.pool_id)}
    assert seen[launchers[0].worker_id] == later  # ... does not move it back


def test_a_held_poll_is_the_workers_heartbeat_until_it_ends(world: World) -> None:
    world.pool()
    launcher = world.launcher()
    launcher.register()
    workers = world.svc.workers
    workers.ctx.long_poll = 30.0
    worker = workers.refresh(launcher.worker_id)
    assert workers.keep_alive_every == 5.0  # a twelfth of the default 60 s

    async def scenario() -> list[str]:
        held = asyncio.create_task(world.svc.dispatch.poll(worker, 30))
        await asyncio.sleep(0)  # the poll is held now
        assert workers.polls_held(worker.id) == 1
        for _ in range(4):  # two minutes without a heartbeat, the poll held throughout
            world.clock.advance(30)
            workers.flush_seen()
        assert workers.reap(60, started_at=0) == []
        stored = workers.list(world.pool_id)[0].last_seen_at.timestamp()
        assert stored == world.clock()
        world.clock.advance(2)
        workers.flush_seen()  # counted again only every keep_alive_every: no write
        assert workers.list(world.pool_id)[0].last_seen_at.timestamp() == stored
        held.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await held
        assert workers.polls_held(worker.id) == 0
        world.clock.advance(61)  # the poll ended and nothing came since
        return workers.reap(60, started_at=0)

    assert asyncio.run(scenario()) == [worker.id]


class HeldPolls(InProcessWorkerApi):
    """Polls that stay held until the test lets them go."""

    def __init__(self, world: World) -> None:
        super().__init__(world.svc)
        self.release = threading.Event()

    def poll(self, wait: float) -> PollOut:
        self.release.wait(10)
        return PollOut()


def test_an_idle_launcher_holding_a_poll_sends_no_heartbeat(world: World) -> None:
    world.pool()
    api = HeldPolls(world)
    launcher = world.launcher(api=api)
    launcher.register()
    polling = threading.Thread(target=launcher._poll, daemon=True)
    polling.start()
    assert launcher._polling.wait(5)
    assert not launcher.heartbeat_due()  # the server counts the held poll as one
    launcher._current = object()  # type: ignore[assignment]  # busy: a run is under way
    assert launcher.heartbeat_due()
    launcher._current = None
    api.release.set()
    polling.join(5)
    assert not launcher._polling.is_set()
    assert launcher.heartbeat_due()  # between two polls
