"""Routes for launchers: registration, the work poll, reports, logs."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from runyard.core.errors import NotFound
from runyard.server.api.deps import CurrentWorker, Svc
from runyard.server.notifier import pool_topic
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
    StackOut,
)

router = APIRouter(prefix=API + "/worker", tags=["workers"])


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
def heartbeat(worker: CurrentWorker, svc: Svc) -> HeartbeatOut:
    reply = svc.workers.heartbeat(worker)
    return HeartbeatOut(stop_run=reply.stop_run, exit_reason=reply.exit_reason)


@router.post("/deregister", status_code=204)
def deregister(worker: CurrentWorker, svc: Svc, reason: str = "launcher exited") -> Response:
    svc.workers.deregister(worker, reason)
    return Response(status_code=204)


@router.post("/poll", response_model=PollOut)
async def poll(worker: CurrentWorker, svc: Svc, wait: float = 25) -> PollOut:
    """Hold the request until a run is assigned to this worker or ``wait`` ends.

    The scheduler runs the moment a run is queued, so a run starts as soon as
    an idle worker holds a poll: no polling interval sits in between.
    """
    deadline = time.monotonic() + min(max(wait, 0.0), svc.long_poll)
    topic = pool_topic(worker.pool_id)
    await run_in_threadpool(svc.workers.touch, worker)
    while True:
        seen = svc.ctx.notifier.generation(topic)
        assignment = await run_in_threadpool(svc.runs.claim, worker.id)
        if assignment is not None:
            return PollOut(
                assignment=AssignmentOut(
                    run=RunOut.of(assignment.run),
                    stack=StackOut.of(assignment.stack, reveal_secrets=True),
                    lease=assignment.lease,
                    run_token=assignment.run_token,
                    log_seq=assignment.log_seq,
                )
            )
        current = await run_in_threadpool(svc.workers.refresh, worker.id)
        if current.exit_requested:
            return PollOut(exit_reason="cycled")
        remaining = deadline - time.monotonic()
        if remaining <= 0 or svc.ctx.notifier.closed:
            return PollOut()  # the launcher polls again (another server, or this one restarted)
        await svc.ctx.notifier.wait(topic, seen, remaining)


@router.post("/runs/{run_id}/transition", response_model=RunOut)
def report(run_id: str, body: ReportIn, worker: CurrentWorker, svc: Svc) -> RunOut:
    return RunOut.of(svc.runs.report(worker, run_id, body.lease, body.state, body.note, body.changes))


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
    svc.runs.put_outputs(worker, run_id, body.lease, [o.model_dump() for o in body.outputs])
    return Response(status_code=204)


@router.post("/runs/{run_id}/logs", response_model=LogsAck)
def append_logs(run_id: str, body: LogsIn, worker: CurrentWorker, svc: Svc) -> LogsAck:
    stop = svc.runs.append_logs(worker, run_id, body.lease, [ln.to_domain() for ln in body.lines])
    return LogsAck(stop_run=stop)


@router.get("/sources/{upload_id}")
def source_archive(upload_id: str, worker: CurrentWorker, svc: Svc) -> Response:
    with svc.ctx.tx() as repo:
        allowed = any(s.source.upload_id == upload_id for s in repo.stacks(worker.pool_id))
    if not allowed:
        raise NotFound(f"no source {upload_id} for this worker's pool")
    return Response(svc.stacks.source_archive(upload_id), media_type="application/gzip")
