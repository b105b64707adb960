"""HTTP/1.1 for the client: kept-alive connections of the standard library.

A launcher's calls are small (a poll, a report, a batch of log lines) and
many, so what one costs is mostly the HTTP stack's own work, and
``http.client`` on a connection kept alive does the least of it
(benchmarks/dispatch.py). httpx is still used, and only then imported,
for an endpoint that a proxy applies to (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` less
``NO_PROXY``): the standard library's connections do not speak to proxies.

Both answer with a :class:`Reply`; anything that keeps the request from
getting its answer (refused, reset, timed out, a broken TLS handshake) is a
:class:`TransportError`.
"""

from __future__ import annotations

import errno
import http
import http.client
import json
import re
import select
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import httpx

# Idle connections kept per server: a launcher uses at most a handful at once
# (its poll, heartbeats, a run's reports and logs).
IDLE_KEPT = 8
# An idle connection is used again only this long: the server closes one idle
# for longer (runyard's own after 75 s; a load balancer in front often after
# 60 s), and a request sent as it closes is lost with it.
REUSE_IDLE_UP_TO = 50.0
# A server that does not take the connection in this long is not there (a
# host that is gone drops the handshake: only the timeout tells).
CONNECT_TIMEOUT = 5.0
# A peer that acknowledges nothing for this long is gone, even while a
# request waits on a long answer (a held poll): TCP keepalive probes the
# connection after KEEPALIVE_IDLE s of quiet, every KEEPALIVE_INTERVAL s, and
# the kernel gives up after SILENT_PEER_TIMEOUT s without an acknowledgement.
KEEPALIVE_IDLE = 5
KEEPALIVE_INTERVAL = 2
SILENT_PEER_TIMEOUT = 11
# A body up to this size goes out in one write with the request's head; a
# larger one (a source archive, a workspace) after it, not copied.
JOIN_BODY_UP_TO = 64 * 1024


class TransportError(Exception):
    """The request got no answer: the server is unreachable, or the connection
    failed. ``silent`` when the server's host said nothing at all, neither
    taking the connection nor acknowledging what was sent (a host that is
    gone): trying it again costs the same wait. A server that is only slow to
    answer is not silent."""

    def __init__(self, message: str, *, silent: bool = False) -> None:
        super().__init__(message)
        self.silent = silent


class _Unanswered(TransportError):
    """The connection was closed or reset before any of the answer came."""


@dataclass(frozen=True)
class Reply:
    """A server's answer, read whole."""

    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    @property
    def reason_phrase(self) -> str:
        try:
            return http.HTTPStatus(self.status_code).phrase
        except ValueError:
            return ""

    def json(self) -> Any:
        return json.loads(self.content)


def proxy_for(url: str, environ: Mapping[str, str]) -> str | None:
    """The proxy the environment sets for ``url`` (``HTTPS_PROXY`` or
    ``HTTP_PROXY`` by its scheme, else ``ALL_PROXY``; either case), or None:
    none is set, or ``NO_PROXY`` names the host."""
    parts = urlsplit(url)
    lowered = {k.lower(): v for k, v in environ.items() if v}
    proxy = lowered.get(f"{parts.scheme}_proxy") or lowered.get("all_proxy")
    if not proxy:
        return None
    # The standard library's NO_PROXY rules: names, domain suffixes, "*".
    bypass: Any = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    return None if bypass(parts.hostname or "", {"no": lowered.get("no_proxy", "")}) else proxy


_Key = tuple[str, str, int]  # scheme, host, port
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Requests that can be sent twice with the effect of once (RFC 9110 9.2.2).
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_BAD_IN_HEADER = re.compile(r"[\r\n\0]")


class Connections:
    """Connections to servers, kept open between requests and shared by threads
    (one request on a connection at a time).

    A request goes out in one write, its head and body together (http.client
    writes them apart: two segments, and the server wakes twice)."""

    def __init__(self, context: ssl.SSLContext, timeout: float) -> None:
        self.context = context
        self.timeout = timeout
        self._idle: dict[_Key, list[tuple[float, socket.socket]]] = {}  # since, connection
        self._lock = threading.Lock()
        self._closed = False  # then a request's connection is closed after it, not kept

    def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                timeout: float | None = None) -> Reply:
        """Send one request and read its whole answer. A header with a line
        break in it is a ValueError (nothing is sent)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransportError(f"not an http(s) URL: {url!r}")
        key = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        head = [f"{method} {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
                f"Host: {parts.netloc.rpartition('@')[2]}", "Accept-Encoding: identity"]
        for name, value in headers.items():
            if _BAD_IN_HEADER.search(name) or _BAD_IN_HEADER.search(value):
                raise ValueError(f"header {name!r} holds a line break")
            head.append(f"{name}: {value}")
        if body is not None or method in _BODY_METHODS:
            head.append(f"Content-Length: {len(body or b'')}")
        message = "\r\n".join(head).encode("latin-1") + b"\r\n\r\n"
        if body and len(body) <= JOIN_BODY_UP_TO:
            message, body = message + body, None
        kept = self._kept(key)
        if kept is not None:
            try:
                return self._exchange(key, kept, method, message, body, timeout)
            except _Unanswered:
                # The server closed the kept connection just as the request
                # went out (its idle timeout): it never read it, but nothing
                # tells that from a request it read and then died on, so only a
                # request that may run twice is sent again (an idempotent
                # method, or one with a key the server dedupes on).
                if method not in _IDEMPOTENT and "Idempotency-Key" not in headers:
                    raise
        return self._exchange(key, self._connect(key), method, message, body, timeout)

    def _exchange(self, key: _Key, sock: socket.socket, method: str, message: bytes, body: bytes | None,
                  timeout: float | None) -> Reply:
        answer, headed = None, False
        try:
            sock.settimeout(self.timeout if timeout is None else timeout)
            sock.sendall(message)
            if body:
                sock.sendall(body)
            answer = http.client.HTTPResponse(sock, method=method)
            answer.begin()
            headed = True
            content = answer.read()
        except (OSError, http.client.HTTPException) as exc:
            # The answer's reader holds the socket open until it is closed too.
            if answer is not None:
                answer.close()
            sock.close()
            if isinstance(exc, ConnectionError) and not headed:  # reset or closed before any answer
                raise _Unanswered(_said(exc)) from exc
            # The kernel's ETIMEDOUT: keepalive probes or sent data went
            # unacknowledged (a plain read timeout has no errno).
            silent = isinstance(exc, TimeoutError) and exc.errno == errno.ETIMEDOUT
            raise TransportError(_said(exc), silent=silent) from exc
        reply = Reply(answer.status, content)
        if answer.will_close:
            sock.close()
        else:
            self._give(key, sock)
        return reply

    def _kept(self, key: _Key) -> socket.socket | None:
        """An idle connection the server has not closed and has had no time to
        close, if there is one."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                since, sock = idle.pop() if idle else (0.0, None)
            if sock is None or (time.monotonic() - since < REUSE_IDLE_UP_TO and _usable(sock)):
                return sock
            sock.close()

    def _connect(self, key: _Key) -> socket.socket:
        """A new connection (refused, unreachable or a failed TLS handshake:
        a TransportError)."""
        scheme, host, port = key
        try:
            sock = socket.create_connection((host, port), min(self.timeout, CONNECT_TIMEOUT))
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                _notice_a_silent_peer(sock)
                return self.context.wrap_socket(sock, server_hostname=host) if scheme == "https" else sock
            except BaseException:
                sock.close()
                raise
        except OSError as exc:
            raise TransportError(_said(exc), silent=isinstance(exc, TimeoutError)) from exc

    def _give(self, key: _Key, sock: socket.socket) -> None:
        with self._lock:
            idle = None if self._closed else self._idle.setdefault(key, [])
            if idle is not None and len(idle) < IDLE_KEPT:
                idle.append((time.monotonic(), sock))
                return
        sock.close()

    def close(self) -> None:
        """Close the idle connections; one in use is closed when its request ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for socks in idle.values():
            for _, sock in socks:
                sock.close()


def _notice_a_silent_peer(sock: socket.socket) -> None:
    """Keepalive probes and a bound on unacknowledged data, where the system
    has them (Linux has all four): a server whose host vanished fails the
    request in about SILENT_PEER_TIMEOUT s instead of its whole timeout. A
    server that is only slow acknowledges both, so its answers wait as long
    as they need."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                        ("TCP_KEEPCNT", (SILENT_PEER_TIMEOUT - KEEPALIVE_IDLE) // KEEPALIVE_INTERVAL),
                        ("TCP_USER_TIMEOUT", SILENT_PEER_TIMEOUT * 1000)):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def _said(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _usable(sock: socket.socket) -> bool:
    """An idle connection is readable only when the server closed it (or
    sent what it should not have): either way it is not to be used again."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


class ProxiedHttp:
    """httpx, through one proxy (the environment is not read again)."""

    def __init__(self, proxy: str, context: ssl.SSLContext, timeout: float) -> None:
        import httpx  # only here: ~0.1 s to import, and most clients never need it

        self._httpx = httpx
        self._client: httpx.Client = httpx.Client(timeout=timeout, verify=context, proxy=proxy, trust_env=False)

    def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                timeout: float | None = None) -> Reply:
        httpx = self._httpx
        try:
            answer = self._client.request(method, url, headers=dict(headers), content=body,
                                          timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.TransportError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}", silent=isinstance(exc, httpx.ConnectTimeout)) from exc
        return Reply(answer.status_code, answer.content)

    def close(self) -> None:
        self._client.close()
