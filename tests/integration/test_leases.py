"""The scheduler lease between servers sharing one database (SQLite and
PostgreSQL): one holder, expiry, takeover with a new token, fenced writes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runyard.config import ServerSettings
from runyard.core.errors import StaleLease
from runyard.core.models import Lease
from runyard.core.states import RunKind, RunState
from runyard.server.app import build_services
from runyard.server.services.leases import LeaseService
from runyard.server.services.registry import Services
from runyard.testing import FakeClock
from tests.integration.conftest import Api


@pytest.fixture
def two(database_url: str, tmp_path) -> Iterator[tuple[LeaseService, LeaseService, FakeClock]]:
    """Two servers' lease services on one database, sharing one clock."""
    clock = FakeClock()
    made: list[Services] = []
    for name in ("a", "b"):
        settings, _ = ServerSettings.resolve({"data_dir": tmp_path / name, "database_url": database_url}, env={})
        svc = build_services(settings)
        svc.ctx.clock = clock
        made.append(svc)
    yield (LeaseService(made[0].ctx, "server-a", ttl=10), LeaseService(made[1].ctx, "server-b", ttl=10), clock)
    for svc in made:
        svc.close()


def test_only_one_of_two_contenders_holds_the_lease(two) -> None:
    a, b, _ = two
    held = a.acquire()
    assert held is not None and held.holder == "server-a" and held.token == 1
    assert b.acquire() is None
    renewed = a.acquire()
    assert renewed is not None and renewed.token == 1  # a renewal keeps the token


def test_a_lease_not_renewed_is_taken_over_with_a_new_token(two) -> None:
    a, b, clock = two
    first = a.acquire()
    assert first is not None
    clock.advance(9)
    assert b.acquire() is None  # not expired yet
    clock.advance(2)
    taken = b.acquire()
    assert taken is not None and taken.holder == "server-b" and taken.token == 2
    assert a.acquire() is None  # the old holder finds it gone


def test_a_stale_holders_fence_is_refused(two) -> None:
    a, b, clock = two
    old = a.acquire()
    assert old is not None
    clock.advance(11)
    assert b.acquire() is not None
    with a.ctx.tx() as repo, pytest.raises(StaleLease, match="no longer holds the scheduler lease"):
        a.fence(repo, old)


def test_a_released_lease_is_taken_at_once(two) -> None:
    a, b, _ = two
    held = a.acquire()
    assert held is not None
    a.release(held)
    taken = b.acquire()
    assert taken is not None and taken.token == 2


def test_a_reaper_pass_under_a_lost_lease_removes_no_worker(api: Api) -> None:
    creds = api.pool()
    api.stack()
    worker = api.worker(*creds)
    run = api.client.trigger("s1", RunKind.PROPOSED)
    assert worker.poll(2).assignment is not None
    # The in-process server leads; another server takes the lease over (say
    # this one was paused past its expiry), then the old leader's reaper runs.
    mine = LeaseService(api.svc.ctx, "x", ttl=10).current()
    assert mine is not None
    with api.svc.ctx.tx() as repo:
        assert repo.swap_lease(mine.name, mine.token, None, holder="new-leader", token=mine.token + 1)
    old_leader = LeaseService(api.svc.ctx, mine.holder, ttl=10)
    with pytest.raises(StaleLease):
        api.svc.workers.reap(0.0, 0.0, lambda repo: old_leader.fence(repo, mine))
    assert [w.id for w in api.client.workers("p1")] != []
    assert api.client.run(run.id).state == RunState.READY



def test_insert_if_absent_says_who_inserted_on_every_database(api: Api) -> None:
    api.pool()
    api.stack()
    stack_id = api.client.stack("s1").id
    with api.svc.ctx.tx() as repo:
        assert repo.take_state_lock(stack_id, "first", {"ID": "first"}, 1.0) is True
        assert repo.take_state_lock(stack_id, "second", {"ID": "second"}, 2.0) is False
        lease = Lease("test-lease", "a", 1, 10.0)
        assert repo.create_lease(lease) is True
        assert repo.create_lease(Lease("test-lease", "b", 1, 10.0)) is False
        assert repo.lease("test-lease") == lease
