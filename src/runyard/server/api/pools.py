"""Routes for pools and their workers (people and tools holding an API key)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from runyard.core.models import Pool
from runyard.server.api.deps import Svc, User, Wait
from runyard.wire import (
    API,
    CycleOut,
    DemandOut,
    FleetWorker,
    PoolCreate,
    PoolCreated,
    PoolOut,
    PoolReset,
    PoolSummary,
    PoolUpdate,
    RunOut,
    StackOut,
    TokenOut,
    WorkerOut,
)

router = APIRouter(prefix=API, tags=["pools"])


def _summary(svc: Svc, pool: Pool) -> PoolSummary:
    stats = svc.pools.stats(pool)
    return PoolSummary(**PoolOut.model_validate(pool).model_dump(), workers=stats.workers,
                       queue_length=stats.queue_length, running=stats.running)


@router.post("/pools", status_code=201, response_model=PoolCreated)
def create_pool(body: PoolCreate, svc: Svc, _: User) -> PoolCreated:
    pool, token = svc.pools.create(
        body.name, body.csr, body.description, tuple(body.labels), body.drift_detection_limit
    )
    return PoolCreated(pool=PoolOut.model_validate(pool), token=token)


@router.get("/pools", response_model=list[PoolSummary])
def list_pools(svc: Svc, _: User) -> list[PoolSummary]:
    return [_summary(svc, p) for p in svc.pools.list()]


@router.get("/pools/{ref}", response_model=PoolSummary)
def get_pool(ref: str, svc: Svc, _: User) -> PoolSummary:
    return _summary(svc, svc.pools.get(ref))


@router.patch("/pools/{ref}", response_model=PoolSummary)
def update_pool(ref: str, body: PoolUpdate, svc: Svc, _: User) -> PoolSummary:
    labels = tuple(body.labels) if body.labels is not None else None
    return _summary(svc, svc.pools.update(ref, body.description, labels, body.drift_detection_limit))


@router.get("/pools/{ref}/token", response_model=TokenOut)
def pool_token(ref: str, svc: Svc, _: User) -> TokenOut:
    """A token for the pool's current certificate with this server's endpoint
    list (RUNYARD_PUBLIC_ENDPOINTS): no reset needed when servers are added."""
    return TokenOut(token=svc.pools.token(svc.pools.get(ref)))


@router.post("/pools/{ref}/cycle", response_model=CycleOut)
def cycle_pool(ref: str, svc: Svc, _: User) -> CycleOut:
    """Every worker exits: idle ones at once, busy ones after their run."""
    return CycleOut(workers=svc.pools.cycle(ref))


@router.post("/pools/{ref}/reset", response_model=PoolCreated)
def reset_pool(ref: str, body: PoolReset, svc: Svc, _: User) -> PoolCreated:
    """A new certificate and token; the old ones are refused from now on."""
    token, _removed = svc.workers.reset_pool(ref, body.csr)
    return PoolCreated(pool=PoolOut.model_validate(svc.pools.get(ref)), token=token)


@router.get("/pools/{ref}/queue", response_model=list[RunOut])
def pool_queue(ref: str, svc: Svc, _: User) -> list[RunOut]:
    """Runs in progress first, then runs waiting for a worker, oldest first."""
    queue = svc.dispatch.queue(svc.pools.get(ref).id)
    return [RunOut.model_validate(run).model_copy(update={"waiting_for": why}) for run, why in queue]


@router.get("/pools/{ref}/stacks", response_model=list[StackOut])
def pool_stacks(ref: str, svc: Svc, _: User) -> list[StackOut]:
    """The stacks that run on this pool (used by)."""
    return [StackOut.public(s) for s in svc.stacks.list(svc.pools.get(ref).id)]


@router.get("/pools/{ref}/demand", response_model=DemandOut)
async def pool_demand(ref: str, svc: Svc, _: User, since: int = -1, wait: Wait = 0) -> DemandOut:
    """The pool's demand and fleet. With ``since`` (the last ``version`` seen)
    and ``wait``, held until something changes: autoscalers react at once."""
    pool = await run_in_threadpool(svc.pools.get, ref)
    demand = await svc.dispatch.demand(pool, since, wait)
    fleet = [FleetWorker(**WorkerOut.model_validate(m.worker).model_dump(), idle_since=m.idle_since)
             for m in demand.fleet]
    return DemandOut(version=demand.version, queued=demand.queued, running=demand.running, workers=fleet)


@router.get("/pools/{ref}/workers", response_model=list[WorkerOut])
def list_workers(ref: str, svc: Svc, _: User) -> list[WorkerOut]:
    return [WorkerOut.model_validate(w) for w in svc.workers.list(svc.pools.get(ref).id)]


@router.post("/workers/{worker_id}/remove", status_code=204)
def remove_worker(worker_id: str, svc: Svc, _: User, reason: str = "removed") -> Response:
    """Take a worker out of its pool (its instance is gone). A run it held fails with ``reason``."""
    svc.workers.remove(worker_id, reason)
    return Response(status_code=204)


@router.post("/workers/{worker_id}/drain", response_model=WorkerOut)
def drain_worker(worker_id: str, svc: Svc, _: User) -> WorkerOut:
    return WorkerOut.model_validate(svc.workers.drain(worker_id, True))


@router.post("/workers/{worker_id}/undrain", response_model=WorkerOut)
def undrain_worker(worker_id: str, svc: Svc, _: User) -> WorkerOut:
    return WorkerOut.model_validate(svc.workers.drain(worker_id, False))
