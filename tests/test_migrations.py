"""The Alembic migrations build exactly the schema model in retention.schema, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from retention.db import engine_for
from retention.migrate import upgrade
from retention.schema import metadata


def test_migrations_match_the_schema_model(warehouse_url: str) -> None:
    engine = engine_for(warehouse_url)
    upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []
    engine.dispose()


def test_upgrading_twice_is_a_no_op(warehouse_url: str) -> None:
    engine = engine_for(warehouse_url)
    upgrade(engine)
    tables = set(inspect(engine).get_table_names())
    upgrade(engine)
    assert set(inspect(engine).get_table_names()) == tables
    assert {"stg_customers", "quarantine", "run_log", "outbox", "segment_snapshots"} <= tables
    engine.dispose()
