"""``retention.db.engine_for``: one driver for PostgreSQL whatever the URL's spelling (issue #15)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from retention import schema
from retention.db import engine_for


@pytest.mark.parametrize(
    "url", ["postgresql://u:p@db.example.com/shop", "postgresql+psycopg2://u:p@db.example.com/shop"]
)
def test_a_bare_postgresql_url_is_driven_by_psycopg2(url: str) -> None:
    engine = engine_for(url)
    assert engine.dialect.driver == "psycopg2"
    assert engine.url.render_as_string(hide_password=False).endswith("u:p@db.example.com/shop")


def test_a_night_runs_through_a_bare_postgresql_url(pg_database: str, tmp_path) -> None:
    """The extract's COPY and the bulk upserts (psycopg2's execute_values) on a bare URL."""
    import datetime as dt

    from retention.night import night_for_date
    from retention.pipeline import run_night
    from retention.settings import Settings
    from tests.shop import Shop

    bare = make_url(pg_database).set(drivername="postgresql").render_as_string(hide_password=False)
    settings = Settings(home=tmp_path, warehouse_url=bare, source_url=f"sqlite:///{tmp_path / 'shop.db'}")
    shop = Shop(settings.source)
    shop.product(1)
    shop.customer(1, language="en")
    shop.order(10, 1, dt.datetime(2026, 11, 19, 9, 30))
    shop.item(100, 10, 1, updated_at=dt.datetime(2026, 11, 19, 9, 30))
    run_night(settings, night_for_date("2026-11-20", settings.time_zone), "t1")
    with engine_for(bare).connect() as conn:
        assert list(conn.execute(select(schema.stg_order_items.c.order_item_id)).scalars()) == [100]
        assert list(conn.execute(select(schema.occasions.c.occasion)).scalars()) == ["thank_you"]


@pytest.mark.postgres
def test_postgresql_sessions_run_without_jit_unless_the_operator_sets_options(
    pg_database, monkeypatch
) -> None:
    """JIT compiled for 0.85 of the snapshot query's 2.05 s (issue #15): the pipeline's sessions turn
    it off (and sort in up to 256MB); options in the URL, or PGOPTIONS, are the operator's."""
    from sqlalchemy import text

    def jit(url: str) -> str:
        engine = engine_for(url)
        try:
            with engine.connect() as conn:
                return conn.execute(text("show jit")).scalar_one()
        finally:
            engine.dispose()

    monkeypatch.delenv("PGOPTIONS", raising=False)
    assert jit(pg_database) == "off"
    with engine_for(pg_database).connect() as conn:  # a million customers' sorts in memory
        assert conn.execute(text("show work_mem")).scalar_one() == "256MB"
    with_options = make_url(pg_database).update_query_dict({"options": "-c jit=on"})
    assert jit(with_options.render_as_string(hide_password=False)) == "on"
    monkeypatch.setenv("PGOPTIONS", "-c jit=on")
    assert jit(pg_database) == "on"


def test_empty_table_empties_in_the_callers_transaction_and_a_rollback_restores(warehouse_url) -> None:
    """``empty_table`` (TRUNCATE on PostgreSQL, DELETE elsewhere): the rows are gone inside the
    transaction, back after its rollback, gone for good after a commit; other tables untouched."""
    import datetime as dt

    from sqlalchemy import func, insert

    from retention.db import empty_table

    engine = engine_for(warehouse_url)
    schema.metadata.create_all(engine, tables=[schema.churn_scores, schema.churn_fits])
    scores = schema.churn_scores
    rows = [{"frequency": f, "recency": f, "age": 10 + f, "customers": 1} for f in range(5)]
    with engine.begin() as conn:
        conn.execute(insert(scores), rows)
        conn.execute(
            insert(schema.churn_fits).values(
                night=dt.date(2026, 11, 20), model="bg_nbd", params="{}", customers=5
            )
        )

    def count(conn, table=scores) -> int:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()

    with engine.connect() as conn:
        transaction = conn.begin()
        empty_table(conn, scores)
        assert count(conn) == 0
        transaction.rollback()
        assert count(conn) == 5
    with engine.begin() as conn:
        empty_table(conn, scores)
    with engine.connect() as conn:
        assert count(conn) == 0 and count(conn, schema.churn_fits) == 1
    engine.dispose()


@pytest.mark.postgres
def test_planner_settings_hold_inside_the_block_only(pg_database: str) -> None:
    """``planner_settings``: the setting inside, the transaction's earlier value after (also one the
    transaction had set itself), the session's after the commit; a failing statement inside leaves
    the value to the rollback, which restores the session's."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from retention.db import planner_settings

    engine = engine_for(pg_database)

    def setting(conn, name: str = "enable_mergejoin") -> str:
        return conn.execute(text("select current_setting(:name)"), {"name": name}).scalar_one()

    with engine.connect() as conn:
        with conn.begin():
            conn.execute(text("set local enable_hashjoin = off"))
            with planner_settings(conn, enable_mergejoin="off", enable_hashjoin="on"):
                assert (setting(conn), setting(conn, "enable_hashjoin")) == ("off", "on")
            assert (setting(conn), setting(conn, "enable_hashjoin")) == ("on", "off")
        assert (setting(conn), setting(conn, "enable_hashjoin")) == ("on", "on")
        conn.rollback()  # the reads above began a transaction
        transaction = conn.begin()
        with pytest.raises(DBAPIError), planner_settings(conn, enable_mergejoin="off"):
            conn.execute(text("select 1 / 0"))
        transaction.rollback()
        assert setting(conn) == "on"
    engine.dispose()


def test_planner_settings_change_nothing_on_sqlite(tmp_path) -> None:
    from sqlalchemy import text

    from retention.db import planner_settings

    engine = engine_for(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.begin() as conn, planner_settings(conn, enable_mergejoin="off"):
        assert conn.execute(text("select 1")).scalar_one() == 1
    engine.dispose()
