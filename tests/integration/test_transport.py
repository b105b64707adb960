"""The client's HTTP: kept-alive connections, a server that closes them,
proxies from the environment, and requests that must not be sent."""

from __future__ import annotations

import gc
import http.server
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runyard import client as client_module
from runyard import transport
from runyard.client import Client
from runyard.core.errors import InvalidInput, Unavailable
from runyard.transport import proxy_for
from tests.conftest import gone
from tests.harness import wait_for


@dataclass
class Seen:
    connections: int = 0
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)  # method, target, body
    close_after_answer: bool = False  # answer, then close the connection without saying so
    no_answer: bool = False  # read the request, then close without a word
    answer_one_a_connection: bool = False  # a second request on a connection: no_answer
    closed: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))  # a connection closed
    answer_when: threading.Event | None = None  # answer only once this is set


@contextmanager
def http_server(seen: Seen) -> Iterator[int]:
    """A plain HTTP/1.1 server that keeps connections alive and answers {"ok": true}."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        answered = 0

        def setup(self) -> None:
            super().setup()
            seen.connections += 1

        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.requests.append((self.command, self.path, body))
            self.answered += 1
            if seen.answer_when is not None:
                seen.answer_when.wait(60)
            if seen.no_answer or (seen.answer_one_a_connection and self.answered > 1):
                self.close_connection = True
                return
            answer = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
            self.wfile.flush()
            if seen.close_after_answer:
                self.close_connection = True

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, *args: object) -> None:
            pass

    class Server(socketserver.ThreadingTCPServer):
        def shutdown_request(self, request: object) -> None:
            super().shutdown_request(request)  # type: ignore[arg-type]
            seen.closed.release()

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(30)
def test_requests_share_one_kept_alive_connection_and_go_out_whole() -> None:
    seen = Seen()
    with http_server(seen) as port, Client([f"http://127.0.0.1:{port}"], "tok", environ={}) as client:
        for i in range(5):
            assert client.request("POST", "/x", params={"i": i, "yes": True}, json={"n": i}).json() == {"ok": True}
        assert client.request("GET", "/y").status_code == 200
        big = bytes(range(256)) * 4096  # 1 MiB: sent after the head, not joined to it
        assert client.request("PUT", "/z", content=big).status_code == 200
    assert seen.connections == 1
    assert seen.requests[0] == ("POST", "/x?i=0&yes=true", b'{"n":0}')
    assert seen.requests[-2] == ("GET", "/y", b"")
    assert seen.requests[-1] == ("PUT", "/z", big)


@pytest.mark.timeout(30)
def test_a_connection_the_server_closed_is_not_used_again() -> None:
    seen = Seen(close_after_answer=True)
    with http_server(seen) as port, Client([f"http://127.0.0.1:{port}"], environ={}) as client:
        for _ in range(3):
            # Without the check before reuse, the second request would go out
            # on the closed connection and fail (a POST is not sent twice).
            assert client.request("POST", "/x", content=b"body").status_code == 200
            assert seen.closed.acquire(timeout=10)
    assert seen.connections == 3 and len(seen.requests) == 3


@pytest.mark.timeout(30)
def test_a_get_lost_as_the_server_closes_a_kept_connection_is_sent_again_on_a_new_one() -> None:
    # What the race with a server's idle timeout looks like from here: the
    # kept connection passed the check, then the server closed it unanswered.
    seen = Seen(answer_one_a_connection=True)
    with http_server(seen) as port, Client([f"http://127.0.0.1:{port}"], environ={}) as client:
        assert client.request("GET", "/a").status_code == 200
        assert client.request("GET", "/b").json() == {"ok": True}
        gc.collect()  # a socket left open fails the test as it is collected
    assert [r[1] for r in seen.requests] == ["/a", "/b", "/b"] and seen.connections == 2


@pytest.mark.timeout(30)
def test_a_post_lost_as_the_server_closes_a_kept_connection_is_not_sent_twice() -> None:
    # The server may have read it and died before answering: only the caller
    # knows whether it may run twice.
    seen = Seen(answer_one_a_connection=True)
    with http_server(seen) as port, Client([f"http://127.0.0.1:{port}"], environ={}) as client:
        client.request("POST", "/a", content=b"1")
        with pytest.raises(Unavailable, match=r"RemoteDisconnected|ConnectionReset"):
            client.request("POST", "/b", content=b"2")
    assert [r[1] for r in seen.requests] == ["/a", "/b"] and seen.connections == 1


@pytest.mark.timeout(30)
def test_a_post_with_an_idempotency_key_lost_that_way_is_sent_again() -> None:
    # The key tells the server it is the same request (a run trigger).
    seen = Seen(answer_one_a_connection=True)
    with http_server(seen) as port, Client([f"http://127.0.0.1:{port}"], environ={}) as client:
        client.request("POST", "/a", content=b"1")
        assert client.request("POST", "/b", content=b"2", headers={"Idempotency-Key": "k"}).status_code == 200
    assert [r[1] for r in seen.requests] == ["/a", "/b", "/b"] and seen.connections == 2


@pytest.mark.timeout(30)
def test_a_connection_idle_for_longer_than_the_reuse_limit_is_not_used_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen = Seen()
    with http_server(seen) as port, Client([f"http://127.0.0.1:{port}"], environ={}) as client:
        client.request("GET", "/a")
        client.request("GET", "/b")
        assert seen.connections == 1  # kept while it is young
        monkeypatch.setattr(transport, "REUSE_IDLE_UP_TO", 0.0)
        client.request("GET", "/c")
        gc.collect()  # the old one is closed, not dropped
    assert seen.connections == 2


@pytest.mark.timeout(30)
def test_a_request_the_server_drops_is_unavailable_and_leaves_no_socket_open() -> None:
    seen = Seen(no_answer=True)
    with http_server(seen) as port, Client([f"http://127.0.0.1:{port}"], environ={}) as client:
        with pytest.raises(Unavailable, match="RemoteDisconnected"):
            client.request("GET", "/x")
        # A socket left open would warn (ResourceWarning) as it is collected:
        # pytest fails the test that collects it.
        gc.collect()
    assert len(seen.requests) == 1


@pytest.mark.timeout(30)
def test_a_closed_client_keeps_no_connection() -> None:
    seen = Seen()
    with http_server(seen) as port:
        client = Client([f"http://127.0.0.1:{port}"], environ={})
        client.request("GET", "/a")
        client.close()
        # A request still finishing (a launcher's poll thread) after close():
        # its connection is closed, not kept for nobody.
        assert client.request("GET", "/b").status_code == 200
        assert client._direct._idle == {}  # the pool's own state is the point
    assert seen.connections == 2


@pytest.mark.timeout(30)
@pytest.mark.parametrize("credential", ["tok\r\nX-Injected: 1", "tok\nx", "tok\0"])
def test_a_header_with_a_line_break_is_refused_and_nothing_is_sent(credential: str) -> None:
    seen = Seen()
    with http_server(seen) as port, Client([f"http://127.0.0.1:{port}"], credential, environ={}) as client, \
            pytest.raises(InvalidInput, match="line break"):
        client.request("GET", "/x")
    assert seen.requests == []


@pytest.mark.timeout(30)
def test_an_unreachable_server_is_unavailable() -> None:
    with http_server(Seen()) as port:
        pass  # closed: nothing listens on the port now
    with Client([f"http://127.0.0.1:{port}"], environ={}, timeout=5) as client, \
            pytest.raises(Unavailable, match="cannot reach"):
        client.request("GET", "/x")


@pytest.mark.timeout(30)
def test_an_endpoint_behind_a_proxy_is_reached_through_it() -> None:
    """HTTP_PROXY applies: the request goes to the proxy, in absolute form."""
    proxy = Seen()
    with http_server(proxy) as proxy_port:
        env = {"HTTP_PROXY": f"http://127.0.0.1:{proxy_port}"}
        with Client(["http://runyard.example:8080"], "tok", environ=env) as client:
            assert client.request("POST", "/api/v1/x", json={"a": 1}).json() == {"ok": True}
        # NO_PROXY names the host: straight there (nothing listens: unavailable).
        env["NO_PROXY"] = "runyard.example"
        with Client(["http://runyard.example:8080"], environ=env, timeout=2) as client, \
                pytest.raises(Unavailable):
            client.request("GET", "/api/v1/x")
    assert proxy.requests == [("POST", "http://runyard.example:8080/api/v1/x", b'{"a":1}')]


P = "http://p:3128"


@pytest.mark.parametrize(("url", "env", "expected"), [
    ("http://h:1", {}, None),
    ("http://h:1", {"HTTP_PROXY": P}, P),
    ("http://h:1", {"http_proxy": P}, P),
    ("http://h:1", {"HTTPS_PROXY": P}, None),
    ("https://h:1", {"HTTPS_PROXY": P}, P),
    ("https://h:1", {"ALL_PROXY": P}, P),
    ("https://h:1", {"HTTPS_PROXY": "http://s:1", "ALL_PROXY": P}, "http://s:1"),
    ("https://h:1", {"HTTPS_PROXY": P, "NO_PROXY": "h"}, None),
    ("https://a.acme.internal", {"HTTPS_PROXY": P, "no_proxy": "localhost,.acme.internal"}, None),
    ("https://acme.internal.evil", {"HTTPS_PROXY": P, "no_proxy": ".acme.internal"}, P),
    ("https://h", {"HTTPS_PROXY": P, "NO_PROXY": "*"}, None),
    ("https://h", {"HTTPS_PROXY": ""}, None),
])
def test_which_proxy_an_endpoint_goes_through(url: str, env: dict[str, str], expected: str | None) -> None:
    assert proxy_for(url, env) == expected


@given(host=st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True))
def test_no_proxy_naming_a_host_always_bypasses_the_proxy(host: str) -> None:
    env = {"HTTPS_PROXY": P, "HTTP_PROXY": P}
    assert proxy_for(f"https://{host}:8443", env) == P
    assert proxy_for(f"https://{host}:8443", {**env, "NO_PROXY": f"other.example,{host}"}) is None


@pytest.fixture
def quick_to_notice(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same mechanism, on a shorter clock."""
    monkeypatch.setattr(transport, "CONNECT_TIMEOUT", 1.0)
    monkeypatch.setattr(transport, "KEEPALIVE_IDLE", 1)
    monkeypatch.setattr(transport, "KEEPALIVE_INTERVAL", 1)
    monkeypatch.setattr(transport, "SILENT_PEER_TIMEOUT", 3)


@pytest.mark.timeout(60)
def test_a_server_whose_host_is_lost_while_it_holds_a_request_fails_it_without_waiting_out_its_timeout(
        quick_to_notice: None) -> None:
    seen = Seen(answer_when=threading.Event())
    failed: list[BaseException] = []
    with http_server(seen) as port, Client([f"http://127.0.0.1:{port}"], environ={}) as client:
        def held() -> None:
            try:
                client.request("POST", "/poll", timeout=600, content=b"")
            except Unavailable as exc:
                failed.append(exc)

        waiting = threading.Thread(target=held)
        waiting.start()
        wait_for(lambda: len(seen.requests) == 1, 10, "the server to hold the request")
        with gone(port):
            waiting.join(30)  # without keepalive probes it waits its 600 s
            assert not waiting.is_alive()
        assert seen.answer_when is not None
        seen.answer_when.set()
    assert len(failed) == 1 and "Connection timed out" in str(failed[0])


@pytest.mark.timeout(60)
def test_a_slow_server_is_waited_for_past_the_silent_peer_timeout(quick_to_notice: None) -> None:
    # Its kernel acknowledges the probes: only a host that is gone is given up on.
    seen = Seen(answer_when=threading.Event())
    with http_server(seen) as port, Client([f"http://127.0.0.1:{port}"], environ={}) as client:
        assert seen.answer_when is not None
        timer = threading.Timer(2 * transport.SILENT_PEER_TIMEOUT, seen.answer_when.set)
        timer.start()
        assert client.request("GET", "/slow", timeout=600).json() == {"ok": True}
        assert seen.answer_when.is_set()


@pytest.mark.timeout(60)
def test_connecting_to_a_host_that_is_gone_gives_up_after_the_connect_timeout(quick_to_notice: None) -> None:
    seen = Seen()
    with http_server(seen) as port, gone(port), \
            Client([f"http://127.0.0.1:{port}"], environ={}, timeout=600) as client, \
            pytest.raises(Unavailable, match="timed out"):
        client.request("GET", "/x")  # without its own bound, connecting waits as long as the kernel tries
    assert seen.connections == 0


@pytest.mark.timeout(20)
def test_a_held_poll_that_a_hung_server_never_answers_ends_soon_after_its_wait(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A hung process on a live machine acknowledges everything: only the
    # poll's own timeout (its wait plus a margin) tells.
    monkeypatch.setattr(client_module, "HELD_ANSWER_MARGIN", 1.0)
    seen = Seen(answer_when=threading.Event())
    with http_server(seen) as port, Client([f"http://127.0.0.1:{port}"], "tok", environ={}) as client:
        with pytest.raises(Unavailable, match="timed out"):
            client.poll(1.0)  # a margin of 30 s, as before, outlasts this test
        assert seen.answer_when is not None
        seen.answer_when.set()
    assert seen.requests[0][1] == "/api/v1/worker/poll?wait=1.0"
