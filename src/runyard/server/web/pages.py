"""Pages for operators: pools, workers, queue, stacks, runs, with actions.

Everything user-provided goes through Jinja2's autoescaping; descriptions are
markdown rendered with raw HTML disabled. Live pages re-fetch their main
block (``?partial=1``); a run's log streams as server-sent events.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from runyard.core.errors import RunyardError
from runyard.core.models import Run
from runyard.core.states import RunKind, RunState
from runyard.crypto import hash_secret
from runyard.server.api.deps import Svc
from runyard.server.services.registry import Services
from runyard.server.web import session as sessions

router = APIRouter(prefix="/ui", include_in_schema=False)
_markdown = MarkdownIt("commonmark", {"html": False})
_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)
_templates.filters["markdown"] = lambda text: Markup(_markdown.render(text or ""))
_templates.filters["when"] = lambda d: d.strftime("%Y-%m-%d %H:%M:%S") if d else "-"
_templates.globals["new_key"] = lambda: secrets.token_hex(16)  # a trigger form's Idempotency-Key


class NeedLogin(Exception):
    """Raised by pages without a valid session: the app redirects to the sign-in page."""


def _secret(svc: Services) -> bytes:
    return svc.auth.session_secret()


def current(request: Request, svc: Services) -> sessions.Session:
    session = sessions.decode(_secret(svc), request.cookies.get(sessions.COOKIE), time.time())
    if session is None or not svc.auth.session_valid(session.key_hash, session.id):
        raise NeedLogin()
    return session


def render(request: Request, svc: Services, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    session = sessions.decode(_secret(svc), request.cookies.get(sessions.COOKIE), time.time())
    flash = "" if request.query_params.get("partial") == "1" else \
        sessions.decode_flash(_secret(svc), request.cookies.get(sessions.FLASH_COOKIE))
    return _draw(request, name, session.csrf if session else "", status, flash=flash, **context)


def _draw(request: Request, name: str, csrf: str, status: int, headers: dict[str, str] | None = None,
          flash: str = "", **context: Any) -> HTMLResponse:
    partial = request.query_params.get("partial") == "1"
    html = _templates.get_template(name).render(request=request, csrf=csrf, partial=partial, flash=flash,
                                                **context)
    response = HTMLResponse(html, status_code=status, headers=headers)
    if flash:
        response.delete_cookie(sessions.FLASH_COOKIE, path="/ui")
    return response


def standby(request: Request, primary: str, retry_after: int) -> HTMLResponse:
    """What a person's browser gets from a standby (no session: it serves
    none): who serves the page instead."""
    page = ""
    if primary.startswith(("http://", "https://")):
        query = request.url.query
        page = primary.rstrip("/") + request.url.path + (f"?{query}" if query else "")
    return _draw(request, "standby.html", "", 503, {"Retry-After": str(retry_after), "X-Runyard-Primary": primary},
                 primary=primary, primary_page=page)


def _check_csrf(session: sessions.Session, token: str) -> None:
    if token != session.csrf:
        raise NeedLogin()


def back(request: Request, svc: Services, url: str, message: str = "") -> RedirectResponse:
    """To ``url``, which then says ``message`` once. The message goes in a
    cookie this server signs, not in the URL: a link cannot make a page say
    anything."""
    response = RedirectResponse(url, status_code=303)
    if message:
        response.set_cookie(sessions.FLASH_COOKIE, sessions.encode_flash(_secret(svc), message), max_age=60,
                            path="/ui", httponly=True, samesite="strict", secure=_https(request))
    return response


def _https(request: Request) -> bool:
    """Whether the browser reached us over HTTPS (directly, or through a proxy
    uvicorn trusts: FORWARDED_ALLOW_IPS, X-Forwarded-Proto)."""
    return request.url.scheme == "https"


# sign-in ---------------------------------------------------------------------


@router.get("/login")
def login_page(request: Request, svc: Svc) -> HTMLResponse:
    return render(request, svc, "login.html", error="")


@router.post("/login")
def login(request: Request, svc: Svc, api_key: str = Form("")) -> Response:
    if not svc.auth.is_api_key(api_key):
        return render(request, svc, "login.html", status=401,
                      error="That API key is not valid. Use the admin key the server printed at first start "
                            "(DATA_DIR/admin-api-key).")
    cookie, _ = sessions.encode(_secret(svc), hash_secret(api_key), time.time())
    response = RedirectResponse("/ui/pools", status_code=303)
    response.set_cookie(sessions.COOKIE, cookie, httponly=True, samesite="strict", max_age=sessions.LIFETIME,
                        secure=_https(request))
    return response


@router.post("/logout")
def logout(request: Request, svc: Svc, csrf: str = Form("")) -> Response:
    session = current(request, svc)
    _check_csrf(session, csrf)
    svc.auth.revoke_session(session.id, session.expires)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(sessions.COOKIE, secure=_https(request), httponly=True, samesite="strict")
    return response


@router.get("")
def home() -> RedirectResponse:
    return RedirectResponse("/ui/pools", status_code=303)


# pools -----------------------------------------------------------------------


@router.get("/pools")
def pools_page(request: Request, svc: Svc) -> HTMLResponse:
    current(request, svc)
    return render(request, svc, "pools.html", rows=svc.pools.summaries())


@router.get("/pools/{ref}")
def pool_page(ref: str, request: Request, svc: Svc, tab: str = "workers") -> HTMLResponse:
    current(request, svc)
    pool = svc.pools.get(ref)
    summary = svc.pools.stats(pool)
    workers = svc.workers.list(pool.id)
    stacks = svc.stacks.list(pool.id)
    names = {s.id: s.name for s in stacks}
    queue = [(r, names.get(r.stack_id, r.stack_id), why) for r, why in svc.dispatch.queue(pool.id)]
    return render(request, svc, "pool.html", pool=pool, summary=summary, workers=workers, queue=queue,
                  stacks=stacks, tab=tab if tab in ("workers", "queue", "used-by", "settings") else "workers")


@router.post("/pools/{ref}/settings")
def pool_settings(ref: str, request: Request, svc: Svc, csrf: str = Form(""), description: str = Form(""),
                  labels: str = Form(""), drift_detection_limit: int = Form(0)) -> Response:
    _check_csrf(current(request, svc), csrf)
    names = tuple(label.strip() for label in labels.split(",") if label.strip())
    pool = svc.pools.update(ref, description, names, max(drift_detection_limit, 0))
    return back(request, svc, f"/ui/pools/{pool.name}?tab=settings", "Settings saved")


@router.get("/pools/{ref}/cycle")
def cycle_confirm(ref: str, request: Request, svc: Svc) -> HTMLResponse:
    current(request, svc)
    return render(request, svc, "confirm_cycle.html", pool=svc.pools.get(ref))


@router.post("/pools/{ref}/cycle")
def cycle(ref: str, request: Request, svc: Svc, csrf: str = Form("")) -> Response:
    _check_csrf(current(request, svc), csrf)
    count = svc.pools.cycle(ref)
    return back(request, svc, f"/ui/pools/{ref}", f"Told {count} worker(s) to exit")


@router.get("/pools/{ref}/reset")
def reset_confirm(ref: str, request: Request, svc: Svc) -> HTMLResponse:
    current(request, svc)
    return render(request, svc, "confirm_reset.html", pool=svc.pools.get(ref), error="", token="")


@router.post("/pools/{ref}/reset")
def reset(ref: str, request: Request, svc: Svc, csrf: str = Form(""), csr: str = Form("")) -> HTMLResponse:
    _check_csrf(current(request, svc), csrf)
    pool = svc.pools.get(ref)
    try:
        token, removed = svc.workers.reset_pool(ref, csr)
    except RunyardError as exc:
        return render(request, svc, "confirm_reset.html", status=exc.http_status, pool=pool, error=exc.message,
                      token="")
    return render(request, svc, "confirm_reset.html", pool=pool, error="", token=token, removed=removed)


@router.post("/workers/{worker_id}/{action}")
def drain(worker_id: str, action: str, request: Request, svc: Svc, csrf: str = Form("")) -> Response:
    _check_csrf(current(request, svc), csrf)
    worker = svc.workers.drain(worker_id, action == "drain")
    pool = svc.pools.get(worker.pool_id)
    return back(request, svc, f"/ui/pools/{pool.name}", f"Worker {worker.id} is {worker.status.value}")


# stacks and runs -------------------------------------------------------------


@router.get("/stacks")
def stacks_page(request: Request, svc: Svc) -> HTMLResponse:
    current(request, svc)
    pools = {p.id: p.name for p in svc.pools.list()}
    return render(request, svc, "stacks.html", stacks=svc.stacks.list(), pools=pools)


@router.get("/stacks/{ref}")
def stack_page(ref: str, request: Request, svc: Svc) -> HTMLResponse:
    current(request, svc)
    stack = svc.stacks.get(ref)
    runs = svc.runs.list(stack.id, 50)
    pool = svc.pools.get(stack.pool_id)
    return render(request, svc, "stack.html", stack=stack, runs=runs, pool=pool)


@router.post("/stacks/{ref}/trigger")
def trigger(ref: str, request: Request, svc: Svc, csrf: str = Form(""), kind: str = Form("TRACKED"),
            key: str | None = Form(None)) -> Response:
    _check_csrf(current(request, svc), csrf)
    # Each form carries a key of its own: a double click queues one run.
    run = svc.runs.trigger(ref, RunKind.PROPOSED if kind == "PROPOSED" else RunKind.TRACKED, key=key)
    return back(request, svc, f"/ui/runs/{run.id}")


@router.get("/runs/{run_id}")
def run_page(run_id: str, request: Request, svc: Svc) -> HTMLResponse:
    current(request, svc)
    run = svc.runs.get(run_id)
    stack = svc.stacks.get(run.stack_id)
    return render(request, svc, "run.html", run=run, stack=stack, waiting_for=svc.dispatch.waiting_for(run),
                  actions=_actions(run))


def _actions(run: Run) -> list[str]:
    if run.state == RunState.UNCONFIRMED:
        return ["confirm", "discard"]
    if not run.state.terminal and run.state != RunState.CONFIRMED:
        return ["cancel"]
    return []


@router.post("/runs/{run_id}/{action}")
def run_action(run_id: str, action: str, request: Request, svc: Svc, csrf: str = Form("")) -> Response:
    _check_csrf(current(request, svc), csrf)
    {"confirm": svc.runs.confirm, "discard": svc.runs.discard, "cancel": svc.runs.cancel}[action](run_id)
    return back(request, svc, f"/ui/runs/{run_id}")


@router.get("/runs/{run_id}/events")
async def run_events(run_id: str, request: Request, svc: Svc, after: int = 0) -> StreamingResponse:
    """The run's log lines and state changes as server-sent events, until it ends."""
    await run_in_threadpool(current, request, svc)

    async def stream() -> AsyncIterator[str]:
        seq, state = after, None
        page = await run_in_threadpool(svc.logs.page, run_id, seq)  # the first look is at once
        while not await request.is_disconnected() and not svc.closing:
            if state is not None:
                page = await svc.logs.follow(run_id, seq, 15, state)
            for line in page.lines:
                seq = line.seq
                yield f"event: line\ndata: {json.dumps({'seq': line.seq, 'msg': line.msg})}\n\n"
            if page.state != state:
                state = page.state
                yield f"event: state\ndata: {json.dumps({'state': state.value, 'reason': page.reason})}\n\n"
            if page.done:
                yield "event: end\ndata: {}\n\n"
                return
            await asyncio.sleep(0)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
