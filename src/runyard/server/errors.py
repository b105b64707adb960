"""One error shape for the whole API: ``{"error": code, "message": text}``.

Every error the server answers with goes through here: runyard's own
(:class:`RunyardError`), the framework's (unknown path, wrong method, a body
that is not JSON or does not fit the schema) and an oversized body.
"""

from __future__ import annotations

import html
import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from runyard.core.errors import Locked, RunyardError, Standby, WorkerGone

_CODES = {400: "invalid", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 409: "conflict",
          413: "too_large", 422: "invalid", 503: "unavailable"}


def error_body(code: str, message: str, **extra: str) -> dict[str, str]:
    return {"error": code, "message": message, **extra}


def error_json(code: str, message: str, **extra: str) -> bytes:
    """:func:`error_body` encoded, for the answers sent below FastAPI
    (body limits, the standby gate, the HTTP protocol's refusals)."""
    return json.dumps(error_body(code, message, **extra)).encode()


def standby_headers(exc: Standby) -> dict[str, str]:
    return {"Retry-After": str(exc.retry_after), "X-Runyard-Primary": exc.primary}


def extra_of(exc: RunyardError) -> dict[str, str]:
    """The fields an error adds to the shape: a removed worker's reason, a standby's primary."""
    if isinstance(exc, WorkerGone):
        return {"reason": exc.reason}
    if isinstance(exc, Standby):
        return {"primary": exc.primary}
    return {}


def _page(status: int, message: str) -> HTMLResponse:
    body = f"<!doctype html><title>runyard</title><h1>{status}</h1><p>{html.escape(message)}</p>"
    return HTMLResponse(body + '<p><a href="/ui/pools">Back</a></p>', status_code=status)


def _answer(request: Request, status: int, body: dict[str, str]) -> Response:
    if request.url.path.startswith("/ui/"):
        return _page(status, body["message"])
    return JSONResponse(body, status_code=status)


def _describe_validation(errors: list[dict[str, Any]]) -> str:
    problems = []
    for err in errors:
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx") or {}
            detail = f" ({ctx['error']})" if ctx.get("error") else ""
            problems.append(f"the request body is not valid JSON{detail}")
            continue
        where = ".".join(str(p) for p in err["loc"][1:]) or "body"
        problems.append(f"{where}: {err['msg']}")
    return "; ".join(problems)


async def runyard_error(request: Request, exc: RunyardError) -> Response:
    if isinstance(exc, Locked):  # terraform reads the holder's lock document from the body
        return JSONResponse(exc.document, status_code=exc.http_status)
    response = _answer(request, exc.http_status, error_body(exc.code, exc.message, **extra_of(exc)))
    if isinstance(exc, Standby):
        response.headers.update(standby_headers(exc))
    elif getattr(exc, "retry_after", 0):
        response.headers["Retry-After"] = str(exc.retry_after)  # type: ignore[attr-defined]
    return response


async def bad_request(request: Request, exc: RequestValidationError) -> Response:
    return _answer(request, 422, error_body("invalid", _describe_validation(list(exc.errors()))))


async def http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 404:
        message = f"no such path {request.url.path}: the API is described at /docs"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    code = _CODES.get(exc.status_code, "invalid" if exc.status_code < 500 else "internal")
    response = _answer(request, exc.status_code, error_body(code, message))
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def answer_error(request: Request, exc: Exception) -> Response | None:
    """The answer to ``exc`` in the one shape; None for an exception that is
    not a refusal (a bug: the server's 500 handler answers it)."""
    if isinstance(exc, RunyardError):
        return await runyard_error(request, exc)
    if isinstance(exc, RequestValidationError):
        return await bad_request(request, exc)
    if isinstance(exc, HTTPException):
        return await http_error(request, exc)
    return None


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` in the one shape."""
    app.add_exception_handler(RunyardError, runyard_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, bad_request)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, http_error)  # type: ignore[arg-type]
