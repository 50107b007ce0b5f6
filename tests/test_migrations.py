"""The Alembic migrations build exactly the schema model in retention.schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from retention import schema
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


def _compiled(engine, type_) -> str:
    return type_.compile(dialect=engine.dialect).replace(" ", "")


def test_every_column_has_the_models_exact_type(warehouse_url: str) -> None:
    """Stricter than Alembic's type comparison, which lets INTEGER pass for BIGINT."""
    engine = engine_for(warehouse_url)
    upgrade(engine)
    inspector = inspect(engine)
    differences = []
    for table in metadata.sorted_tables:
        found = {c["name"]: _compiled(engine, c["type"]) for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if found[column.name] != _compiled(engine, column.type):
                differences.append((table.name, column.name, found[column.name]))
    assert differences == []
    engine.dispose()


def test_source_ids_past_32_bits_fit_every_id_column(warehouse_url: str) -> None:
    engine = engine_for(warehouse_url)
    upgrade(engine)
    big = 2**63 - 1
    with engine.begin() as conn:
        conn.execute(schema.changed_customers.insert().values(night=dt.date(2026, 11, 20), customer_id=big))
        stored = conn.execute(select(schema.changed_customers.c.customer_id)).scalar()
    assert stored == big
    engine.dispose()


def test_upgrading_from_0001_keeps_quarantine_rows_as_their_first_copy(warehouse_url: str) -> None:
    engine = engine_for(warehouse_url)
    upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "insert into quarantine (source_table, source_key, rule, detail, row_hash, raw, night, run_id)"
                " values ('customers', '2', 'malformed_email', 'x', 'h', '{}', '2026-11-20', 'r')"
            )
        )
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(select(schema.quarantine.c.occurrence)).scalars().all() == [1]
    engine.dispose()
