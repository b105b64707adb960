"""Which of its endpoints a client asks, and in what order: a server whose
host is gone (silent: its requests time out unacknowledged) is not waited on
again while another one answers; one that refuses or is slow is asked again
at once."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runyard.client import PASS_OVER_FOR, Client
from runyard.core.errors import Unavailable
from runyard.testing import FakeClock
from runyard.transport import Reply, TransportError


def standby_naming(primary: str) -> Reply:
    return Reply(503, json.dumps({"error": "standby", "message": "a standby", "primary": primary}).encode())


@dataclass
class Route:
    """One endpoint: it answers ``reply``, is silent (GONE), refuses (DOWN) or is too slow (SLOW)."""

    reply: Reply | str = ""
    asked: list[str] = field(default_factory=list)

    def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                timeout: float | None = None) -> Reply:
        self.asked.append(url)
        if self.reply == GONE:
            raise TransportError("TimeoutError: [Errno 110] Connection timed out", silent=True)
        if self.reply == SLOW:
            raise TransportError("TimeoutError: timed out")
        if self.reply == DOWN:
            raise TransportError("ConnectionRefusedError: [Errno 111] Connection refused")
        assert isinstance(self.reply, Reply)
        return self.reply

    def close(self) -> None:
        pass


GONE, DOWN, SLOW = "gone", "down", "slow"
STANDS_BY, SERVES = standby_naming(""), Reply(200, b"{}")  # a standby while no lease runs


def client_over(*routes: Route, clock: FakeClock) -> Client:
    client = Client([f"http://site-{i}" for i in range(len(routes))], environ={}, clock=clock)
    faked: list[Any] = list(routes)  # the transport is what is faked here
    client._routes = faked
    return client


def test_a_gone_primary_is_not_asked_again_while_the_standby_answers() -> None:
    clock = FakeClock()
    primary, standby = Route(GONE), Route(STANDS_BY)
    client = client_over(primary, standby, clock=clock)
    for _ in range(3):
        with pytest.raises(Unavailable, match="standby"):
            client.request("GET", "/x")
        clock.advance(PASS_OVER_FOR / 4)
    assert len(primary.asked) == 1 and len(standby.asked) == 3
    # The standby takes over: it serves at once.
    standby.reply = SERVES
    assert client.request("GET", "/x").status_code == 200
    assert len(primary.asked) == 1


def test_a_silent_primary_a_standby_names_as_the_lease_holder_is_asked_at_once() -> None:
    # It came back and holds a live lease (a failback): no need to wait out the pass over.
    clock = FakeClock()
    primary, standby = Route(GONE), Route(STANDS_BY)
    client = client_over(primary, standby, clock=clock)
    with pytest.raises(Unavailable):
        client.request("GET", "/x")
    primary.reply, standby.reply = SERVES, standby_naming("http://site-0/")
    assert client.request("GET", "/x").status_code == 200
    assert len(primary.asked) == 2 and client.endpoint == "http://site-0"


@pytest.mark.parametrize(("failure", "passed_over_for"), [
    (GONE, PASS_OVER_FOR),  # its pass over has ended
    (DOWN, 0.0),  # a restart refuses connections for a moment: trying it costs nothing
    (SLOW, 0.0),  # it is there: its next answer may be quicker
])
def test_a_primary_that_failed_is_asked_again_once_that_is_cheap(failure: str, passed_over_for: float) -> None:
    clock = FakeClock()
    primary, standby = Route(failure), Route(STANDS_BY)
    client = client_over(primary, standby, clock=clock)
    with pytest.raises(Unavailable):
        client.request("GET", "/x")
    clock.advance(passed_over_for)
    primary.reply = SERVES  # it came back
    assert client.request("GET", "/x").status_code == 200
    assert len(primary.asked) == 2


def test_when_no_endpoint_answers_each_is_asked_even_if_it_was_silent_lately() -> None:
    clock = FakeClock()
    only = Route(GONE)
    client = client_over(only, clock=clock)
    for _ in range(2):
        with pytest.raises(Unavailable, match="timed out"):
            client.request("GET", "/x")
    assert len(only.asked) == 2
    only.reply = SERVES
    assert client.request("GET", "/x").status_code == 200


REPLIES = st.sampled_from([GONE, DOWN, SLOW, STANDS_BY, standby_naming("http://site-2"), SERVES])


@given(st.lists(st.tuples(st.lists(REPLIES, min_size=3, max_size=3), st.floats(0, 2 * PASS_OVER_FOR)),
                min_size=1, max_size=12))
def test_a_request_gets_through_when_an_endpoint_serves_that_was_not_silent_lately(
        steps: list[tuple[list[Reply | str], float]]) -> None:
    # Passing over an endpoint that was silent is the only way a serving
    # endpoint is missed; with none serving, the request is Unavailable.
    clock = FakeClock()
    routes = [Route(), Route(), Route()]
    client = client_over(*routes, clock=clock)
    silent_at: dict[int, float] = {}
    for replies, wait in steps:
        for route, reply in zip(routes, replies, strict=True):
            route.reply = reply
        lately = {i for i, at in silent_at.items() if clock() - at < PASS_OVER_FOR}
        asked_before = [len(r.asked) for r in routes]
        try:
            assert client.request("GET", "/x").status_code == 200
            assert routes[client._current].reply is SERVES
        except Unavailable:
            assert not [i for i, r in enumerate(replies) if r is SERVES and i not in lately]
        for i, route in enumerate(routes):
            if len(route.asked) > asked_before[i] and route.reply == GONE:
                silent_at[i] = clock()
        clock.advance(wait)
