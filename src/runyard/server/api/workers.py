"""Routes for launchers: registration, the work poll, reports, logs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from runyard.core.models import Worker
from runyard.server.api.deps import CurrentWorker, Svc, Wait, body_schema, parse_body
from runyard.server.services.registry import Services
from runyard.wire import (
    API,
    AssignmentOut,
    ChallengeIn,
    ChallengeOut,
    HeartbeatOut,
    LogsAck,
    LogsIn,
    OutputsIn,
    PollOut,
    RegisterIn,
    RegisterOut,
    ReportIn,
    RunOut,
)

router = APIRouter(prefix=API + "/worker", tags=["workers"])
T = TypeVar("T")


async def _closed(request: Request) -> None:
    """Returns when the client has closed the connection."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_closed(request: Request, work: Coroutine[Any, Any, T]) -> T | None:
    """``work``'s result, or None (and ``work`` cancelled) once the client
    closes the connection: a held poll counts as its worker's heartbeat, so
    one whose launcher died must end with its connection."""
    task, closed = asyncio.ensure_future(work), asyncio.ensure_future(_closed(request))
    try:
        done, _ = await asyncio.wait((task, closed), return_when=asyncio.FIRST_COMPLETED)
    finally:
        closed.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return task.result() if task in done else None


@router.post("/challenge", response_model=ChallengeOut)
def challenge(body: ChallengeIn, svc: Svc) -> ChallengeOut:
    return ChallengeOut(challenge=svc.workers.challenge(body.pool_id))


@router.post("/register", status_code=201, response_model=RegisterOut)
def register(body: RegisterIn, svc: Svc) -> RegisterOut:
    worker, token = svc.workers.register(
        body.pool_id, body.certificate, body.challenge, body.signature, body.metadata, body.version
    )
    return RegisterOut(worker_id=worker.id, token=token)


@router.post("/heartbeat", response_model=HeartbeatOut)
async def heartbeat(worker: CurrentWorker, svc: Svc) -> Response:
    """Every few seconds from every worker: answered as JSON directly (no
    response validation on the hottest route; the model documents it)."""
    answer = HeartbeatOut.model_validate(await svc.workers.heartbeat(worker))
    return Response(answer.model_dump_json(), media_type="application/json")


@router.post("/drain", status_code=204)
def drain_self(worker: CurrentWorker, svc: Svc) -> Response:
    """The worker takes no new run (its instance is going away): autoscalers
    stop counting it as capacity."""
    svc.workers.drain(worker.id, True)
    return Response(status_code=204)


@router.post("/deregister", status_code=204)
def deregister(worker: CurrentWorker, svc: Svc, reason: str = "launcher exited") -> Response:
    svc.workers.deregister(worker, reason)
    return Response(status_code=204)


@router.post("/poll", response_model=PollOut)
async def poll(request: Request, worker: CurrentWorker, svc: Svc, wait: Wait = 25) -> PollOut:
    """Held until a run is assigned to this worker, it is told to exit, or
    ``wait`` ends; while held, it is the worker's heartbeat."""
    answer = await unless_closed(request, svc.dispatch.poll(worker, wait))
    return PollOut() if answer is None else PollOut.model_validate(answer)


def _report(run_id: str, body: ReportIn, worker: Worker, svc: Services) -> RunOut:
    return RunOut.model_validate(
        svc.runs.report(worker, run_id, body.lease, body.state, body.note, body.changes, via=body.via))


@router.post("/runs/{run_id}/transition", response_model=RunOut, openapi_extra=body_schema(ReportIn))
async def report(run_id: str, request: Request, worker: CurrentWorker, svc: Svc) -> RunOut:
    """A phase the worker's run reached (ReportIn): one path for FastAPI and the worker lane."""
    body = parse_body(ReportIn, await request.body())
    return await svc.ctx.short_call(_report, run_id, body, worker, svc)


@router.put("/runs/{run_id}/workspace", status_code=204)
async def put_workspace(run_id: str, request: Request, worker: CurrentWorker, svc: Svc, lease: int) -> Response:
    """The run's workspace after plan, sealed by the worker to the pool's key."""
    sealed = await request.body()
    await run_in_threadpool(svc.runs.put_workspace, worker, run_id, lease, sealed)
    return Response(status_code=204)


@router.get("/runs/{run_id}/workspace")
def get_workspace(run_id: str, worker: CurrentWorker, svc: Svc, lease: int) -> Response:
    return Response(svc.runs.get_workspace(worker, run_id, lease), media_type="application/octet-stream")


@router.post("/runs/{run_id}/outputs", status_code=204)
def put_outputs(run_id: str, body: OutputsIn, worker: CurrentWorker, svc: Svc) -> Response:
    svc.runs.put_outputs(worker, run_id, body.lease, [o.to_domain() for o in body.outputs])
    return Response(status_code=204)


@router.post("/runs/{run_id}/logs", response_model=LogsAck, openapi_extra=body_schema(LogsIn))
async def append_logs(run_id: str, request: Request, worker: CurrentWorker, svc: Svc) -> LogsAck:
    """A batch of log lines (LogsIn), parsed and validated in one pass: it may
    hold thousands. With ``end``, the run's last batch: its lines are stored
    and the run moved in one transaction (one request where there were two);
    with ``take_next`` too, the worker's next run comes with the answer (one
    poll less a run while runs wait)."""
    body = parse_body(LogsIn, await request.body())
    end = body.end.to_domain() if body.end is not None else None
    stop, assignment = await svc.ctx.short_call(svc.dispatch.append_logs, worker, run_id, body.lease,
                                                 body.to_domain(), end, body.take_next)
    return LogsAck(stop_run=stop,
                   assignment=None if assignment is None else AssignmentOut.model_validate(assignment))


@router.get("/sources/{upload_id}")
def source_archive(upload_id: str, worker: CurrentWorker, svc: Svc) -> Response:
    return Response(svc.stacks.source_for_worker(worker, upload_id), media_type="application/gzip")
