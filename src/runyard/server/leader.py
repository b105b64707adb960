"""Leadership: the server's role (active or standby) from the leadership
lease, and the background work only the lease's holder does.

Every server answers requests; only the holder of the lease (stored under
the name "scheduler") runs the loops that change things on a timer: the
reaper (lost workers), drift detection and the sweeper. Dispatch is not
among them: every server assigns runs (services/dispatch.py). Their writes are fenced with the lease's
token, so a server that lost the lease mid-pass changes nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from runyard.config import ServerSettings
from runyard.core.errors import StaleLease, Standby
from runyard.core.models import Lease
from runyard.server.db.repository import Repository
from runyard.server.loops import Loop
from runyard.server.services.leases import SCHEDULER, LeaseService
from runyard.server.services.registry import Services

SEAL_INTERVAL = 0.2  # how soon an ended run's log goes to the object store

log = logging.getLogger("runyard.server")


class Leader:
    """This server's role, and the background loops it runs when it leads.

    A server is *active* or *standby*. An active server serves requests while
    its site holds the scheduler lease (or nobody does), and keeps trying to
    hold the lease itself; one that finds the lease held by another site
    demotes itself to standby (a primary back from a partition). A standby
    answers nothing but health checks and the cluster status, and promotes
    itself when the lease has gone unrenewed past its time to live.
    ``loops()`` are what the app runs."""

    def __init__(self, services: Services, leases: LeaseService, settings: ServerSettings) -> None:
        self.services = services
        self.leases = leases
        self.settings = settings
        self.standby = settings.standby
        self.lease: Lease | None = None  # held by this server
        self.seen: Lease | None = None  # the lease as last read, whoever holds it
        self.led_since = 0.0
        # The lease loop and a person's promote or demote (a request's thread)
        # change the role one at a time: interleaved, the loop's read of the
        # lease from before a promote was stored after it, and the promoted
        # server answered as a standby until the loop's next turn.
        self._changing = threading.Lock()
        # What a refusal tells a client to wait before it asks again.
        self.retry_after = int(settings.scheduler_lease_ttl) or 1

    @property
    def interval(self) -> float:
        """How often the lease is renewed or looked at: often enough that a
        lapse is noticed within a second."""
        return max(min(self.leases.ttl / 3, 1.0), 0.05)

    @property
    def leading(self) -> bool:
        return self.lease is not None

    @property
    def serving(self) -> bool:
        """Whether this server answers the API (its site is the primary one)."""
        return not self.standby and not self.leases.other_site_holds(self.seen)

    @property
    def role(self) -> str:
        return "standby" if not self.serving else ("primary" if self.leading else "active")

    def keep_lease(self) -> None:
        """Take or renew the lease (every ``interval``); promote
        or demote this server as the lease says."""
        with self._changing:
            self._keep_lease()

    def _keep_lease(self) -> None:
        before = self.lease
        if self.standby:
            # Give the primary site's own servers (which look every interval) the first go.
            self.lease = self.leases.acquire(expired_for=2 * self.interval)
            if self.lease is not None:
                self.standby = False
                log.warning("promoted: the primary stopped renewing its lease; this server (site %s) serves now",
                            self.leases.site)
        else:
            self.lease = self.leases.acquire()
        self.seen = self.lease or self.leases.current()
        if not self.standby and self.lease is None and self.leases.other_site_holds(self.seen):
            assert self.seen is not None
            self.standby = True
            log.warning("demoted: site %s holds the lease now (token %d); this server stands by",
                        self.seen.site, self.seen.token)
        self._changed(before)

    def _changed(self, before: Lease | None) -> None:
        if self.lease is not None and (before is None or before.token != self.lease.token):
            self.led_since = self.services.ctx.clock()
            log.info("this server holds the scheduler lease (token %d): it runs the background loops",
                     self.lease.token)
        elif self.lease is None and before is not None:
            log.warning("this server lost the scheduler lease (token %d): background loops stop", before.token)

    def promote(self) -> Lease | None:
        """Serve and lead now, whoever leads (planned failover; safe twice)."""
        with self._changing:
            before = self.lease
            self.lease = self.leases.seize()
            if self.lease is not None:
                self.standby = False
                self.seen = self.lease
            self._changed(before)
            return self.lease

    def demote(self) -> None:
        """Stand by now: give the lease up and answer nothing (safe twice)."""
        with self._changing:
            self.standby = True
            if self.lease is not None:
                self.leases.release(self.lease)
            before, self.lease = self.lease, None
            self.seen = self.leases.current()
            self._changed(before)

    def check_serving(self, repo: Repository) -> None:
        """Inside a claim's transaction: refuse unless this server's site
        holds the lease (a demoted primary never assigns a run)."""
        if self.standby:
            raise Standby(self.primary_address(), self.retry_after)
        held = repo.lease(SCHEDULER)
        if self.leases.other_site_holds(held):
            raise Standby(held.address if held else "", self.retry_after)

    def primary_address(self) -> str:
        # Only while the lease runs: a lapsed holder serves nobody, and a
        # client must not be sent back to a server whose host may be gone.
        seen = self.seen
        return seen.address if seen is not None and seen.expires_at >= self.services.ctx.clock() else ""

    def release(self) -> None:
        with self._changing:
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
        self.services.auth.forget_revoked_sessions()
        self.services.logs.seal_pending()

    def loops(self) -> list[Loop]:
        s = self.settings
        return [
            Loop("scheduler lease", self.keep_lease, self.interval),
            # On every server: the heartbeats it took, in one write.
            Loop("heartbeats", self.services.workers.flush_seen, min(1.0, s.worker_lost_after / 10)),
            Loop("log sealer", self.services.runs.after_ends, SEAL_INTERVAL),
            Loop("reaper", self._as_leader("reaper", self._reap), s.reaper_interval),
            Loop("drift scheduler", self._as_leader("drift scheduler", self._drift), s.drift_interval),
            Loop("sweeper", self._as_leader("sweeper", self._sweep), s.sweep_interval),
        ]
