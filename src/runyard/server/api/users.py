"""Routes for people and tools holding an API key."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from runyard.core.errors import InvalidInput
from runyard.core.models import Tool
from runyard.server.api.deps import Svc, User
from runyard.server.notifier import run_topic
from runyard.wire import (
    API,
    LogLineIO,
    LogsOut,
    OutputIO,
    PoolCreate,
    PoolCreated,
    PoolOut,
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


@router.get("/pools", response_model=list[PoolOut], tags=["pools"])
def list_pools(svc: Svc, _: User) -> list[PoolOut]:
    return [PoolOut.of(p) for p in svc.pools.list()]


@router.get("/pools/{ref}", response_model=PoolOut, tags=["pools"])
def get_pool(ref: str, svc: Svc, _: User) -> PoolOut:
    return PoolOut.of(svc.pools.get(ref))


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
    there is a line or the run ends (long poll, at most the server's limit)."""
    deadline = time.monotonic() + min(max(wait, 0.0), svc.long_poll)
    topic = run_topic(run_id)
    while True:
        seen = svc.ctx.notifier.generation(topic)
        out = await run_in_threadpool(_read_logs, svc, run_id, after)
        remaining = deadline - time.monotonic()
        if out.lines or out.done or remaining <= 0:
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
