"""A trigger sent again under its Idempotency-Key, to this server or another,
queues one run: over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import threading

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from runyard.core import limits
from runyard.core.errors import Conflict
from runyard.core.states import RunKind
from tests.integration.conftest import ADMIN, Api

RUNS = "/api/v1/stacks/s1/runs"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def test_a_trigger_sent_again_with_its_key_gets_the_run_it_queued(api: Api) -> None:
    api.pool()
    api.stack()
    first = api.client.trigger("s1", RunKind.TASK, "echo once", key="ci-job-4711")
    again = api.client.trigger("s1", RunKind.TASK, "echo once", key="ci-job-4711")
    assert again.id == first.id and again.state == first.state
    other = api.client.trigger("s1", RunKind.TASK, "echo once")  # no key given: a key of its own
    assert [r.id for r in api.client.runs("s1")] == [other.id, first.id]
    assert [t.state for t in api.client.run(first.id).transitions] == [first.state]  # queued once


def test_a_key_sent_with_another_run_is_refused_and_queues_nothing(api: Api) -> None:
    api.pool()
    api.stack()
    api.stack("s2")
    first = api.client.trigger("s1", RunKind.TASK, "echo one", key="k-1")
    for stack, kind, command in (("s1", RunKind.TASK, "echo two"), ("s1", RunKind.PROPOSED, ""),
                                 ("s2", RunKind.TASK, "echo one")):
        with pytest.raises(Conflict, match=f"another run \\({first.id}\\): a new run needs a new key"):
            api.client.trigger(stack, kind, command, key="k-1")
    assert [r.id for r in api.client.runs()] == [first.id]


def test_triggers_racing_with_one_key_queue_one_run(api: Api) -> None:
    api.pool()
    api.stack()
    got: list[str] = []
    start = threading.Barrier(6)

    def send() -> None:
        with api.anonymous() as client:
            client.credential = ADMIN
            start.wait(10)
            got.append(client.trigger("s1", RunKind.TASK, "echo race", key="raced").id)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(got) == 6 and len(set(got)) == 1
    assert [r.id for r in api.client.runs("s1")] == got[:1]


KEY = re.compile(limits.TRIGGER_KEY_PATTERN)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.one_of(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=200),
                     st.from_regex(KEY, fullmatch=True)))
def test_any_key_is_taken_or_refused_with_422_never_a_500(api: Api, key: str) -> None:
    assume(key == key.strip())  # HTTP itself drops the blanks around a header's value
    if not api.client.pools():
        api.pool()
        api.stack()
    before = len(api.client.runs("s1", limit=1000))
    answer = api.http.post(RUNS, json={"kind": "TASK", "command": "echo k"},
                           headers={**AUTH, "Idempotency-Key": key})
    after = len(api.client.runs("s1", limit=1000))
    if KEY.match(key):
        assert answer.status_code == 201, answer.text
        assert after - before in (0, 1)  # 0: the key came up before in this run of the test
    else:
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"] == "invalid" and "idempotency-key" in answer.json()["message"].lower()
        assert after == before
