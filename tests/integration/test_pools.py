"""Pool life cycle and metrics through the API, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import httpx
import pytest

from runyard.core.errors import NotFound, Unauthorized, WorkerGone
from runyard.core.models import LogBlock
from runyard.core.states import RunKind, RunState
from runyard.crypto import generate_key, make_csr
from runyard.server.notifier import pool_topic
from runyard.wire import PoolUpdate
from tests.harness import wait_for
from tests.integration.conftest import Api, walk


def test_cycle_answers_idle_polls_at_once_and_busy_workers_by_heartbeat(api: Api):
    pool_id, token, key = api.pool()
    api.stack()
    idle, busy = api.worker(pool_id, token, key), api.worker(pool_id, token, key)
    run = api.client.trigger("s1", RunKind.PROPOSED)
    lease = busy.poll(2).assignment.lease  # type: ignore[union-attr]
    result: dict[str, object] = {}
    polling = threading.Thread(target=lambda: result.update(poll=idle.poll(5)))
    polling.start()
    wait_for(lambda: api.svc.ctx.notifier.waiting(pool_topic(pool_id)), 5, "the idle poll to park")
    assert api.client.cycle_pool("p1") == 2
    polling.join(10)
    assert result["poll"].exit_reason == "cycled"  # type: ignore[attr-defined]
    assert busy.heartbeat().exit_reason == "cycled"
    walk(busy, run.id, lease, RunState.PREPARING, RunState.INITIALIZING, RunState.PLANNING, RunState.FINISHED)
    assert busy.poll(1).exit_reason == "cycled"  # no new work after the run


def test_reset_refuses_the_old_certificate_at_once(api: Api):
    pool_id, token, key = api.pool()
    api.stack()
    worker = api.worker(pool_id, token, key)
    run = api.client.trigger("s1", RunKind.TRACKED)
    lease = worker.poll(2).assignment.lease  # type: ignore[union-attr]
    worker.report(run.id, lease, RunState.PREPARING)
    new_key = generate_key(2048)
    created = api.client.reset_pool("p1", make_csr(new_key).decode())
    assert created.token != token
    with pytest.raises(WorkerGone, match="the pool was reset"):
        worker.heartbeat()
    failed = api.client.run(run.id)
    assert failed.state == RunState.FAILED and failed.reason == "the pool was reset"
    with pytest.raises(Unauthorized, match="the pool was reset"):
        api.worker(pool_id, token, key)  # registering with the old token and key
    api.worker(pool_id, created.token, new_key)
    assert len(api.client.workers("p1")) == 1


def test_a_drained_worker_finishes_its_run_and_takes_no_new_one(api: Api):
    pool_id, token, key = api.pool()
    api.stack()
    worker = api.worker(pool_id, token, key)
    first = api.client.trigger("s1", RunKind.PROPOSED)
    lease = worker.poll(2).assignment.lease  # type: ignore[union-attr]
    worker_id = api.client.workers("p1")[0].id
    assert api.client.drain(worker_id).status == "DRAINED"
    api.client.trigger("s1", RunKind.PROPOSED)
    walk(worker, first.id, lease, RunState.PREPARING, RunState.INITIALIZING, RunState.PLANNING, RunState.FINISHED)
    assert worker.poll(0.5).assignment is None
    assert api.client.pool("p1").queue_length == 1
    assert api.client.drain(worker_id, False).status == "IDLE"
    assert worker.poll(2).assignment is not None
    with pytest.raises(NotFound):
        api.client.drain("01NOSUCHWORKER")


def test_pool_settings_and_summary(api: Api):
    api.pool()
    updated = api.client.update_pool("p1", PoolUpdate(description="**GPU** hosts", labels=["gpu", "eu"],
                                                      drift_detection_limit=3))
    assert (updated.description, updated.labels, updated.drift_detection_limit) == ("**GPU** hosts", ["gpu", "eu"], 3)
    assert api.client.update_pool("p1", PoolUpdate(drift_detection_limit=0)).drift_detection_limit is None
    assert api.client.pools()[0].workers == {"IDLE": 0, "BUSY": 0, "DRAINED": 0}


def test_metrics_show_queues_workers_and_run_outcomes(api: Api):
    pool_id, token, key = api.pool()
    api.stack()
    worker = api.worker(pool_id, token, key)
    run = api.client.trigger("s1", RunKind.PROPOSED)
    api.client.trigger("s1", RunKind.PROPOSED)
    lease = worker.poll(2).assignment.lease  # type: ignore[union-attr]
    worker.send_logs(run.id, lease, [LogBlock(1, 1.0, "x")])
    walk(worker, run.id, lease, RunState.PREPARING, RunState.INITIALIZING, RunState.PLANNING, RunState.FINISHED)
    text = httpx.get(f"{api.url}/metrics").text
    assert 'runyard_runs_pending{pool="p1"} 1.0' in text
    assert 'runyard_workers{pool="p1",status="IDLE"} 1.0' in text
    assert 'runyard_runs_ended_total{pool="p1",state="FINISHED"} 1.0' in text
    assert 'runyard_run_queue_seconds_count{pool="p1"} 1.0' in text
    assert 'runyard_run_duration_seconds_count{pool="p1",state="FINISHED"} 1.0' in text
