"""The request head has a size and a time bound, every number a request
sends is finite, and what the HTTP parser refuses is answered in the API's
one error shape: over real sockets, against the protocol `runyard server`
serves with."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runyard.config import ServerSettings
from runyard.core import limits
from runyard.devstack import free_port
from runyard.server.app import build_services, create_app
from runyard.server.httpguard import GuardedProtocol
from tests.integration.conftest import ADMIN, Api, running

AUTH = {"Authorization": f"Bearer {ADMIN}"}


def _exchange(port: int, head: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str]]:
    """Send ``head`` raw; the status and the JSON body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        return _answer(sock)


def _answer(sock: socket.socket) -> tuple[int, dict[str, str]]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in headers.lower()
    return int(status_line.split()[1]), json.loads(body)


def test_a_request_head_over_its_limit_is_refused_without_credentials(api: Api):
    port = int(api.url.rsplit(":", 1)[1])
    header = b"X-Pad: " + b"a" * limits.MAX_REQUEST_HEAD + b"\r\n"
    status, body = _exchange(port, b"GET /api/v1/stacks HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n")
    assert status == 431 and body["error"] == "too_large" and "64 KiB" in body["message"]


def test_a_url_over_the_limit_is_answered_in_the_error_shape(api: Api):
    port = int(api.url.rsplit(":", 1)[1])
    status, body = _exchange(port, b"GET /" + b"a" * (limits.MAX_REQUEST_HEAD + 1) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 431 and body["error"] == "too_large"


def test_a_request_the_parser_cannot_read_is_answered_in_the_error_shape(api: Api):
    port = int(api.url.rsplit(":", 1)[1])
    status, body = _exchange(port, b"GET / HTTP/1.1\r\nHost x\r\n\r\n")
    assert status == 400 and body == {"error": "invalid", "message": "the request is not valid HTTP/1.1"}


def test_headers_under_the_limit_are_served(api: Api):
    headers = {**AUTH, "X-Pad": "a" * (limits.MAX_REQUEST_HEAD // 2)}
    assert api.http.get("/api/v1/stacks", headers=headers).status_code == 200


class _QuickHead(GuardedProtocol):
    head_timeout = 1.0


@pytest.fixture
def quick(database_url: str, tmp_path: Path) -> Iterator[int]:
    settings, _ = ServerSettings.resolve({"data_dir": tmp_path / "data", "database_url": database_url,
                                          "admin_api_key": ADMIN}, env={})
    svc = build_services(settings)
    svc.auth.bootstrap_admin_key(ADMIN)
    port = free_port()
    with running(create_app(settings, svc), port, http=_QuickHead):
        yield port
    svc.close()


def test_a_client_that_trickles_its_headers_is_cut_off(quick: int):
    """A byte every 0.1 s would hold a connection forever if each byte
    restarted a timer; the head's deadline runs from its first byte."""
    head = b"GET /api/v1/stacks HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", quick), timeout=10) as sock:
        try:
            for byte in head:
                sock.send(bytes([byte]))
                time.sleep(0.1)  # the attacker's pace, not a wait for the server
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, body = _answer(sock)
    assert status == 408 and body["error"] == "timeout"
    assert time.monotonic() - started < 5


def test_a_kept_connection_still_serves_its_next_request(quick: int):
    """The head deadline is armed per request: a kept-alive connection idle
    longer than it is not cut off before it sends anything."""
    with httpx.Client(base_url=f"http://127.0.0.1:{quick}", headers=AUTH) as http:
        assert http.get("/api/v1/stacks").status_code == 200
        time.sleep(1.5)  # longer than the head deadline, between two requests
        assert http.get("/api/v1/stacks").status_code == 200


NOT_FINITE = ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"]


def test_every_numeric_query_parameter_refuses_nan_and_infinity(api: Api):
    """Every number of the OpenAPI document, on every route that takes one
    (the worker lane's poll too, which once answered 500)."""
    pool_id, token, key = api.pool()
    api.stack()
    worker = api.worker(pool_id, token, key)
    schema = api.http.get("/openapi.json").json()
    checked = []
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            for param in op.get("parameters", []):
                types = {param["schema"].get("type")} | {s.get("type") for s in param["schema"].get("anyOf", [])}
                if param["in"] != "query" or not types & {"number"}:
                    continue
                url = (path.replace("{ref}", "p1").replace("{run_id}", "01RUN").replace("{stack}", "s1"))
                who = {"Authorization": f"Bearer {worker.credential}"} if "/worker/" in path else AUTH
                for value in NOT_FINITE:
                    resp = api.http.request(method.upper(), url, params={param["name"]: value}, headers=who)
                    assert resp.status_code == 422, (method, url, value, resp.text)
                    assert resp.json()["error"] == "invalid"
                checked.append((method, path, param["name"]))
    assert ("post", "/api/v1/worker/poll", "wait") in checked and len(checked) >= 3


def test_a_log_batch_with_a_nan_time_is_refused(api: Api):
    pool_id, token, key = api.pool()
    api.stack()
    worker = api.worker(pool_id, token, key)
    body = '{"lease": 1, "blocks": [{"seq": 1, "ts": NaN, "text": "x"}]}'
    resp = api.http.post("/api/v1/worker/runs/01RUN/logs", content=body,
                         headers={"Authorization": f"Bearer {worker.credential}", "content-type": "application/json"})
    assert resp.status_code == 422 and resp.json()["error"] == "invalid"
