"""The launchers' hottest routes, served straight off ASGI.

A run costs the server its poll, its reports and its last log batch, and a
thousand idle workers send polls and heartbeats all day. Through FastAPI,
each of these paid for matching the path against every route, solving the
route's dependencies and validating the answer against its response model
again: up to half of what such a request cost the server
(benchmarks/dispatch.py). Here
they are matched in one step and handed to the same route functions
(``api/workers.py``: one implementation; FastAPI still routes everything
else and describes these in the OpenAPI document), with the same bearer
check, and errors answered in the one shape (``errors.answer_error``). The
middleware outside this one (the standby gate, body limits, the 500
handler) applies as before.

A request this lane cannot take as is (another method, a ``wait`` that is
not a number of seconds) goes on to FastAPI, which answers it as it always
did; the lane reads ``wait`` through FastAPI's own declaration (``deps.Wait``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from runyard.core.models import Worker
from runyard.server import errors
from runyard.server.api import workers
from runyard.server.api.deps import WAIT, bearer
from runyard.server.services.registry import Services
from runyard.wire import API

_PREFIX = API + "/worker/"
_RUN_ROUTE = re.compile(rf"^{re.escape(_PREFIX)}runs/([^/]+)/(transition|logs)$")

Handler = Callable[[Request, Worker, Services], Awaitable[Response]]


def _json(model: BaseModel) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


def _handler(scope: Scope) -> Handler | None:
    """The lane's handler for this request; None: FastAPI takes it."""
    if scope["method"] != "POST" or not scope["path"].startswith(_PREFIX):
        return None
    path = scope["path"]
    if path == _PREFIX + "heartbeat":
        return lambda request, worker, svc: workers.heartbeat(worker, svc)
    if path == _PREFIX + "poll":
        try:
            wait = WAIT.validate_python(dict(parse_qsl(scope["query_string"].decode("latin-1"))).get("wait", 25))
        except ValidationError:
            return None  # FastAPI answers it, from the same declaration

        async def poll(request: Request, worker: Worker, svc: Services) -> Response:
            return _json(await workers.poll(request, worker, svc, wait))
        return poll
    matched = _RUN_ROUTE.match(path)
    if matched is None:
        return None
    run_id = matched.group(1)
    if matched.group(2) == "logs":
        async def logs(request: Request, worker: Worker, svc: Services) -> Response:
            return _json(await workers.append_logs(run_id, request, worker, svc))
        return logs

    async def report(request: Request, worker: Worker, svc: Services) -> Response:
        return _json(await workers.report(run_id, request, worker, svc))
    return report


class WorkerLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = _handler(scope) if scope["type"] == "http" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        svc: Services = scope["app"].state.services
        try:
            response = await handler(request, await svc.auth.worker(bearer(request)), svc)
        except Exception as exc:
            answer = await errors.answer_error(request, exc)
            if answer is None:
                raise  # a bug: the server's 500 handler answers it
            response = answer
        await response(scope, receive, send)
