"""Routes for runs: trigger, follow, decide, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header

from runyard.core import limits as lim
from runyard.server.api.deps import Svc, User, Wait
from runyard.wire import API, LogsOut, RunOut, RunTrigger

router = APIRouter(prefix=API, tags=["runs"])
KEY_HELP = (f"the same key again gets the run it queued first: 1 to {lim.MAX_TRIGGER_KEY} letters, digits "
            "and . _ : + = / -")


@router.post("/stacks/{ref}/runs", status_code=201, response_model=RunOut)
async def trigger_run(
    ref: str, body: RunTrigger, svc: Svc, _: User,
    idempotency_key: Annotated[str | None, Header(description=KEY_HELP)] = None,
) -> RunOut:
    # A short call, as the workers' are: CI systems trigger runs by the score.
    # The service checks the key (the web UI's trigger sends one too).
    run = await svc.ctx.short_call(svc.runs.trigger, ref, body.kind, body.command, idempotency_key)
    return RunOut.model_validate(run)


@router.get("/runs", response_model=list[RunOut])
def list_runs(svc: Svc, _: User, stack: str | None = None, limit: int = 100) -> list[RunOut]:
    return [RunOut.model_validate(r) for r in svc.runs.list(stack, min(max(limit, 1), 1000))]


@router.get("/runs/{run_id}", response_model=RunOut)
def get_run(run_id: str, svc: Svc, _: User) -> RunOut:
    run = svc.runs.get(run_id)
    return RunOut.model_validate(run).model_copy(update={"waiting_for": svc.dispatch.waiting_for(run)})


@router.post("/runs/{run_id}/confirm", response_model=RunOut)
def confirm_run(run_id: str, svc: Svc, _: User) -> RunOut:
    return RunOut.model_validate(svc.runs.confirm(run_id))


@router.post("/runs/{run_id}/discard", response_model=RunOut)
def discard_run(run_id: str, svc: Svc, _: User) -> RunOut:
    return RunOut.model_validate(svc.runs.discard(run_id))


@router.post("/runs/{run_id}/cancel", response_model=RunOut)
def cancel_run(run_id: str, svc: Svc, _: User) -> RunOut:
    return RunOut.model_validate(svc.runs.cancel(run_id))


@router.get("/runs/{run_id}/logs", response_model=LogsOut)
async def run_logs(run_id: str, svc: Svc, _: User, after: int = 0, wait: Wait = 0) -> LogsOut:
    """Lines after sequence number ``after``; with ``wait`` > 0, held open until
    there is a line, the run changes state, or it ends (long poll, at most the
    server's limit)."""
    return LogsOut.model_validate(await svc.logs.follow(run_id, after, wait))
