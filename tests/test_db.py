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
