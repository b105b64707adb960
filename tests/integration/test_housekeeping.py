"""What the server cleans up on its own, and what it keeps to itself."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runyard.archive import pack_directory
from runyard.config import ServerSettings
from runyard.core.errors import InvalidInput
from runyard.core.states import RunKind, RunState
from runyard.server.app import build_services, create_app
from runyard.server.services.stacks import source_key
from runyard.wire import SourceIO, StackCreate
from tests.conftest import free_port
from tests.integration.conftest import Api, running


def upload(api: Api, tmp_path: Path) -> str:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "main.sh").write_text("echo hi\n")
    return api.client.upload_source(pack_directory(src))


def test_an_upload_left_by_a_failed_stack_create_is_swept_after_the_grace(api: Api, tmp_path: Path):
    api.pool()
    used = upload(api, tmp_path)
    api.client.create_stack(StackCreate(name="kept", pool="p1", source=SourceIO(kind="upload", upload_id=used),
                                        tool="shell", commands={"plan": "true"}))
    orphan = upload(api, tmp_path)
    with pytest.raises(InvalidInput):  # the create fails after the upload
        api.client.create_stack(StackCreate(name="bad", pool="p1", source=SourceIO(kind="upload", upload_id=orphan),
                                            tool="shell", commands={"plan": "true"}, drift_schedule="nope"))
    blobs = api.svc.ctx.blobs
    assert blobs.exists(source_key(orphan))
    assert api.svc.stacks.sweep_uploads(grace=3600) == []  # too young to judge
    assert api.svc.stacks.sweep_uploads(grace=0) == [orphan]
    assert not blobs.exists(source_key(orphan)) and blobs.exists(source_key(used))


@contextlib.contextmanager
def app_with(tmp_path: Path, **settings: str) -> Iterator[httpx.Client]:
    """A server with these settings, on real HTTP."""
    resolved, _ = ServerSettings.resolve({"data_dir": tmp_path / "data", **settings}, env={})
    port = free_port()
    with running(create_app(resolved, build_services(resolved)), port), \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        yield http


def test_metrics_need_the_metrics_token_when_one_is_set(tmp_path: Path):
    with app_with(tmp_path, metrics_token="m3trics-t0ken") as http:
        refused = http.get("/metrics")
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        assert "RUNYARD_METRICS_TOKEN" in refused.json()["message"]
        assert http.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        allowed = http.get("/metrics", headers={"Authorization": "Bearer m3trics-t0ken"})
        assert allowed.status_code == 200 and "runyard_" in allowed.text


def test_metrics_are_open_without_a_token(tmp_path: Path):
    with app_with(tmp_path) as http:
        assert http.get("/metrics").status_code == 200


def test_removed_workers_that_never_ran_anything_are_forgotten_after_an_hour(api: Api):
    import time

    creds = api.pool()
    api.stack()
    api.worker(*creds)  # an idle one, never given a run
    busy = api.worker(*creds)
    run = api.client.trigger("s1", RunKind.PROPOSED)
    assignment = busy.poll(2).assignment
    assert assignment is not None
    busy.report(run.id, assignment.lease, RunState.PREPARING)  # started: the run keeps naming it
    workers = {w.id: w for w in api.client.workers("p1")}
    ran = api.client.run(run.id).worker_id
    for worker_id in workers:
        api.client.remove_worker(worker_id, "removed")
    later = time.time() + 2 * 3600
    api.svc.ctx.clock = lambda: later
    api.svc.workers.reap(60, 0)
    with api.svc.ctx.tx() as repo:
        left = {wid for wid in workers if repo.gone_reason(wid)}
    assert left == {ran}  # the one named by a run is kept for its history
