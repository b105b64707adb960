"""Everything that differs between SQLite and PostgreSQL lives here."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.sql.dml import Insert

from runyard.core.errors import DatabaseUnavailable, RunyardError, StorageFull


def make_engine(url: str) -> Engine:
    """An engine for ``url``; ``postgresql://`` URLs use psycopg 3."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        # Enough pooled connections for every thread of the server (anyio's
        # 40 and the loops): a connection opened beyond the pool is closed on
        # return, and a new one pays for its schema parse and cold cache.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=48,
            max_overflow=16,
        )
        _serialize_sqlite_writes(engine)
        return engine
    # Two servers' pools (and their LISTEN connections) fit PostgreSQL's default 100 connections.
    engine = create_engine(url, pool_size=32, max_overflow=8)
    _ping_idle_connections(engine)
    return engine


# A pooled PostgreSQL connection unused this long is pinged before it is
# handed out (the server may have restarted, a firewall dropped it). One
# used more recently is not: under load that ping was a round trip in
# every transaction (benchmarks/dispatch.py --db postgres shows it).
# If such a connection turns out dead, its request fails (clients retry)
# and SQLAlchemy replaces every connection of the pool that predates it.
PING_AFTER_IDLE = 1.0


def _ping_idle_connections(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["returned"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get("returned")
        if returned is None or time.monotonic() - returned < PING_AFTER_IDLE:
            return  # new, or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"a pooled connection is dead: {exc}") from exc


def _serialize_sqlite_writes(engine: Engine) -> None:
    # pysqlite's lazy BEGIN lets two writers read the same snapshot and then
    # fail to upgrade their locks. BEGIN IMMEDIATE takes the write lock up
    # front so concurrent transactions queue behind busy_timeout instead.
    # Read-only transactions (Context.read) begin deferred: in WAL mode they
    # read a snapshot without taking the write lock.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # On the driver's connection itself, not through SQLAlchemy's
        # execution path: a one-query transaction is mostly that path.
        read_only = conn.get_execution_options().get("runyard_read_only")
        conn.connection.driver_connection.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")


def insert_ignoring_duplicates(engine_dialect: str, table: Table) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` in the dialect's own words."""
    if engine_dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


_FULL = ("database or disk is full", "no space left on device", "could not extend file", "disk full")
# SQLSTATE classes of a server that is going away or not there yet: 08
# (connection), 57P (operator intervention: shutdown, restart), 53 (resources).
_UNAVAILABLE_STATES = ("08", "57P", "53")


def translate(exc: DBAPIError) -> RunyardError | None:
    """What a database error means to a client, if it is not a bug: the
    database is full (SQLite's file or PostgreSQL's disk), or it cannot be
    reached (restarting, down). None: an error of ours, a 500."""
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    lowered = detail.lower()
    state = str(getattr(exc.orig, "sqlstate", "") or "")
    if any(text in lowered for text in _FULL) or state == "53100":
        return StorageFull(f"the server's database is full ({detail}): nothing was stored; "
                           "free space on its disk, then send it again")
    if exc.connection_invalidated or state.startswith(_UNAVAILABLE_STATES) or (
            exc.orig is not None and type(exc.orig).__name__ == "OperationalError" and "sqlite" not in
            type(exc.orig).__module__):
        return DatabaseUnavailable(f"the database is unavailable ({detail}): try again shortly")
    return None
