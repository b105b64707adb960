"""Named leases with expiry and a fencing token, in the shared database.

Several servers may share one database; exactly one at a time holds a lease
(the leadership lease, stored as "scheduler": its holder runs the
background loops). A holder renews before it expires; when it stops renewing, another takes it over and the token grows.
Writes made on the lease's authority check the token in their own
transaction (:meth:`LeaseService.fence`), so a holder that lost the lease
(paused, partitioned) is refused instead of racing its successor.

The lease also names its holder's *site*: the servers of that site serve,
the servers of every other site (a standby region) stand by.
"""

from __future__ import annotations

from runyard.core.errors import StaleLease
from runyard.core.models import Lease
from runyard.server.db.repository import Repository
from runyard.server.services import Context

SCHEDULER = "scheduler"


class LeaseService:
    def __init__(self, ctx: Context, holder: str, ttl: float, address: str = "", site: str = "primary") -> None:
        self.ctx = ctx
        self.holder = holder  # this server's identity
        self.ttl = ttl
        self.address = address
        self.site = site

    def current(self, name: str = SCHEDULER) -> Lease | None:
        with self.ctx.read() as repo:
            return repo.lease(name)

    def acquire(self, name: str = SCHEDULER, expired_for: float = 0.0) -> Lease | None:
        """Take or renew the lease; returns it if this server holds it now.
        ``expired_for``: take another's lease only once it has been expired
        that long (a standby gives the primary site's own servers the first go)."""
        now = self.ctx.clock()
        expires = now + self.ttl
        with self.ctx.tx() as repo:
            held = repo.lease(name)
            if held is None:
                fresh = Lease(name, self.holder, 1, expires, self.address, self.site)
                return fresh if repo.create_lease(fresh) else None
            if held.holder == self.holder and held.expires_at >= now:
                renewed = repo.swap_lease(name, held.token, self.holder, expires_at=expires, address=self.address)
                return Lease(name, self.holder, held.token, expires, self.address, self.site) if renewed else None
            if held.expires_at + expired_for < now:
                return self._take(repo, held, expires)
            return None

    def seize(self, name: str = SCHEDULER) -> Lease | None:
        """Take the lease now, whoever holds it (a planned failover or failback):
        the holder's next write is refused by the new token."""
        with self.ctx.tx() as repo:
            held = repo.lease(name)
            expires = self.ctx.clock() + self.ttl
            if held is None:
                fresh = Lease(name, self.holder, 1, expires, self.address, self.site)
                return fresh if repo.create_lease(fresh) else None
            if held.holder == self.holder:
                return held
            return self._take(repo, held, expires)

    def _take(self, repo: Repository, held: Lease, expires: float) -> Lease | None:
        token = held.token + 1  # a new term: the old holder's fence fails from now on
        if repo.swap_lease(held.name, held.token, None, holder=self.holder, token=token, expires_at=expires,
                           address=self.address, site=self.site):
            return Lease(held.name, self.holder, token, expires, self.address, self.site)
        return None

    def holds(self, lease: Lease | None) -> bool:
        """Whether ``lease`` (as read now) is this server's and unexpired."""
        return lease is not None and lease.holder == self.holder and lease.expires_at >= self.ctx.clock()

    def other_site_holds(self, lease: Lease | None) -> bool:
        """Whether ``lease`` (as read now) is unexpired and another site's:
        then this server's site stands by."""
        return lease is not None and lease.site != self.site and lease.expires_at >= self.ctx.clock()

    def release(self, lease: Lease) -> None:
        """Give the lease up at once (a clean shutdown): another takes it without waiting."""
        with self.ctx.tx() as repo:
            repo.swap_lease(lease.name, lease.token, self.holder, expires_at=0.0)

    def fence(self, repo: Repository, lease: Lease) -> None:
        """Inside a transaction: refuse to go on unless ``lease`` is still held."""
        held = repo.lease(lease.name)
        if held is None or held.token != lease.token or held.holder != self.holder \
                or held.expires_at < self.ctx.clock():
            raise StaleLease(f"this server no longer holds the {lease.name} lease (token {lease.token}); "
                             f"{held.holder if held else 'nobody'} does")
