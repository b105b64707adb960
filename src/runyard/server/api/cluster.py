"""Routes about the servers themselves: who serves, who leads, and the
commands that move the primary role (`runyard dr promote|demote`). A
standby answers these too."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from runyard.server.api.deps import Svc, User
from runyard.server.leader import Leader
from runyard.wire import API, ClusterOut, LeaseOut

router = APIRouter(prefix=API, tags=["cluster"])


def _scheduler(request: Request) -> Leader:
    scheduler: Leader = request.app.state.scheduler
    return scheduler


def _status(svc: Svc, scheduler: Leader) -> ClusterOut:
    lease = svc.leases.current()
    return ClusterOut(server=svc.leases.holder, site=svc.leases.site, role=scheduler.role,
                      leading=svc.leases.holds(lease), address=svc.leases.address,
                      lease=LeaseOut.model_validate(lease) if lease else None)


@router.get("/cluster", response_model=ClusterOut)
def cluster_status(request: Request, svc: Svc, _: User) -> ClusterOut:
    """This server's role, and which server (and site) holds the scheduler lease."""
    return _status(svc, _scheduler(request))


@router.post("/cluster/promote", response_model=ClusterOut)
async def promote(request: Request, svc: Svc, _: User) -> ClusterOut:
    """Make this server's site the primary now (planned failover or failback).
    The other site's servers stand by as soon as they see it. Safe twice."""
    scheduler = _scheduler(request)
    await run_in_threadpool(scheduler.promote)
    return await run_in_threadpool(_status, svc, scheduler)


@router.post("/cluster/demote", response_model=ClusterOut)
async def demote(request: Request, svc: Svc, _: User) -> ClusterOut:
    """Make this server stand by now, giving up the lease. Safe twice."""
    scheduler = _scheduler(request)
    await run_in_threadpool(scheduler.demote)
    return await run_in_threadpool(_status, svc, scheduler)
