"""Every input has a limit and a clear refusal, over real HTTP; nothing is stored."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runyard.config import LauncherSettings
from runyard.core import limits
from runyard.core.states import RunKind, RunState
from runyard.launcher.executors.process import ProcessExecutor
from runyard.launcher.launcher import Launcher
from tests.harness import wait_for
from tests.integration.conftest import ADMIN, Api, b64key

RUNS = "/api/v1/stacks/s1/runs"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
JSON = {**AUTH, "content-type": "application/json"}


def runs_of(api: Api) -> int:
    return len(api.client.runs("s1"))


def test_a_10_mb_body_is_refused_with_413_before_it_is_read(api: Api):
    api.pool()
    api.stack()
    body = json.dumps({"kind": "TASK", "command": "x" * (10 * limits.MIB)})
    resp = api.http.post(RUNS, content=body, headers=JSON)
    assert resp.status_code == 413
    assert resp.json() == {"error": "too_large",
                           "message": "a request body may be at most 1 MiB: this one is larger and was refused"}
    assert runs_of(api) == 0


def test_a_chunked_body_without_a_length_is_cut_off_at_the_limit(api: Api):
    api.pool()
    api.stack()

    def chunks() -> Iterator[bytes]:
        yield b'{"kind": "TASK", "command": "'
        for _ in range(3):
            yield b"x" * limits.MIB
        yield b'"}'

    resp = api.http.post(RUNS, content=chunks(), headers=JSON)
    assert resp.status_code == 413 and resp.json()["error"] == "too_large"
    assert runs_of(api) == 0


@pytest.mark.parametrize(("field", "body"), [
    ("command", {"kind": "TASK", "command": "x" * (limits.MAX_COMMAND + 1)}),
])
def test_a_field_over_its_limit_is_a_422_naming_it(api: Api, field: str, body: dict[str, object]):
    api.pool()
    api.stack()
    resp = api.http.post(RUNS, json=body, headers=AUTH)
    assert resp.status_code == 422
    assert resp.json()["error"] == "invalid" and resp.json()["message"].startswith(f"{field}: ")
    assert runs_of(api) == 0


def test_stack_fields_over_their_limits_are_refused_and_nothing_is_made(api: Api):
    api.pool()
    big = "v" * (limits.MAX_VARIABLE_VALUE + 1)
    cases: dict[str, dict[str, Any]] = {
        "variable V is longer than 64 KiB": {"env": [{"name": "V", "value": big}]},
        "the variables together are longer than 512 KiB": {
            "env": [{"name": f"V{i}", "value": "v" * limits.MAX_VARIABLE_VALUE} for i in range(9)]},
        "labels": {"labels": ["l"] * (limits.MAX_LABELS + 1)},
        "commands.plan": {"commands": {"plan": "x" * (limits.MAX_COMMAND + 1)}},
        "hooks.before_plan": {"hooks": {"before_plan": ["true"] * (limits.MAX_HOOKS_PER_PHASE + 1)}},
        "source.url is longer": {"source": {"kind": "git", "url": "https://x/" + "a" * limits.MAX_TEXT}},
    }
    for expected, extra in cases.items():
        body = {"name": "big", "pool": "p1", "source": {"kind": "git", "url": "https://example.invalid/r.git"},
                "tool": "shell", "commands": {"plan": "true"}, **extra}
        resp = api.http.post("/api/v1/stacks", json=body, headers=AUTH)
        assert resp.status_code == 422, (expected, resp.text)
        assert expected in resp.json()["message"], (expected, resp.json())
    assert api.client.stacks() == []


def test_pool_description_over_its_limit_is_refused(api: Api):
    body = {"name": "p", "csr": "x", "description": "d" * (limits.MAX_DESCRIPTION + 1)}
    resp = api.http.post("/api/v1/pools", json=body, headers=AUTH)
    assert resp.status_code == 422 and resp.json()["message"].startswith("description: ")
    assert api.client.pools() == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/api/v1/pools", RUNS, "/api/v1/worker/register", "/api/v1/nope"]),
       body=st.one_of(st.binary(max_size=64), st.text(max_size=64).map(str.encode)))
def test_any_garbage_body_gets_a_4xx_in_the_one_error_shape(api: Api, path: str, body: bytes):
    resp = api.http.post(path, content=body, headers=JSON)
    assert 400 <= resp.status_code < 500
    doc = resp.json()
    assert set(doc) == {"error", "message"} and doc["message"] and "\n" not in doc["message"]


def test_invalid_json_and_unknown_paths_answer_in_the_one_error_shape(api: Api):
    bad = api.http.post("/api/v1/pools", content=b'{"name": ', headers=JSON)
    assert bad.status_code == 422
    assert bad.json()["error"] == "invalid" and bad.json()["message"].startswith("the request body is not valid JSON")
    missing = api.http.get("/api/v1/runs/../../etc/passwd", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert "no such path" in missing.json()["message"]
    wrong = api.http.delete("/api/v1/pools", headers=AUTH)
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"


def test_a_run_the_host_cannot_start_fails_with_one_line_and_the_launcher_goes_on(api: Api, tmp_path: Path):
    _, token, key = api.pool()
    api.stack()
    settings_, _ = LauncherSettings.resolve(
        {"token": token, "pool_private_key": b64key(key), "work_dir": tmp_path / "w", "executor": "process",
         "endpoints": api.url, "long_poll": "5s", "whitelist_envs": "HUGE"}, env={})
    # One variable over exec's 128 KiB per-string limit: the command cannot start.
    launcher = Launcher(settings_, ProcessExecutor(), env={"HUGE": "h" * (200 * limits.KIB),
                                                           "PATH": os.environ["PATH"]})
    thread = threading.Thread(target=launcher.run, daemon=True)
    thread.start()
    try:
        first = api.client.trigger("s1", RunKind.PROPOSED)
        wait_for(lambda: api.client.run(first.id).state.terminal, 60, "the run to end")
        failed = api.client.run(first.id)
        assert failed.state == RunState.FAILED
        assert failed.reason == ("plan command could not start: the command and the run's variables are larger "
                                 "than this host lets a process start with (Argument list too long)")
        assert launcher.worker_id in {w.id for w in api.client.workers("p1")}  # still serving
    finally:
        launcher.interrupt()
        thread.join(30)
