"""Every refusal, wherever it is made, goes out in the one error shape."""

from __future__ import annotations

import asyncio
import json

from starlette.requests import Request

from runyard.core.errors import Standby, WorkerGone
from runyard.server import errors


def _answer(exc: Exception, path: str = "/api/v1/worker/poll") -> tuple[int, dict[str, str], dict[str, str]]:
    request = Request({"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""})
    response = asyncio.run(errors.runyard_error(request, exc))  # type: ignore[arg-type]
    return response.status_code, json.loads(bytes(response.body)), dict(response.headers)


def test_a_standby_refusal_made_inside_a_claim_names_the_primary_as_the_gate_does() -> None:
    status, body, headers = _answer(Standby("https://primary.example:8765", retry_after=3))
    assert status == 503
    assert body == {"error": "standby", "primary": "https://primary.example:8765",
                    "message": "this runyard server is a standby; the primary serves at https://primary.example:8765"}
    assert headers["retry-after"] == "3" and headers["x-runyard-primary"] == "https://primary.example:8765"
    gate = json.loads(errors.error_json("standby", body["message"], **errors.extra_of(Standby(body["primary"]))))
    assert gate == body


def test_a_removed_worker_is_told_why() -> None:
    _, body, _ = _answer(WorkerGone("this worker was removed (scaled in)", reason="scaled in"))
    assert body == {"error": "worker_gone", "message": "this worker was removed (scaled in)", "reason": "scaled in"}
