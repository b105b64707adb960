"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from runyard.core.models import LogLine
from runyard.server.db.dialects import make_engine
from runyard.server.db.migrate import upgrade
from runyard.server.db.repository import Repository
from runyard.server.db.tables import metadata
from runyard.server.services.logs import lines_after


def test_migrations_produce_the_models_schema(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    try:
        upgrade(engine)
        upgrade(engine)  # idempotent: a second start changes nothing
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, metadata)
        assert diff == [], f"the migrations and tables.py differ: {diff}"
    finally:
        engine.dispose()


def test_lines_of_live_runs_move_into_blocks_when_0004_upgrades(empty_database_url: str) -> None:
    """A server upgraded while runs print: their lines (a row each before
    0004) are read back as they were, in order, and the next line numbers on."""
    engine = make_engine(empty_database_url)
    try:
        upgrade(engine, "0003")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO log_lines (run_id, seq, ts, msg) VALUES "
                              "('r1', 1, 10.0, 'one'), ('r1', 2, 11.0, 'two'), ('r2', 1, 12.0, 'other')"))
        upgrade(engine)
        with engine.begin() as conn:
            repo = Repository(conn)
            assert lines_after(repo.log_blocks("r1", 0, 10), 0, 10) == [LogLine(1, 10.0, "one"),
                                                                        LogLine(2, 11.0, "two")]
            assert lines_after(repo.log_blocks("r2", 0, 10), 0, 10) == [LogLine(1, 12.0, "other")]
            assert not inspect(conn).has_table("log_lines")
    finally:
        engine.dispose()


def test_a_claim_reads_its_pools_queue_through_the_queue_index(empty_database_url: str) -> None:
    """Not every waiting run of the pool, sorted: the partial index, in order."""
    from runyard.server.db.repository import _SCHEDULABLE

    engine = make_engine(empty_database_url)
    try:
        upgrade(engine)
        compiled = _SCHEDULABLE.compile(dialect=engine.dialect)
        named = compiled.construct_params({"b_pool": "p1", "b_after": "", "b_limit": 4})
        params = tuple(named[n] for n in compiled.positiontup) if compiled.positiontup else named
        sqlite = engine.dialect.name == "sqlite"
        with engine.connect() as conn:
            if not sqlite:
                conn.exec_driver_sql("SET enable_seqscan = off")  # an empty table: make the planner choose
            rows = conn.exec_driver_sql(("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + compiled.string, params)
            plan = " | ".join(str(row[-1] if sqlite else row[0]) for row in rows)
        assert "ix_runs_waiting" in plan, plan
        assert ("TEMP B-TREE" if sqlite else "Sort") not in plan, plan
    finally:
        engine.dispose()
