"""Issue #15: on PostgreSQL the extract refreshes the planner's statistics of a staging table that a
night's load changed by more than a tenth (a first night, a full refresh), and leaves them to
autovacuum on an ordinary night."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, text

from retention import schema
from retention.pipeline import warehouse_engine
from tests.conftest import shop_settings
from tests.test_rule_counts import START, _night, _RandomShop


def _estimates(engine) -> dict[str, float]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("select relname, reltuples from pg_class where relname in ('stg_orders', 'stg_order_items')")
        )
        return dict(rows.all())


def _counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (schema.stg_orders, schema.stg_order_items)
        }


@pytest.mark.postgres
def test_a_first_night_analyses_staging_and_an_ordinary_night_does_not(tmp_path, pg_database) -> None:
    settings = shop_settings(tmp_path, pg_database)
    shop = _RandomShop(settings, 17)
    engine = warehouse_engine(settings.warehouse)
    shop.day(START, new_customers=20, new_orders=200)
    _night(settings, START, "n0")
    first = _counts(engine)
    # ANALYZE reads every row of a table this small: the planner's estimate is the exact count.
    assert _estimates(engine) == {name: float(n) for name, n in first.items()}
    shop.day(START + dt.timedelta(days=1), new_customers=1, new_orders=3)
    _night(settings, START + dt.timedelta(days=1), "n1")
    assert _counts(engine) != first  # the night added orders...
    assert _estimates(engine) == {name: float(n) for name, n in first.items()}  # ...statistics unchanged
