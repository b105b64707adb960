"""A server whose database is full refuses what it cannot store with a 503
that says so, and keeps serving reads; nothing stored before is lost."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from runyard.core.errors import StorageFull
from runyard.core.states import RunKind
from tests.integration.conftest import ADMIN, Api

AUTH = {"Authorization": f"Bearer {ADMIN}"}


def _fill(api: Api) -> None:
    """Every connection of the server's engine may not grow the file by a page."""
    engine = api.svc.ctx.engine

    @event.listens_for(engine, "connect")
    def _limit(dbapi_conn: object, _record: object) -> None:
        cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
        pages = cursor.execute("PRAGMA page_count").fetchone()[0]
        cursor.execute(f"PRAGMA max_page_count = {pages}")
        cursor.close()

    engine.dispose()  # pooled connections are opened again, with the limit


# A full disk is made here with SQLite's max_page_count; PostgreSQL's "disk
# full" (SQLSTATE 53100) takes the same path (tests/unit/test_storage_errors.py).
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_full_database_answers_503_with_the_reason_and_still_serves_reads(api: Api):
    api.pool()
    api.stack()
    before = api.client.trigger("s1", RunKind.PROPOSED)
    _fill(api)
    refused = []
    for _ in range(200):
        resp = api.http.post("/api/v1/stacks/s1/runs", json={"kind": "TASK", "command": "x" * 2000}, headers=AUTH)
        if resp.status_code != 201 and resp.status_code != 200:
            refused.append(resp)
            break
    assert refused, "the database never filled"
    resp = refused[0]
    assert resp.status_code == 503 and resp.headers["retry-after"] == "30"
    assert resp.json()["error"] == "storage_full" and "database or disk is full" in resp.json()["message"]
    assert api.client.run(before.id).id == before.id  # reads go on, nothing stored before is lost
    ready = api.http.get("/readyz")
    assert ready.status_code == 503 and "database is full" in ready.text
    with pytest.raises(StorageFull, match="database is full"):  # the CLI's one line (exit 6)
        api.client.trigger("s1", RunKind.TASK, command="x" * 2000)
