"""An idle worker's poll: renewed without touching the database while
nothing it waits for moved, and at once when something did."""

from __future__ import annotations

import pytest

from runyard.core.states import RunKind
from runyard.server.services.workers import WorkerService
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
    looks = calls_of(monkeypatch, WorkerService, "_look")
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
    looks = calls_of(monkeypatch, WorkerService, "_look")
    assert api.poll(0).exit_reason == ""
    world.svc.pools.cycle(world.pool_id)  # moves the fleet's topic
    assert api.poll(0).exit_reason == "cycled"
    assert len(looks) == 2
