"""Refuses request bodies over their limit before they are read whole.

A pure ASGI middleware: a ``Content-Length`` over the limit is answered 413
at once; a body without one (chunked) is counted as it arrives and cut off
at the limit.
"""

from __future__ import annotations

import re

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runyard.core import limits
from runyard.core.limits import human
from runyard.server.errors import error_json

_BY_PATH: tuple[tuple[str, re.Pattern[str], int], ...] = (
    ("a source upload", re.compile(r"^/api/v1/sources$"), limits.MAX_SOURCE_UPLOAD),
    ("a workspace", re.compile(r"^/api/v1/worker/runs/[^/]+/workspace$"), limits.MAX_WORKSPACE),
    ("a log batch", re.compile(r"^/api/v1/worker/runs/[^/]+/logs$"), limits.MAX_LOG_BODY),
    ("a state version", re.compile(r"^/api/v1/stacks/[^/]+/state$"), limits.MAX_STATE),
)


def limit_for(path: str) -> tuple[str, int]:
    """What a body sent to ``path`` is, and its limit in bytes."""
    for what, pattern, size in _BY_PATH:
        if pattern.match(path):
            return what, size
    return "a request body", limits.MAX_JSON_BODY


def _message(what: str, size: int) -> str:
    return f"{what} may be at most {human(size)}: this one is larger and was refused"


class BodyLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        what, limit = limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(send, _message(what, limit))
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, _message(what, limit))
            return message

        await self.app(scope, counted, send)


async def _refuse(send: Send, message: str) -> None:
    body = error_json("too_large", message)
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
