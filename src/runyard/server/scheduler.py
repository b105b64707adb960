"""The server's background work, done by one server at a time.

Every server answers requests; only the holder of the scheduler lease runs
the loops that change things on a timer: the reaper (lost workers), the
drift scheduler and the sweeper. Their writes are fenced with the lease's
token, so a server that lost the lease mid-pass changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from runyard.config import ServerSettings
from runyard.core.errors import StaleLease
from runyard.core.models import Lease
from runyard.server.db.repository import Repository
from runyard.server.loops import Loop
from runyard.server.services.leases import LeaseService
from runyard.server.services.registry import Services

log = logging.getLogger("runyard.server")


class Scheduler:
    """Holds (or waits for) the scheduler lease and runs the background loops
    while it holds it. ``loops()`` are what the app runs."""

    def __init__(self, services: Services, leases: LeaseService, settings: ServerSettings) -> None:
        self.services = services
        self.leases = leases
        self.settings = settings
        self.lease: Lease | None = None
        self.led_since = 0.0
        self.on_change: Callable[[Lease | None], None] = lambda _: None

    @property
    def leading(self) -> bool:
        return self.lease is not None

    def keep_lease(self) -> None:
        """Take or renew the lease (every third of its time to live)."""
        before = self.lease
        self.lease = self.leases.acquire()
        if self.lease is not None and (before is None or before.token != self.lease.token):
            self.led_since = self.services.ctx.clock()
            log.info("this server holds the scheduler lease (token %d): it runs the background loops",
                     self.lease.token)
            self.on_change(self.lease)
        elif self.lease is None and before is not None:
            log.warning("this server lost the scheduler lease (token %d): background loops stop", before.token)
            self.on_change(None)

    def release(self) -> None:
        if self.lease is not None:
            self.leases.release(self.lease)
            self.lease = None

    def _fence(self) -> Callable[[Repository], None]:
        lease = self.lease
        assert lease is not None
        return lambda repo: self.leases.fence(repo, lease)

    def _as_leader(self, name: str, work: Callable[[Callable[[Repository], None]], object]) -> Callable[[], None]:
        def tick() -> None:
            if self.lease is None:
                return
            try:
                work(self._fence())
            except StaleLease as exc:
                log.warning("%s pass refused: %s", name, exc.message)
                self.lease = None
        return tick

    def _reap(self, fence: Callable[[Repository], None]) -> None:
        lost_after = self.settings.worker_lost_after
        # Silence from before this server led does not count: it may not have been listening.
        for worker_id in self.services.workers.reap(lost_after, self.led_since, fence):
            log.warning("worker %s lost: no heartbeat for %.0fs", worker_id, lost_after)

    def _drift(self, fence: Callable[[Repository], None]) -> None:
        self.services.drift.tick(fence=fence)

    def _sweep(self, fence: Callable[[Repository], None]) -> None:
        with self.services.ctx.tx() as repo:
            fence(repo)
        self.services.stacks.sweep_uploads(self.settings.upload_grace)
        self.services.logs.seal_pending()

    def loops(self) -> list[Loop]:
        s = self.settings
        return [
            Loop("scheduler lease", self.keep_lease, max(s.scheduler_lease_ttl / 3, 0.05)),
            Loop("reaper", self._as_leader("reaper", self._reap), s.reaper_interval),
            Loop("drift scheduler", self._as_leader("drift scheduler", self._drift), s.drift_interval),
            Loop("sweeper", self._as_leader("sweeper", self._sweep), s.sweep_interval),
        ]
