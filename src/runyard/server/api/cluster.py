"""Routes about the servers themselves: who leads."""

from __future__ import annotations

from fastapi import APIRouter

from runyard.server.api.deps import Svc, User
from runyard.wire import API, ClusterOut, LeaseOut

router = APIRouter(prefix=API, tags=["cluster"])


@router.get("/cluster", response_model=ClusterOut)
def cluster_status(svc: Svc, _: User) -> ClusterOut:
    """This server, and which server holds the scheduler lease."""
    lease = svc.leases.current()
    leading = svc.leases.holds(lease)
    return ClusterOut(server=svc.leases.holder, leading=leading,
                      lease=LeaseOut.model_validate(lease) if lease else None)
