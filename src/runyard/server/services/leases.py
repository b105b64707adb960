"""Named leases with expiry and a fencing token, in the shared database.

Several servers may share one database; exactly one at a time holds a lease
(the scheduler's runs the background loops). A holder renews before it
expires; when it stops renewing, another takes it over and the token grows.
Writes made on the lease's authority check the token in their own
transaction (:meth:`LeaseService.fence`), so a holder that lost the lease
(paused, partitioned) is refused instead of racing its successor.
"""

from __future__ import annotations

from runyard.core.errors import StaleLease
from runyard.core.models import Lease
from runyard.server.db.repository import Repository
from runyard.server.services import Context

SCHEDULER = "scheduler"


class LeaseService:
    def __init__(self, ctx: Context, holder: str, ttl: float, address: str = "") -> None:
        self.ctx = ctx
        self.holder = holder  # this server's identity
        self.ttl = ttl
        self.address = address

    def current(self, name: str = SCHEDULER) -> Lease | None:
        with self.ctx.tx() as repo:
            return repo.lease(name)

    def acquire(self, name: str = SCHEDULER) -> Lease | None:
        """Take or renew the lease; returns it if this server holds it now."""
        now = self.ctx.clock()
        expires = now + self.ttl
        with self.ctx.tx() as repo:
            held = repo.lease(name)
            if held is None:
                fresh = Lease(name, self.holder, 1, expires, self.address)
                if repo.create_lease(fresh):
                    return fresh
                return None  # another server created it first
            if held.holder == self.holder and held.expires_at >= now:
                renewed = repo.swap_lease(name, held.token, self.holder, expires_at=expires, address=self.address)
                return Lease(name, self.holder, held.token, expires, self.address) if renewed else None
            if held.expires_at < now:
                # Expired (ours or another's): taking it is a new term with a new token.
                token = held.token + 1
                if repo.swap_lease(name, held.token, None, holder=self.holder, token=token, expires_at=expires,
                                   address=self.address):
                    return Lease(name, self.holder, token, expires, self.address)
            return None

    def holds(self, lease: Lease | None) -> bool:
        """Whether ``lease`` (as read now) is this server's and unexpired."""
        return lease is not None and lease.holder == self.holder and lease.expires_at >= self.ctx.clock()

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
