"""A standby answers health checks and the cluster status only: every other
request gets 503, a Retry-After and the primary's address, so clients (and
launchers, which move to the next endpoint of their token) go there. A web
page gets a page that says so and links to the same page on the primary."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from runyard.core.errors import Standby
from runyard.server import errors
from runyard.server.leader import Leader
from runyard.server.web import pages

# What a standby still answers: its health, its role, and the commands that
# change its role (dr promote / demote).
ALWAYS = ("/healthz", "/readyz", "/metrics", "/api/v1/cluster")


class StandbyGate:
    def __init__(self, app: ASGIApp, scheduler: Leader, retry_after: int) -> None:
        self.app = app
        self.scheduler = scheduler
        self.retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.scheduler.serving or scope["path"].startswith(ALWAYS) \
                or not scope["path"].startswith(("/api/", "/ui")):
            await self.app(scope, receive, send)
            return
        primary = self.scheduler.primary_address()
        if scope["path"].startswith("/ui"):
            await pages.standby(Request(scope), primary, self.retry_after)(scope, receive, send)
            return
        refusal = Standby(primary, self.retry_after)
        body = errors.error_json(refusal.code, refusal.message, **errors.extra_of(refusal))
        headers = [(k.lower().encode(), v.encode()) for k, v in errors.standby_headers(refusal).items()]
        await send({"type": "http.response.start", "status": refusal.http_status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
        await send({"type": "http.response.body", "body": body})
