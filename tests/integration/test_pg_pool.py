"""PostgreSQL connections in the server's pool: pinged only after they
idled, and a dead one costs at most one request."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, exc, text

from runyard.devstack import PostgresCluster
from runyard.server.db import dialects
from runyard.server.db.dialects import make_engine


def backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def pings_of(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The backend of each connection pinged from now on."""
    pinged: list[int] = []
    real = engine.dialect.do_ping

    def ping(dbapi_conn: Any) -> bool:
        pinged.append(dbapi_conn.info.backend_pid)
        return bool(real(dbapi_conn))

    monkeypatch.setattr(engine.dialect, "do_ping", ping)
    return pinged


def kill(postgres: PostgresCluster, pid: int) -> None:
    with psycopg.connect(postgres.url(), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def test_a_pooled_connection_that_died_while_idle_is_replaced_before_use(
        postgres: PostgresCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(postgres.new_database())
    try:
        first = backend_pid(engine)
        kill(postgres, first)
        monkeypatch.setattr(dialects, "PING_AFTER_IDLE", 0.0)  # as if it idled
        pings = pings_of(engine, monkeypatch)
        assert backend_pid(engine) != first  # no error: the ping found it dead
        assert pings == [first]
    finally:
        engine.dispose()


def test_a_connection_used_a_moment_ago_is_not_pinged_and_a_dead_one_fails_one_request(
        postgres: PostgresCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(postgres.new_database())
    monkeypatch.setattr(dialects, "PING_AFTER_IDLE", 3600.0)
    pings = pings_of(engine, monkeypatch)
    try:
        first = backend_pid(engine)
        assert backend_pid(engine) == first
        assert pings == []  # not a round trip more in a busy server's transactions
        kill(postgres, first)
        with pytest.raises(exc.OperationalError):
            backend_pid(engine)
        assert backend_pid(engine) != first  # the pool replaced it
    finally:
        engine.dispose()
