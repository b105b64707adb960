"""The Terraform HTTP backend of every stack, and its history for people.

Terraform's ``backend "http"`` talks to ``/api/v1/stacks/{stack}/state``
(GET, POST) and ``.../state/lock`` (LOCK, UNLOCK), with HTTP basic auth whose
password is an API key, or the token of a run that holds the stack.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from runyard.core.errors import InvalidInput
from runyard.server.api.deps import Svc, credential
from runyard.wire import API, StateVersionOut

router = APIRouter(prefix=API + "/stacks/{ref}/state", tags=["state"])


def _authorize(request: Request, svc: Svc, ref: str) -> str | None:
    return svc.auth.check_state_access(credential(request), ref)


@router.get("", summary="Current state (204 when there is none)")
def get_state(ref: str, request: Request, svc: Svc) -> Response:
    _authorize(request, svc, ref)
    body = svc.state.current(ref)
    if body is None:
        return Response(status_code=204)
    return Response(body, media_type="application/json")


@router.post("", summary="Store a new state version")
async def post_state(ref: str, request: Request, svc: Svc, ID: str | None = None, force: bool = False) -> Response:
    run_id = await run_in_threadpool(_authorize, request, svc, ref)
    body = await request.body()
    await run_in_threadpool(svc.state.push, ref, body, ID, run_id, force)
    return Response(status_code=200)


async def _lock_document(request: Request) -> dict[str, Any]:
    try:
        doc = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise InvalidInput("the lock body must be terraform's JSON lock document") from exc
    if not isinstance(doc, dict):
        raise InvalidInput("the lock body must be a JSON object")
    return doc


@router.api_route("/lock", methods=["LOCK"], summary="Take the state lock (423 with the holder's lock if held)")
async def lock_state(ref: str, request: Request, svc: Svc) -> Response:
    await run_in_threadpool(_authorize, request, svc, ref)
    await run_in_threadpool(svc.state.lock, ref, await _lock_document(request))
    return Response(status_code=200)


@router.api_route("/lock", methods=["UNLOCK"], summary="Release the state lock")
async def unlock_state(ref: str, request: Request, svc: Svc, force: bool = False) -> Response:
    await run_in_threadpool(_authorize, request, svc, ref)
    doc = await _lock_document(request)
    await run_in_threadpool(svc.state.unlock, ref, str(doc.get("ID", "")), force)
    return Response(status_code=200)


@router.get("/lock", summary="Who holds the state lock (204: nobody)")
def show_lock(ref: str, request: Request, svc: Svc) -> Response:
    _authorize(request, svc, ref)
    info = svc.state.lock_info(ref)
    return Response(status_code=204) if info is None else Response(json.dumps(info), media_type="application/json")


@router.get("/versions", response_model=list[StateVersionOut], summary="Every stored state version")
def state_versions(ref: str, request: Request, svc: Svc) -> list[StateVersionOut]:
    _authorize(request, svc, ref)
    return [StateVersionOut.model_validate(v) for v in svc.state.versions(ref)]


@router.get("/versions/{version}", summary="One state version")
def state_version(ref: str, version: int, request: Request, svc: Svc) -> Response:
    _authorize(request, svc, ref)
    return Response(svc.state.pull(ref, version), media_type="application/json")
