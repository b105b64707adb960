"""Routes for people and tools holding an API key."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from runyard.core.errors import InvalidInput
from runyard.core.models import Pool, Tool
from runyard.core.states import ON_WORKER, SCHEDULABLE
from runyard.server.api.deps import Svc, User
from runyard.server.notifier import pool_topic, run_topic
from runyard.server.services.pools import summarize
from runyard.wire import (
    API,
    CycleOut,
    DemandOut,
    FleetWorker,
    LogLineIO,
    LogsOut,
    OutputIO,
    PoolCreate,
    PoolCreated,
    PoolOut,
    PoolReset,
    PoolSummary,
    PoolUpdate,
    RunOut,
    RunTrigger,
    StackCreate,
    StackOut,
    UploadOut,
    WorkerOut,
)

router = APIRouter(prefix=API)


@router.post("/pools", status_code=201, response_model=PoolCreated, tags=["pools"])
def create_pool(body: PoolCreate, svc: Svc, _: User) -> PoolCreated:
    pool, token = svc.pools.create(
        body.name, body.csr, body.description, tuple(body.labels), body.drift_detection_limit
    )
    return PoolCreated(pool=PoolOut.of(pool), token=token)


def _summary(svc: Svc, pool: Pool) -> PoolSummary:
    with svc.ctx.tx() as repo:
        extra = summarize(repo, pool)
    return PoolSummary(**PoolOut.of(pool).model_dump(), **extra)


@router.get("/pools", response_model=list[PoolSummary], tags=["pools"])
def list_pools(svc: Svc, _: User) -> list[PoolSummary]:
    return [_summary(svc, p) for p in svc.pools.list()]


@router.get("/pools/{ref}", response_model=PoolSummary, tags=["pools"])
def get_pool(ref: str, svc: Svc, _: User) -> PoolSummary:
    return _summary(svc, svc.pools.get(ref))


@router.patch("/pools/{ref}", response_model=PoolSummary, tags=["pools"])
def update_pool(ref: str, body: PoolUpdate, svc: Svc, _: User) -> PoolSummary:
    labels = tuple(body.labels) if body.labels is not None else None
    return _summary(svc, svc.pools.update(ref, body.description, labels, body.drift_detection_limit))


@router.post("/pools/{ref}/cycle", response_model=CycleOut, tags=["pools"])
def cycle_pool(ref: str, svc: Svc, _: User) -> CycleOut:
    """Every worker exits: idle ones at once, busy ones after their run."""
    return CycleOut(workers=svc.pools.cycle(ref))


@router.post("/pools/{ref}/reset", response_model=PoolCreated, tags=["pools"])
def reset_pool(ref: str, body: PoolReset, svc: Svc, _: User) -> PoolCreated:
    """A new certificate and token; the old ones are refused from now on."""
    token, _removed = svc.workers.reset_pool(ref, body.csr)
    return PoolCreated(pool=PoolOut.of(svc.pools.get(ref)), token=token)


@router.get("/pools/{ref}/queue", response_model=list[RunOut], tags=["pools"])
def pool_queue(ref: str, svc: Svc, _: User) -> list[RunOut]:
    """Runs in progress first, then runs waiting for a worker, oldest first."""
    pool = svc.pools.get(ref)
    with svc.ctx.tx() as repo:
        running = repo.runs(pool_id=pool.id, states=ON_WORKER, oldest_first=True, limit=500)
        waiting = repo.runs(pool_id=pool.id, states=SCHEDULABLE, oldest_first=True, limit=500)
    return [RunOut.of(r) for r in running] + [RunOut.of(r, svc.runs.waiting_for(r)) for r in waiting]


@router.get("/pools/{ref}/stacks", response_model=list[StackOut], tags=["pools"])
def pool_stacks(ref: str, svc: Svc, _: User) -> list[StackOut]:
    """The stacks that run on this pool (used by)."""
    pool = svc.pools.get(ref)
    with svc.ctx.tx() as repo:
        return [StackOut.of(s) for s in repo.stacks(pool.id)]


@router.get("/pools/{ref}/demand", response_model=DemandOut, tags=["pools"])
async def pool_demand(ref: str, svc: Svc, _: User, since: int = -1, wait: float = 0) -> DemandOut:
    """The pool's demand and fleet. With ``since`` (the last ``version`` seen)
    and ``wait``, held until something changes: autoscalers react at once."""
    pool = await run_in_threadpool(svc.pools.get, ref)
    topic = pool_topic(pool.id)
    version = svc.ctx.notifier.generation(topic)
    if version == since and wait > 0:
        await svc.ctx.notifier.wait(topic, since, min(wait, svc.long_poll))
        version = svc.ctx.notifier.generation(topic)
    return await run_in_threadpool(_demand, svc, pool, version)


def _demand(svc: Svc, pool: Pool, version: int) -> DemandOut:
    queued = svc.runs.schedulable_count(pool.id)
    with svc.ctx.tx() as repo:
        workers = [FleetWorker(**WorkerOut.of(w).model_dump(), idle_since=repo.idle_since(w))
                   for w in repo.workers(pool.id)]
        running = repo.count_runs(pool.id, ON_WORKER)
    return DemandOut(version=version, queued=queued, running=running, workers=workers)


@router.post("/workers/{worker_id}/remove", status_code=204, tags=["pools"])
def remove_worker(worker_id: str, svc: Svc, _: User, reason: str = "removed") -> Response:
    """Take a worker out of its pool (its instance is gone). A run it held fails with ``reason``."""
    svc.workers.remove(worker_id, reason)
    return Response(status_code=204)


@router.post("/workers/{worker_id}/drain", response_model=WorkerOut, tags=["pools"])
def drain_worker(worker_id: str, svc: Svc, _: User) -> WorkerOut:
    return WorkerOut.of(svc.workers.drain(worker_id, True))


@router.post("/workers/{worker_id}/undrain", response_model=WorkerOut, tags=["pools"])
def undrain_worker(worker_id: str, svc: Svc, _: User) -> WorkerOut:
    return WorkerOut.of(svc.workers.drain(worker_id, False))


@router.get("/pools/{ref}/workers", response_model=list[WorkerOut], tags=["pools"])
def list_workers(ref: str, svc: Svc, _: User) -> list[WorkerOut]:
    pool = svc.pools.get(ref)
    with svc.ctx.tx() as repo:
        return [WorkerOut.of(w) for w in repo.workers(pool.id)]


@router.post("/sources", status_code=201, response_model=UploadOut, tags=["stacks"])
async def upload_source(request: Request, svc: Svc, _: User) -> UploadOut:
    data = await request.body()
    return UploadOut(upload_id=await run_in_threadpool(svc.stacks.upload_source, data))


@router.post("/stacks", status_code=201, response_model=StackOut, tags=["stacks"])
def create_stack(body: StackCreate, svc: Svc, _: User) -> StackOut:
    try:
        tool = Tool(body.tool)
    except ValueError as exc:
        raise InvalidInput(f"unknown tool {body.tool!r}: use one of {[t.value for t in Tool]}") from exc
    stack = svc.stacks.create(
        name=body.name,
        pool_ref=body.pool,
        source=body.source.to_domain(),
        tool=tool,
        project_root=body.project_root,
        runner_image=body.runner_image,
        commands=body.commands,
        env=body.env_domain(),
        labels=tuple(body.labels),
        autodeploy=body.autodeploy,
        hooks={k: tuple(v) for k, v in body.hooks.items()},
        drift_schedule=body.drift_schedule,
    )
    return StackOut.of(stack)


@router.get("/stacks/{ref}/outputs", response_model=list[OutputIO], tags=["stacks"])
def stack_outputs(ref: str, svc: Svc, _: User) -> list[OutputIO]:
    stack = svc.stacks.get(ref)
    with svc.ctx.tx() as repo:
        rows = repo.outputs(stack.id)
    return [OutputIO(name=r.name, value=r.value, sensitive=r.sensitive, sealed=r.sealed) for r in rows]


@router.get("/stacks", response_model=list[StackOut], tags=["stacks"])
def list_stacks(svc: Svc, _: User) -> list[StackOut]:
    return [StackOut.of(s) for s in svc.stacks.list()]


@router.get("/stacks/{ref}", response_model=StackOut, tags=["stacks"])
def get_stack(ref: str, svc: Svc, _: User) -> StackOut:
    return StackOut.of(svc.stacks.get(ref))


@router.post("/stacks/{ref}/runs", status_code=201, response_model=RunOut, tags=["runs"])
def trigger_run(ref: str, body: RunTrigger, svc: Svc, _: User) -> RunOut:
    return RunOut.of(svc.runs.trigger(ref, body.kind, body.command))


@router.get("/runs", response_model=list[RunOut], tags=["runs"])
def list_runs(svc: Svc, _: User, stack: str | None = None, limit: int = 100) -> list[RunOut]:
    return [RunOut.of(r) for r in svc.runs.list(stack, min(max(limit, 1), 1000))]


@router.get("/runs/{run_id}", response_model=RunOut, tags=["runs"])
def get_run(run_id: str, svc: Svc, _: User) -> RunOut:
    run = svc.runs.get(run_id)
    return RunOut.of(run, svc.runs.waiting_for(run))


@router.post("/runs/{run_id}/confirm", response_model=RunOut, tags=["runs"])
def confirm_run(run_id: str, svc: Svc, _: User) -> RunOut:
    return RunOut.of(svc.runs.confirm(run_id))


@router.post("/runs/{run_id}/discard", response_model=RunOut, tags=["runs"])
def discard_run(run_id: str, svc: Svc, _: User) -> RunOut:
    return RunOut.of(svc.runs.discard(run_id))


@router.post("/runs/{run_id}/cancel", response_model=RunOut, tags=["runs"])
def cancel_run(run_id: str, svc: Svc, _: User) -> RunOut:
    return RunOut.of(svc.runs.cancel(run_id))


@router.get("/runs/{run_id}/logs", response_model=LogsOut, tags=["runs"])
async def run_logs(run_id: str, svc: Svc, _: User, after: int = 0, wait: float = 0) -> LogsOut:
    """Lines after sequence number ``after``; with ``wait`` > 0, held open until
    there is a line, the run changes state, or it ends (long poll, at most the
    server's limit)."""
    deadline = time.monotonic() + min(max(wait, 0.0), svc.long_poll)
    topic = run_topic(run_id)
    first_state = None
    while True:
        seen = svc.ctx.notifier.generation(topic)
        out = await run_in_threadpool(_read_logs, svc, run_id, after)
        first_state = first_state or out.state
        remaining = deadline - time.monotonic()
        if out.lines or out.done or out.state != first_state or remaining <= 0 or svc.ctx.notifier.closed:
            return out
        await svc.ctx.notifier.wait(topic, seen, remaining)


def _read_logs(svc: Svc, run_id: str, after: int) -> LogsOut:
    run = svc.runs.get(run_id)
    with svc.ctx.tx() as repo:
        lines = svc.logs.read(repo, run_id, after)
    # Sealing happens in the same transaction as the terminal transition, so
    # once a run is terminal every line it will ever have is readable.
    done = run.state.terminal and not lines
    return LogsOut(lines=[LogLineIO(seq=ln.seq, ts=ln.ts, msg=ln.msg) for ln in lines], state=run.state, done=done)
