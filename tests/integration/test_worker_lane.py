"""The launchers' hot routes are served by the worker lane, not FastAPI's
router, and answer exactly as FastAPI's routes did: the same bodies, the
same refusals in the one error shape."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute

from runyard.core.models import LogBlock, RunEnd
from runyard.core.states import RunKind
from runyard.core.states import RunState as S
from runyard.wire import API
from tests.integration.conftest import Api


def routed_by_fastapi(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths FastAPI's router hands to a route from now on."""
    paths: list[str] = []
    real = APIRoute.handle

    async def handle(self: APIRoute, scope: dict[str, object], receive: object, send: object) -> None:
        paths.append(str(scope["path"]))
        await real(self, scope, receive, send)  # type: ignore[arg-type]

    monkeypatch.setattr(APIRoute, "handle", handle)
    return paths


def test_a_runs_worker_requests_never_reach_the_router(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    pool_id, token, key = api.pool()
    api.stack()
    worker = api.worker(pool_id, token, key)
    run = api.client.trigger("s1", RunKind.PROPOSED)
    routed = routed_by_fastapi(monkeypatch)
    poll = worker.poll(1)
    assert poll.assignment is not None
    lease = poll.assignment.lease
    assert worker.report(run.id, lease, S.PREPARING).state == S.PREPARING
    assert not worker.heartbeat().stop_run
    assert worker.send_logs(run.id, lease, [LogBlock(1, 1.0, "one")]).stop_run is False
    worker.report(run.id, lease, S.INITIALIZING)
    worker.report(run.id, lease, S.PLANNING)
    worker.send_logs(run.id, lease, [LogBlock(2, 2.0, "two")], RunEnd(S.FINISHED))
    assert routed == []
    assert api.client.run(run.id).state == S.FINISHED  # and the rest goes through the router
    assert routed == [f"{API}/runs/{run.id}"]
    assert [ln.msg for ln in api.client.logs(run.id).lines] == ["one", "two"]


def test_the_lanes_refusals_have_the_one_error_shape(api: Api) -> None:
    pool_id, token, key = api.pool()
    api.stack()
    worker = api.worker(pool_id, token, key)
    run = api.client.trigger("s1", RunKind.PROPOSED)
    lease = worker.poll(1).assignment.lease  # type: ignore[union-attr]
    auth = {"Authorization": f"Bearer {worker.credential}"}
    transition = f"{API}/worker/runs/{run.id}/transition"

    anonymous = api.http.post(f"{API}/worker/heartbeat")
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "unauthorized"
    not_json = api.http.post(transition, content=b"{nope", headers={**auth, "Content-Type": "application/json"})
    assert not_json.status_code == 422
    assert not_json.json()["message"].startswith("the request body is not valid JSON")
    no_state = api.http.post(transition, json={"lease": lease}, headers=auth)
    assert no_state.status_code == 422 and no_state.json() == {"error": "invalid", "message": "state: Field required"}
    stale = api.http.post(transition, json={"lease": lease + 1, "state": "PREPARING"}, headers=auth)
    assert stale.status_code == 409 and stale.json()["error"] == "stale_lease"
    unknown = api.http.post(f"{API}/worker/runs/01NOSUCHRUN/logs", json={"lease": 1, "blocks": []}, headers=auth)
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
    # What the lane does not take, FastAPI answers as it always did.
    bad_wait = api.http.post(f"{API}/worker/poll?wait=soon", headers=auth)
    assert bad_wait.status_code == 422 and bad_wait.json()["message"].startswith("wait: ")
    wrong_method = api.http.get(f"{API}/worker/poll", headers=auth)
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "method_not_allowed"
    assert api.client.run(run.id).state == S.READY  # nothing above moved the run


def test_the_lane_and_fastapi_answer_every_request_alike(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """One declaration of each route's parameters and checks, whichever path
    serves the request: each request is sent through the lane, then with
    the lane stepping aside, and the answers compared."""
    from runyard.server.api import lane

    pool_id, token, key = api.pool()
    api.stack()
    worker = api.worker(pool_id, token, key)
    auth = {"Authorization": f"Bearer {worker.credential}"}
    body = {**auth, "Content-Type": "application/json"}
    run_path = f"{API}/worker/runs/01NOSUCHRUN"
    requests: list[tuple[str, dict[str, str], bytes]] = [
        *((f"{API}/worker/poll?wait={w}", auth, b"") for w in
          ("nan", "inf", "-inf", "1e999", "-1", "soon", "0", "0.0")),
        (f"{run_path}/transition", body, b"{nope"),
        (f"{run_path}/transition", body, b'{"lease": 1}'),
        (f"{run_path}/transition", body, b'{"lease": "x", "state": "PREPARING"}'),
        (f"{run_path}/transition", body, b'{"lease": 1, "state": "NOPE"}'),
        (f"{run_path}/transition", body, b'{"lease": 1, "state": "PREPARING", "extra": 1}'),
        (f"{run_path}/transition", body, b'{"lease": 1, "state": "PLANNING", "via": ["INITIALIZING", "INITIALIZING", '
                                         b'"INITIALIZING", "INITIALIZING", "INITIALIZING"]}'),
        (f"{run_path}/transition", body, b'{"lease": 1, "state": "PREPARING"}'),
        (f"{run_path}/logs", body, b'{"lease": 1, "blocks": [{"seq": 1, "ts": NaN, "text": "x"}]}'),
        (f"{run_path}/logs", body, b'{"blocks": []}'),
        (f"{run_path}/logs", body, b'{"lease": 1, "blocks": [{"seq": 0, "ts": 1, "text": "x"}]}'),
        (f"{run_path}/logs", body, b'{"lease": 1, "blocks": []}'),
        (f"{API}/worker/heartbeat", {}, b""),
    ]

    def answers() -> list[tuple[int, object]]:
        out: list[tuple[int, object]] = []
        for path, headers, content in requests:
            resp = api.http.post(path, headers=headers, content=content)
            out.append((resp.status_code, resp.json()))
        return out

    routed = routed_by_fastapi(monkeypatch)
    through_lane = answers()
    assert routed == [f"{API}/worker/poll"] * 6  # the lane took every request but the refused waits
    monkeypatch.setattr(lane, "_handler", lambda scope: None)
    through_fastapi = answers()
    assert [(r, a) for r, a, b in zip(requests, through_lane, through_fastapi, strict=True) if a != b] == []
    assert {status for status, _ in through_lane} >= {401, 404, 422}
