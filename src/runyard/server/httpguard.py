"""The HTTP/1.1 protocol the server speaks: uvicorn's httptools protocol with
the bounds it lacks.

- The request line and headers together may be at most
  ``limits.MAX_REQUEST_HEAD`` bytes (llhttp itself takes headers of any
  size): past it, 431.
- They must have arrived ``limits.REQUEST_HEAD_TIMEOUT`` seconds after the
  request's first byte, or the connection is answered 408 and closed (a
  client trickling its headers a byte at a time holds nothing for long;
  uvicorn's keep-alive timer restarts at every byte).
- What the parser refuses is answered in the API's one error shape, not as
  plain text.
"""

from __future__ import annotations

import asyncio

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from runyard.core import limits
from runyard.core.limits import human
from runyard.server.errors import error_json


class _HeadTooLarge(Exception):
    pass


def refusal(status: int, reason: str, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 response in the API's error shape; the connection closes after it."""
    body = error_json(code, message)
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a bounded request head read in bounded time."""

    max_head = limits.MAX_REQUEST_HEAD
    head_timeout = limits.REQUEST_HEAD_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
            # The first byte of a request: its head must be whole in time.
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge) or self._head_bytes > self.max_head:
                self._refuse(431, "Request Header Fields Too Large", "too_large",
                             f"the request line and headers may be at most {human(self.max_head)} together")
            else:
                self._refuse(400, "Bad Request", "invalid", "the request is not valid HTTP/1.1")

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_head:
            raise _HeadTooLarge()

    def on_message_begin(self) -> None:
        self._head_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "Bad Request", "invalid", "the request is not valid HTTP/1.1")

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self._refuse(408, "Request Timeout", "timeout",
                         f"the request line and headers did not arrive within {self.head_timeout:g} s")

    def _refuse(self, status: int, reason: str, code: str, message: str) -> None:
        self._cancel_head_timer()
        if not self.transport.is_closing():
            self.transport.write(refusal(status, reason, code, message))
            self.transport.close()
