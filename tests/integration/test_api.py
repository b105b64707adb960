"""The API on SQLite and on PostgreSQL: pools, workers, stacks, runs, logs."""

from __future__ import annotations

import base64
import json
import socket
import threading

import pytest

from runyard.core.errors import Conflict, InvalidInput, NotFound, StaleLease, Unauthorized
from runyard.core.models import LogBlock, RunEnd
from runyard.core.states import RunKind, RunState
from runyard.crypto import generate_key, make_csr, sign_challenge
from runyard.server.notifier import pool_topic
from runyard.wire import RegisterIn, SourceIO, StackCreate
from tests.harness import wait_for
from tests.integration.conftest import Api, walk

S = RunState


def test_requests_without_a_valid_key_get_401_saying_what_to_do(api: Api):
    with pytest.raises(Unauthorized, match="RUNYARD_API_KEY"):
        api.anonymous().pools()
    resp = api.http.get("/api/v1/pools", headers={"Authorization": "Bearer wrong"})
    assert resp.status_code == 401
    assert "not valid" in resp.json()["message"]


def test_openapi_document_describes_the_api(api: Api):
    doc = api.http.get("/openapi.json").json()
    assert "/api/v1/stacks/{ref}/runs" in doc["paths"]
    assert "/api/v1/worker/poll" in doc["paths"]


def test_pool_create_returns_a_token_with_endpoint_pool_and_certificate(api: Api):
    pool_id, token, _ = api.pool("builders")
    doc = json.loads(base64.b64decode(token))
    assert doc["pool_id"] == pool_id
    assert doc["endpoints"] == ["http://127.0.0.1:8765"]
    assert "BEGIN CERTIFICATE" in doc["certificate"]
    assert [p.name for p in api.client.pools()] == ["builders"]
    assert api.client.pool("builders").id == pool_id


def test_a_bad_csr_is_refused_and_nothing_is_made(api: Api):
    with pytest.raises(InvalidInput, match="not a PEM certificate signing request"):
        api.client.create_pool("broken", "hello")
    assert api.client.pools() == []


def test_duplicate_and_invalid_names_are_refused(api: Api):
    api.pool("p1")
    with pytest.raises(Conflict, match="exists already"):
        api.client.create_pool("p1", make_csr(generate_key(2048)).decode())
    with pytest.raises(InvalidInput, match="not valid"):
        api.client.create_pool("bad name!", make_csr(generate_key(2048)).decode())


def test_registration_needs_the_pools_private_key(api: Api):
    pool_id, token, key = api.pool("p1")
    _, other_token, other_key = api.pool("p2")
    from runyard.crypto import PoolToken

    cert = PoolToken.decode(token).certificate_pem
    anon = api.anonymous()
    # The token alone (no valid signature) is not enough.
    challenge = anon.challenge(pool_id)
    with pytest.raises(Unauthorized):
        anon.register(RegisterIn(pool_id=pool_id, certificate=cert, challenge=challenge, signature="AAAA"))
    # Another pool's key is not enough.
    challenge = anon.challenge(pool_id)
    with pytest.raises(Unauthorized, match="does not belong to this pool"):
        anon.register(RegisterIn(**{"pool_id": pool_id, "certificate": cert, "challenge": challenge,
                       "signature": sign_challenge(other_key, challenge)}))
    # Another pool's token presented for this pool is not enough.
    challenge = anon.challenge(pool_id)
    with pytest.raises(Unauthorized, match="not the pool's current one"):
        anon.register(RegisterIn(**{"pool_id": pool_id, "certificate": PoolToken.decode(other_token).certificate_pem,
                       "challenge": challenge, "signature": sign_challenge(other_key, challenge)}))
    # The right key works, once per challenge.
    challenge = anon.challenge(pool_id)
    body = {"pool_id": pool_id, "certificate": cert, "challenge": challenge,
            "signature": sign_challenge(key, challenge), "metadata": {"rack": "r1"}}
    anon.register(RegisterIn(**body))
    with pytest.raises(Unauthorized, match="used already"):
        anon.register(RegisterIn(**body))
    workers = api.client.workers("p1")
    assert len(workers) == 1 and workers[0].metadata == {"rack": "r1"} and workers[0].status == "IDLE"


def test_a_run_goes_from_queued_to_finished_with_its_logs(api: Api):
    pool_id, token, key = api.pool()
    api.stack()
    worker = api.worker(pool_id, token, key)
    run = api.client.trigger("s1", RunKind.TRACKED)
    assert run.state == S.QUEUED
    poll = worker.poll(1)
    assert poll.assignment is not None and poll.assignment.run.id == run.id
    lease = poll.assignment.lease
    assert api.client.workers("p1")[0].status == "BUSY"
    walk(worker, run.id, lease, S.PREPARING, S.INITIALIZING, S.PLANNING)
    worker.send_logs(run.id, lease, [LogBlock(1, 1.0, "one\ntwo")])
    # A retried batch (the answer was lost) must not duplicate lines.
    worker.send_logs(run.id, lease, [LogBlock(2, 2.0, "two\nthree")])
    walk(worker, run.id, lease, S.APPLYING, S.FINISHED)
    done = api.client.run(run.id)
    assert [t.state for t in done.transitions] == [
        S.QUEUED, S.READY, S.PREPARING, S.INITIALIZING, S.PLANNING, S.APPLYING, S.FINISHED]
    assert all(t.at for t in done.transitions)
    logs = api.client.logs(run.id)
    assert [(ln.seq, ln.msg) for ln in logs.lines] == [(1, "one"), (2, "two"), (3, "three")]
    assert logs.done is False  # lines were returned; the next page says done
    assert api.client.logs(run.id, after=3).done is True
    # Sealed into the object store by the log sealer, off the request that ended the run:
    wait_for(lambda: list(api.svc.ctx.blobs.keys(f"logs/{run.id}/")), 5, "the log to be sealed")
    sealed = api.client.logs(run.id)
    assert [(ln.seq, ln.msg) for ln in sealed.lines] == [(1, "one"), (2, "two"), (3, "three")]
    assert api.client.workers("p1")[0].status == "IDLE"


def test_a_runs_last_batch_of_lines_carries_its_end(api: Api):
    pool_id, token, key = api.pool()
    api.stack()
    worker = api.worker(pool_id, token, key)
    run = api.client.trigger("s1", RunKind.PROPOSED)
    lease = worker.poll(1).assignment.lease  # type: ignore[union-attr]
    walk(worker, run.id, lease, S.PREPARING, S.INITIALIZING, S.PLANNING)
    end = RunEnd(S.FINISHED, "1 to add", {"add": 1, "change": 0, "destroy": 0})
    ack = worker.send_logs(run.id, lease, [LogBlock(1, 1.0, "planned\nbye")], end)
    assert not ack.stop_run
    done = api.client.run(run.id)
    assert done.state == S.FINISHED and done.changes == {"add": 1, "change": 0, "destroy": 0}
    assert [(ln.seq, ln.msg) for ln in api.client.logs(run.id).lines] == [(1, "planned"), (2, "bye")]
    # Sent again (its answer lost): answered as before, nothing stored twice.
    worker.send_logs(run.id, lease, [LogBlock(1, 1.0, "planned\nbye")], end)
    assert [t.state for t in api.client.run(run.id).transitions].count(S.FINISHED) == 1
    assert [ln.seq for ln in api.client.logs(run.id).lines] == [1, 2]
    # An end that is not a legal move is refused with its lines.
    other = api.client.trigger("s1", RunKind.PROPOSED)
    lease = worker.poll(1).assignment.lease  # type: ignore[union-attr]
    with pytest.raises(Conflict):
        worker.send_logs(other.id, lease, [LogBlock(1, 1.0, "early")], RunEnd(S.APPLYING))
    assert api.client.run(other.id).state == S.READY and api.client.logs(other.id).lines == []


def test_a_runs_end_can_bring_the_workers_next_run(api: Api):
    pool_id, token, key = api.pool()
    api.stack()
    worker = api.worker(pool_id, token, key)
    first, second = api.client.trigger("s1", RunKind.PROPOSED), api.client.trigger("s1", RunKind.PROPOSED)
    lease = worker.poll(1).assignment.lease  # type: ignore[union-attr]
    walk(worker, first.id, lease, S.PREPARING, S.INITIALIZING, S.PLANNING)
    ack = worker.send_logs(first.id, lease, [LogBlock(1, 1.0, "done")], RunEnd(S.FINISHED), take_next=True)
    assert ack.assignment is not None and ack.assignment.run.id == second.id
    assert ack.assignment.run_token and ack.assignment.stack.name == "s1"
    assert api.client.run(second.id).state == S.READY
    # Its end, with nothing left waiting: no run, and the worker is idle.
    lease = ack.assignment.lease
    walk(worker, second.id, lease, S.PREPARING, S.INITIALIZING, S.PLANNING)
    ack = worker.send_logs(second.id, lease, [], RunEnd(S.FINISHED), take_next=True)
    assert ack.assignment is None
    assert api.client.workers("p1")[0].status == "IDLE"
    # A drained worker is given none.
    third = api.client.trigger("s1", RunKind.PROPOSED)
    lease = worker.poll(1).assignment.lease  # type: ignore[union-attr]
    walk(worker, third.id, lease, S.PREPARING, S.INITIALIZING, S.PLANNING)
    fourth = api.client.trigger("s1", RunKind.PROPOSED)
    worker.drain_self()
    assert worker.send_logs(third.id, lease, [], RunEnd(S.FINISHED), take_next=True).assignment is None
    assert api.client.run(fourth.id).state == S.QUEUED


def test_a_report_records_the_phases_it_passed_through_or_none_of_them(api: Api):
    pool_id, token, key = api.pool()
    api.stack()
    worker = api.worker(pool_id, token, key)
    run = api.client.trigger("s1", RunKind.PROPOSED)
    answer = worker.poll(1).assignment
    assert answer is not None
    walk(worker, run.id, answer.lease, S.PREPARING)
    # A phase that is not a legal step on the way: refused, nothing recorded.
    with pytest.raises(Conflict):
        worker.report(run.id, answer.lease, S.PLANNING, via=[S.APPLYING])
    too_many = api.http.post(f"/api/v1/worker/runs/{run.id}/transition",
                             headers={"Authorization": f"Bearer {worker.credential}"},
                             json={"lease": answer.lease, "state": "PLANNING", "via": ["INITIALIZING"] * 5})
    assert too_many.status_code == 422 and too_many.json()["message"].startswith("via: ")
    assert api.client.run(run.id).state == S.PREPARING
    worker.report(run.id, answer.lease, S.PLANNING, via=[S.INITIALIZING])
    worker.send_logs(run.id, answer.lease, [], RunEnd(S.FINISHED))
    assert [t.state for t in api.client.run(run.id).transitions] == [
        S.QUEUED, S.READY, S.PREPARING, S.INITIALIZING, S.PLANNING, S.FINISHED]


def test_a_report_with_a_stale_lease_is_refused_and_changes_nothing(api: Api):
    pool_id, token, key = api.pool()
    api.stack()
    worker = api.worker(pool_id, token, key)
    run = api.client.trigger("s1", RunKind.PROPOSED)
    lease = worker.poll(1).assignment.lease  # type: ignore[union-attr]
    with pytest.raises(StaleLease):
        worker.report(run.id, lease - 1, S.PREPARING)
    with pytest.raises(StaleLease):
        worker.send_logs(run.id, lease + 7, [LogBlock(1, 1.0, "ghost")])
    assert api.client.run(run.id).state == S.READY
    assert api.client.logs(run.id).lines == []


def test_an_illegal_transition_is_a_409(api: Api):
    pool_id, token, key = api.pool()
    api.stack()
    worker = api.worker(pool_id, token, key)
    run = api.client.trigger("s1", RunKind.TRACKED)
    lease = worker.poll(1).assignment.lease  # type: ignore[union-attr]
    with pytest.raises(Conflict, match="cannot go from READY to APPLYING"):
        worker.report(run.id, lease, S.APPLYING)
    resp = api.http.post(f"/api/v1/worker/runs/{run.id}/transition", json={"lease": lease, "state": "FINISHED"},
                         headers={"Authorization": f"Bearer {worker.credential}"})
    assert resp.status_code == 409


def test_a_held_poll_is_answered_the_moment_a_run_is_queued(api: Api):
    pool_id, token, key = api.pool()
    api.stack()
    worker = api.worker(pool_id, token, key)
    result: dict[str, object] = {}
    polling = threading.Thread(target=lambda: result.update(poll=worker.poll(5)))
    polling.start()
    # Once the poll is parked (no run yet), queue one: it must come back with
    # it, long before its 5 s wait would run out.
    wait_for(lambda: api.svc.ctx.notifier.waiting(pool_topic(pool_id)), 5, "the poll to park")
    run = api.client.trigger("s1", RunKind.PROPOSED)
    polling.join(10)
    assert result["poll"].assignment.run.id == run.id  # type: ignore[attr-defined]


def test_a_held_poll_ends_when_its_launcher_closes_the_connection(api: Api):
    """A held poll is its worker's heartbeat: it must not outlive the launcher."""
    pool_id, token, key = api.pool()
    worker = api.worker(pool_id, token, key)
    worker_id = api.svc.auth.check_worker_token(worker.credential).id
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(f"POST /api/v1/worker/poll?wait=60 HTTP/1.1\r\nHost: {host}\r\n"
                     f"Authorization: Bearer {worker.credential}\r\nContent-Length: 0\r\n\r\n".encode())
        wait_for(lambda: api.svc.workers.polls_held(worker_id) == 1, 5, "the poll to be held")
    # The server holds it up to 4-5 s (long_poll 5s): it must end long before.
    wait_for(lambda: api.svc.workers.polls_held(worker_id) == 0, 2, "the poll to end with its connection")
    assert not api.svc.ctx.notifier.waiting(pool_topic(pool_id))


def test_tracked_runs_of_a_stack_wait_for_each_other_but_proposed_runs_do_not(api: Api):
    pool_id, token, key = api.pool()
    api.stack()
    w1, w2, w3 = (api.worker(pool_id, token, key) for _ in range(3))
    first = api.client.trigger("s1", RunKind.TRACKED)
    second = api.client.trigger("s1", RunKind.TRACKED)
    proposed = api.client.trigger("s1", RunKind.PROPOSED)
    a1 = w1.poll(1).assignment
    assert a1 is not None and a1.run.id == first.id
    a2 = w2.poll(1).assignment
    assert a2 is not None and a2.run.id == proposed.id  # the second tracked run is held
    assert w3.poll(0.2).assignment is None
    walk(w1, first.id, a1.lease, S.PREPARING, S.INITIALIZING, S.PLANNING, S.FINISHED)
    a3 = w3.poll(1).assignment
    assert a3 is not None and a3.run.id == second.id


def test_cancel_ends_a_queued_run_and_asks_a_worker_to_stop_a_running_one(api: Api):
    pool_id, token, key = api.pool()
    api.stack()
    queued = api.client.trigger("s1", RunKind.PROPOSED)
    assert api.client.cancel(queued.id).state == S.CANCELED
    assert api.client.cancel(queued.id).state == S.CANCELED  # sent again (a lost answer): it stands
    worker = api.worker(pool_id, token, key)
    running = api.client.trigger("s1", RunKind.PROPOSED)
    lease = worker.poll(1).assignment.lease  # type: ignore[union-attr]
    worker.report(running.id, lease, S.PREPARING)
    assert api.client.cancel(running.id).stop_requested
    assert worker.heartbeat().stop_run
    assert worker.send_logs(running.id, lease, [LogBlock(1, 1.0, "stopping")]).stop_run
    worker.report(running.id, lease, S.STOPPED, "stopped by user")
    assert api.client.run(running.id).state == S.STOPPED
    assert api.client.cancel(running.id).state == S.STOPPED  # the cancel that stopped it, again
    # A run that ended on its own is not canceled after the fact.
    done = api.client.trigger("s1", RunKind.PROPOSED)
    lease = worker.poll(1).assignment.lease  # type: ignore[union-attr]
    walk(worker, done.id, lease, S.PREPARING, S.INITIALIZING, S.PLANNING, S.FINISHED)
    with pytest.raises(Conflict, match="already FINISHED"):
        api.client.cancel(done.id)


def test_a_lost_worker_fails_its_run_and_its_late_reports_are_refused(api: Api):
    pool_id, token, key = api.pool()
    api.stack()
    worker = api.worker(pool_id, token, key)
    run = api.client.trigger("s1", RunKind.TRACKED)
    lease = worker.poll(1).assignment.lease  # type: ignore[union-attr]
    worker.report(run.id, lease, S.PREPARING)
    now = api.svc.ctx.clock()
    lost = api.svc.workers.reap(lost_after=0.0, started_at=now - 100)
    assert len(lost) == 1
    failed = api.client.run(run.id)
    assert failed.state == S.FAILED and failed.reason == "worker lost"
    from runyard.core.errors import WorkerGone

    with pytest.raises(WorkerGone):
        worker.report(run.id, lease, S.INITIALIZING)
    assert api.client.run(run.id).state == S.FAILED
    assert api.client.workers("p1") == []


def test_a_removed_worker_is_refused_at_once_though_its_token_was_just_checked(api: Api):
    """Servers remember a worker's token for up to 30 s; a removal (on any
    server: it moves the worker's topic) ends that at once."""
    from runyard.core.errors import WorkerGone

    pool_id, token, key = api.pool()
    worker = api.worker(pool_id, token, key)
    assert worker.heartbeat().exit_reason == ""  # the token is checked and remembered
    assert worker.heartbeat().exit_reason == ""  # ... and answered from memory
    (worker_id,) = [w.id for w in api.client.workers("p1")]
    api.client.remove_worker(worker_id, "instance terminated")
    with pytest.raises(WorkerGone, match="instance terminated"):
        worker.heartbeat()


def test_silence_while_the_server_was_down_does_not_count(api: Api):
    pool_id, token, key = api.pool()
    api.worker(pool_id, token, key)
    now = api.svc.ctx.clock()
    assert api.svc.workers.reap(lost_after=30.0, started_at=now - 1) == []
    assert len(api.client.workers("p1")) == 1


def test_bad_stack_input_gets_a_clear_4xx_and_makes_nothing(api: Api, tmp_path):
    api.pool()
    upload = SourceIO(kind="upload", upload_id="nope")
    with pytest.raises(InvalidInput, match="no uploaded source"):
        api.client.create_stack(StackCreate(name="s", pool="p1", source=upload, commands={"plan": "x"}))
    api.svc.stacks.allow_local_git = True  # RUNYARD_ALLOW_LOCAL_GIT_SOURCES
    with pytest.raises(InvalidInput, match="cannot read git repository"):
        api.client.create_stack(StackCreate(name="s", pool="p1", commands={"plan": "x"},
                                            source=SourceIO(kind="git", url=f"file://{tmp_path}/missing")))
    with pytest.raises(NotFound, match="no pool"):
        api.stack("s", pool="nope")
    with pytest.raises(InvalidInput, match="too short to mask"):
        api.stack("s", env=[{"name": "PIN", "value": "12", "secret": True}])
    with pytest.raises(InvalidInput, match="not a gzip tar"):
        api.client.upload_source(b"plain text")
    with pytest.raises(NotFound, match="no stack"):
        api.client.trigger("missing")
    assert api.client.stacks() == []


def test_secret_values_are_never_returned_to_api_clients(api: Api):
    api.pool()
    api.stack(env=[{"name": "TOKEN", "value": "very-secret-value", "secret": True},
                   {"name": "PLAIN", "value": "visible"}])
    shown = api.client.stack("s1")
    assert {e.name: e.value for e in shown.env} == {"TOKEN": "", "PLAIN": "visible"}
    assert "very-secret-value" not in api.http.get(
        "/api/v1/stacks", headers={"Authorization": f"Bearer {api.client.credential}"}).text


def test_git_sources_are_checked_and_accepted(api: Api, tmp_path):
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "-c", "user.email=a@b", "-c", "user.name=a",
                                                         "commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(cmd, cwd=repo, check=True)
    api.pool()
    api.svc.stacks.allow_local_git = True  # RUNYARD_ALLOW_LOCAL_GIT_SOURCES
    src = SourceIO(kind="git", url=f"file://{repo}", branch="main")
    api.client.create_stack(StackCreate(name="g", pool="p1", source=src, commands={"plan": "true"}))
    with pytest.raises(InvalidInput, match="no branch"):
        api.client.create_stack(StackCreate(name="g2", pool="p1", commands={"plan": "true"},
                                            source=SourceIO(kind="git", url=f"file://{repo}", branch="nope")))


def test_asking_for_lines_after_any_possible_one_answers_empty_on_every_database(api: Api):
    api.pool()
    api.stack()
    run = api.client.trigger("s1", RunKind.PROPOSED)
    page = api.client.logs(run.id, after=10**12)
    assert page.lines == [] and page.state == RunState.QUEUED
