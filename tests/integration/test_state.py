"""The state backend's rules and the drift scheduler, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json

import httpx
import pytest

from runyard.core.errors import Conflict, InvalidInput
from runyard.core.states import RunKind, RunState
from tests.integration.conftest import ADMIN, Api, walk


def state(serial: int, lineage: str = "L1", extra: str = "") -> bytes:
    return json.dumps({"version": 4, "serial": serial, "lineage": lineage, "resources": [], "x": extra}).encode()


def backend(api: Api, stack: str = "s1", password: str = ADMIN) -> tuple[httpx.Client, str]:
    stack_id = api.client.stack(stack).id
    client = httpx.Client(base_url=api.url, auth=("tf", password), timeout=30)
    api.opened.append(client)
    return client, f"/api/v1/stacks/{stack_id}/state"


def test_versions_are_kept_and_history_cannot_be_clobbered(api: Api):
    api.pool()
    api.stack()
    http, url = backend(api)
    assert http.get(url).status_code == 204
    assert http.post(url, content=state(1)).status_code == 200
    assert http.post(url, content=state(2)).status_code == 200
    assert http.post(url, content=state(2)).status_code == 200  # the same write again is a no-op
    older = http.post(url, content=state(1))
    assert older.status_code == 409 and "older" in older.json()["message"]
    other = http.post(url, content=state(3, lineage="L2"))
    assert other.status_code == 409 and "lineage" in other.json()["message"]
    same_serial = http.post(url, content=state(2, extra="different"))
    assert same_serial.status_code == 409
    assert http.post(url + "?force=true", content=state(1, lineage="L2")).status_code == 200
    versions = api.client.state_versions("s1")
    assert [(v.version, v.serial, v.lineage) for v in versions] == [(1, 1, "L1"), (2, 2, "L1"), (3, 1, "L2")]
    assert json.loads(api.client.state("s1", 1))["serial"] == 1  # nothing was lost
    assert json.loads(http.get(url).content)["lineage"] == "L2"
    assert http.post(url, content=b"not json").status_code == 422


def test_one_lock_holder_and_writes_only_with_the_lock(api: Api):
    api.pool()
    api.stack()
    http, url = backend(api)
    mine = {"ID": "lock-a", "Operation": "OperationTypeApply", "Who": "alice@host"}
    assert http.request("LOCK", url + "/lock", json=mine).status_code == 200
    assert http.request("LOCK", url + "/lock", json=mine).status_code == 200  # idempotent for the holder
    theirs = http.request("LOCK", url + "/lock", json={"ID": "lock-b", "Who": "bob"})
    assert theirs.status_code == 423 and theirs.json() == mine
    assert http.post(url + "?ID=lock-b", content=state(1)).status_code == 423
    assert http.post(url + "?ID=lock-a", content=state(1)).status_code == 200
    assert http.request("UNLOCK", url + "/lock", json={"ID": "lock-b"}).status_code == 423
    assert http.request("UNLOCK", url + "/lock", json={"ID": "lock-a"}).status_code == 200
    assert http.get(url + "/lock").status_code == 204


def test_state_credentials_are_scoped_to_a_live_run_of_that_stack(api: Api):
    pool_id, token, key = api.pool()
    api.stack("s1")
    api.stack("s2")
    worker = api.worker(pool_id, token, key)
    run = api.client.trigger("s1", RunKind.TRACKED)
    poll = worker.poll(2)
    assert poll.assignment is not None and poll.assignment.run_token
    run_token = poll.assignment.run_token
    own, own_url = backend(api, "s1", run_token)
    other, other_url = backend(api, "s2", run_token)
    assert own.post(own_url, content=state(1)).status_code == 200
    assert other.get(other_url).status_code == 401
    assert api.client.state_versions("s1")[0].run_id == run.id
    worker.report(run.id, poll.assignment.lease, RunState.PREPARING)
    worker.report(run.id, poll.assignment.lease, RunState.FAILED, "done")
    assert own.get(own_url).status_code == 401  # the run ended: its token is dead
    nobody, url = backend(api, "s1", "wrong")
    assert nobody.get(url).status_code == 401


def test_confirm_and_discard_only_apply_to_unconfirmed_runs(api: Api):
    pool_id, token, key = api.pool()
    api.stack()
    worker = api.worker(pool_id, token, key)
    run = api.client.trigger("s1", RunKind.TRACKED)
    lease = worker.poll(2).assignment.lease  # type: ignore[union-attr]
    with pytest.raises(Conflict, match="only an UNCONFIRMED run"):
        api.client.confirm(run.id)
    for state_ in (RunState.PREPARING, RunState.INITIALIZING, RunState.PLANNING):
        worker.report(run.id, lease, state_)
    with pytest.raises(Conflict, match="workspace"):
        worker.report(run.id, lease, RunState.UNCONFIRMED)
    worker.put_workspace(run.id, lease, b"sealed bytes")
    worker.report(run.id, lease, RunState.UNCONFIRMED, changes={"add": 1, "change": 0, "destroy": 0})
    assert api.client.workers("p1")[0].status == "IDLE"  # the worker is free while people decide
    assert api.client.run(run.id).changes == {"add": 1, "change": 0, "destroy": 0}
    assert api.client.confirm(run.id).state == RunState.CONFIRMED
    # Sent again (a lost answer, a failover): the decision stands, nothing moves twice.
    assert api.client.confirm(run.id).state == RunState.CONFIRMED
    with pytest.raises(Conflict, match="only an UNCONFIRMED run"):
        api.client.discard(run.id)
    again = worker.poll(2).assignment
    assert again is not None and again.run.id == run.id and again.lease == lease + 1
    assert worker.get_workspace(run.id, again.lease) == b"sealed bytes"
    worker.report(run.id, again.lease, RunState.PREPARING)
    assert api.client.confirm(run.id).state == RunState.PREPARING  # confirmed, and gone on since
    assert [t.state for t in api.client.run(run.id).transitions].count(RunState.CONFIRMED) == 1


def test_a_discard_sent_again_stands_and_a_confirm_after_it_is_refused(api: Api):
    pool_id, token, key = api.pool()
    api.stack()
    worker = api.worker(pool_id, token, key)
    run = api.client.trigger("s1", RunKind.TRACKED)
    lease = worker.poll(2).assignment.lease  # type: ignore[union-attr]
    walk(worker, run.id, lease, RunState.PREPARING, RunState.INITIALIZING, RunState.PLANNING)
    worker.put_workspace(run.id, lease, b"plan")
    worker.report(run.id, lease, RunState.UNCONFIRMED)
    assert api.client.discard(run.id).state == RunState.DISCARDED
    assert api.client.discard(run.id).state == RunState.DISCARDED
    with pytest.raises(Conflict, match="only an UNCONFIRMED run"):
        api.client.confirm(run.id)


def _at(hour: int, minute: int) -> float:
    return dt.datetime(2030, 1, 1, hour, minute, tzinfo=dt.UTC).timestamp()


def test_the_drift_scheduler_queues_runs_when_due_and_only_where_enabled(api: Api):
    from runyard.crypto import generate_key, make_csr

    api.client.create_pool("drifty", make_csr(generate_key(2048)).decode(), drift_detection_limit=2)
    api.pool("off")
    api.stack("d1", pool="drifty", drift_schedule="*/15 * * * *")
    api.stack("d2", pool="off", drift_schedule="*/15 * * * *")
    api.stack("plain", pool="drifty")
    with api.svc.ctx.tx() as repo:
        for stack in repo.stacks():
            repo.set_drift_checked(stack.id, _at(10, 1))
    assert api.svc.drift.tick(_at(10, 14)) == []
    queued = api.svc.drift.tick(_at(10, 15))
    assert len(queued) == 1
    run = api.client.run(queued[0])
    assert run.kind == RunKind.DRIFT_DETECTION and run.stack_id == api.client.stack("d1").id
    # Due again, but one is still queued: no pile-up.
    assert api.svc.drift.tick(_at(10, 30)) == []
    with pytest.raises(InvalidInput, match="cron"):
        api.stack("bad", pool="drifty", drift_schedule="every hour")
