"""Primary and standby: promotion when the primary's lease lapses, fencing,
demotion of a primary that comes back, planned failover and failback."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.config import ServerSettings
from runyard.core.errors import Standby
from runyard.server.leader import Leader
from runyard.server.services.leases import LeaseService
from runyard.testing import FakeClock, MemoryBlobStore, memory_services


def scheduler_for(tmp_path: Path, clock: FakeClock, name: str, site: str, standby: bool,
                  shared: object = None) -> Leader:
    svc = memory_services(clock, MemoryBlobStore(), directory=tmp_path) if shared is None else shared
    settings, _ = ServerSettings.resolve({"data_dir": tmp_path, "standby": standby, "site": site,
                                          "scheduler_lease_ttl": "10s"}, env={})
    leases = LeaseService(svc.ctx, name, 10.0, f"http://{name}", site)  # type: ignore[attr-defined]
    return Leader(svc, leases, settings)  # type: ignore[arg-type]


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Leader, Leader, FakeClock]:
    clock = FakeClock()
    primary = scheduler_for(tmp_path, clock, "a", "eu-west", standby=False)
    standby = scheduler_for(tmp_path, clock, "b", "eu-central", standby=True, shared=primary.services)
    return primary, standby, clock


def test_a_standby_serves_nothing_while_the_primary_renews(pair) -> None:
    primary, standby, clock = pair
    primary.keep_lease()
    for _ in range(5):
        clock.advance(3)
        primary.keep_lease()
        standby.keep_lease()
    assert (primary.role, standby.role) == ("primary", "standby")
    with primary.services.ctx.tx() as repo, pytest.raises(Standby) as refused:
        standby.check_serving(repo)
    assert refused.value.primary == "http://a"


def test_the_standby_promotes_itself_when_the_primary_stops_renewing(pair) -> None:
    primary, standby, clock = pair
    primary.keep_lease()
    standby.keep_lease()
    assert standby.primary_address() == "http://a"
    clock.advance(10.5)  # expired, but a same-site server gets the first go (two intervals)
    standby.keep_lease()
    assert standby.role == "standby"
    # Nobody serves now: a client is not sent back to a primary whose host may be gone.
    assert standby.primary_address() == ""
    clock.advance(3.4)
    standby.keep_lease()
    assert standby.role == "primary" and standby.lease is not None and standby.lease.token == 2
    # The old primary comes back (after a partition): it demotes itself, and its claims are refused.
    primary.keep_lease()
    assert primary.role == "standby"
    with primary.services.ctx.tx() as repo, pytest.raises(Standby):
        primary.check_serving(repo)


def test_planned_failback_with_promote_is_safe_twice(pair) -> None:
    primary, standby, _clock = pair
    primary.keep_lease()
    standby.promote()
    standby.promote()
    assert standby.role == "primary" and standby.lease is not None and standby.lease.token == 2
    primary.keep_lease()
    assert primary.role == "standby"
    primary.promote()
    assert primary.role == "primary" and primary.lease is not None and primary.lease.token == 3
    standby.keep_lease()
    assert standby.role == "standby"


def test_demote_gives_the_lease_up_and_the_other_site_takes_over(pair) -> None:
    primary, standby, clock = pair
    primary.keep_lease()
    primary.demote()
    primary.demote()
    assert primary.role == "standby"
    clock.advance(3.4)  # released, plus the standby's head start for same-site servers
    standby.keep_lease()
    assert standby.role == "primary"


def test_a_promote_racing_the_lease_loop_is_not_undone_by_it(pair, monkeypatch) -> None:
    """The loop read the lease (the primary's) just before a promote, and
    stored it just after: the promoted server answered as a standby."""
    import threading

    primary, standby, _clock = pair
    primary.keep_lease()
    read, promoted = threading.Event(), threading.Event()
    real_current = standby.leases.current

    def current_as_read_before_the_promote(*args: object) -> object:
        seen = real_current(*args)
        read.set()
        promoted.wait(0.5)  # the promote, if it can run now, is done when this returns
        return seen

    monkeypatch.setattr(standby.leases, "current", current_as_read_before_the_promote)
    loop = threading.Thread(target=standby.keep_lease)
    loop.start()
    assert read.wait(5)
    def promote_now() -> None:
        standby.promote()
        promoted.set()

    promote = threading.Thread(target=promote_now)
    promote.start()
    promote.join(5)
    loop.join(5)
    assert standby.role == "primary" and standby.lease is not None
