"""Heartbeats cost no write of their own: they are kept in memory and
written in one batch, and the reaper writes them before it judges."""

from __future__ import annotations

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
