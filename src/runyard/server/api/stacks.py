"""Routes for stacks and their sources and outputs."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from runyard.server.api.deps import Svc, User
from runyard.wire import API, OutputIO, StackCreate, StackOut, UploadOut

router = APIRouter(prefix=API, tags=["stacks"])


@router.post("/sources", status_code=201, response_model=UploadOut)
async def upload_source(request: Request, svc: Svc, _: User) -> UploadOut:
    """A gzip tar of a stack's source (what `runyard stack create --source DIR` sends)."""
    data = await request.body()
    return UploadOut(upload_id=await run_in_threadpool(svc.stacks.upload_source, data))


@router.post("/stacks", status_code=201, response_model=StackOut)
def create_stack(body: StackCreate, svc: Svc, _: User) -> StackOut:
    stack = svc.stacks.create(
        name=body.name,
        pool_ref=body.pool,
        source=body.source.to_domain(),
        tool=body.tool,
        project_root=body.project_root,
        runner_image=body.runner_image,
        commands=body.commands,
        env=body.env_domain(),
        labels=tuple(body.labels),
        autodeploy=body.autodeploy,
        hooks={k: tuple(v) for k, v in body.hooks.items()},
        drift_schedule=body.drift_schedule,
    )
    return StackOut.public(stack)


@router.get("/stacks", response_model=list[StackOut])
def list_stacks(svc: Svc, _: User) -> list[StackOut]:
    return [StackOut.public(s) for s in svc.stacks.list()]


@router.get("/stacks/{ref}", response_model=StackOut)
def get_stack(ref: str, svc: Svc, _: User) -> StackOut:
    return StackOut.public(svc.stacks.get(ref))


@router.get("/stacks/{ref}/outputs", response_model=list[OutputIO])
def stack_outputs(ref: str, svc: Svc, _: User) -> list[OutputIO]:
    return [OutputIO.model_validate(o) for o in svc.runs.outputs(svc.stacks.get(ref).id)]
