"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from runyard.server.db.dialects import make_engine
from runyard.server.db.migrate import upgrade
from runyard.server.db.tables import metadata


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
