"""A full or unreachable database is an answer of its own, not a bug."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from sqlalchemy.exc import OperationalError

from runyard.core.errors import DatabaseUnavailable, StorageFull
from runyard.server.db.dialects import translate

from .conftest import World


def _error(orig: Exception) -> OperationalError:
    return OperationalError("INSERT INTO runs ...", {}, orig)


def test_a_full_database_or_disk_is_storage_full_and_an_unreachable_one_unavailable() -> None:
    full = translate(_error(sqlite3.OperationalError("database or disk is full")))
    assert isinstance(full, StorageFull) and full.http_status == 503 and full.retry_after > 0
    assert "database or disk is full" in full.message and "nothing was stored" in full.message
    gone = translate(_error(psycopg.OperationalError("connection refused: is the server running?")))
    assert isinstance(gone, DatabaseUnavailable) and gone.code == "database_unavailable"
    assert translate(_error(sqlite3.OperationalError("no such table: runs"))) is None  # a bug: a 500


def test_a_transaction_the_database_refuses_for_room_raises_storage_full_and_is_logged_once(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    for _ in range(3):
        with pytest.raises(StorageFull), world.svc.ctx.tx():
            raise _error(sqlite3.OperationalError("database or disk is full"))
    assert [r.getMessage() for r in caplog.records].count(
        "the server's database is full (database or disk is full): nothing was stored; free space on its disk, "
        "then send it again") == 1
    assert isinstance(world.svc.ctx.trouble.now(world.clock()), StorageFull)
    world.clock.advance(world.svc.ctx.trouble.RECENT + 1)
    assert world.svc.ctx.trouble.now(world.clock()) is None  # over: /readyz says ready again
