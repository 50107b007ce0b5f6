"""Issue #15: a first load COPYs straight into the empty staging tables (no landing table, no
``ON CONFLICT``), with the same result as the upsert; should a key be staged after all, the chunk
is upserted as on any other night instead of failing the night."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from sqlalchemy import select

from retention import extract, schema
from retention.night import night_for_date
from retention.pipeline import stage_extract, stage_migrate, warehouse_engine
from retention.source import source_engine
from tests.conftest import shop_settings
from tests.shop import T0, Shop

pytestmark = pytest.mark.postgres

NIGHT = night_for_date(T0.date() + dt.timedelta(days=1), "Europe/Berlin")


def _staged(settings) -> dict[int, str]:
    customers = schema.stg_customers
    with warehouse_engine(settings.warehouse).connect() as conn:
        return dict(conn.execute(select(customers.c.customer_id, customers.c.first_name)).all())


def test_a_first_load_into_empty_tables_equals_the_upsert_of_the_same_rows(tmp_path, pg_database) -> None:
    settings = shop_settings(tmp_path, pg_database)
    shop = Shop(settings.source)
    shop.product(1)
    for customer_id in range(1, 8):
        shop.customer(customer_id, first_name=f" Padded {customer_id} ")
        shop.order(customer_id * 10, customer_id, T0)
        shop.item(customer_id * 100, customer_id * 10, 1, updated_at=T0)
    shop.customer(99, first_name="")  # quarantined (missing_name), never staged
    stage_migrate(settings)
    assert all(extract._is_empty(warehouse_engine(settings.warehouse), name) for name in schema.STAGING)
    counts = stage_extract(settings, NIGHT, "first")
    assert counts["rows"] == {"customers": 7, "products": 1, "orders": 7, "order_items": 7}
    assert counts["quarantined"] == {"missing_name": 1}
    first = _staged(settings)
    assert first == {n: f"Padded {n}" for n in range(1, 8)}  # tidied as the upsert tidies
    # The same window again meets every key staged: the upsert path, and nothing changes.
    assert not extract._is_empty(warehouse_engine(settings.warehouse), "customers")
    stage_extract(settings, NIGHT, "again")
    assert _staged(settings) == first


def test_a_first_load_meeting_a_staged_key_upserts_the_chunk(tmp_path, pg_database, caplog) -> None:
    settings = shop_settings(tmp_path, pg_database)
    shop = Shop(settings.source)
    shop.customer(1)
    stage_migrate(settings)
    stage_extract(settings, NIGHT, "first")
    # Customer 1 renamed later (the shop holds both copies; the older is quarantined as a
    # duplicate), customer 2 new: a chunk read as if the table had been empty.
    shop.customer(1, first_name="Renamed", updated_at=T0 + dt.timedelta(hours=1))
    shop.customer(2, updated_at=T0 + dt.timedelta(hours=1))
    engine = source_engine(settings.source)
    (rows,) = list(extract._source_rows(engine, "customers", None, NIGHT.window_end_naive, 100))
    engine.dispose()
    chunk, previous = extract._Chunk(), None
    for row in rows:
        previous = extract._sort_row("customers", "customer_id", row, previous, NIGHT.window_end_naive, chunk)
    assert [row["customer_id"] for row, _ in chunk.good] == [1, 2]
    assert [v.rule for _, v in chunk.bad] == ["duplicate_key"]
    warehouse = warehouse_engine(settings.warehouse)
    with caplog.at_level(logging.WARNING, logger="retention.extract"), warehouse.begin() as conn:
        extract._write(conn, "customers", chunk, NIGHT, "r", settings, extract._Copies(), True, True)
    assert _staged(settings) == {1: "Renamed", 2: "Name2"}
    assert "a key of a first load was staged already" in caplog.text
