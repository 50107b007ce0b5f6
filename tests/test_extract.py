"""Extract: incremental windows, watermark, quarantine rules, idempotency (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import func, select

from retention import schema
from retention.night import night_for_date
from retention.pipeline import QualityError, stage_extract, stage_migrate, stage_quality, warehouse_engine
from tests.shop import Shop

DAY1 = dt.datetime(2026, 11, 19, 10, 0)  # inside night 2026-11-20's window (Berlin)
DAY2 = dt.datetime(2026, 11, 20, 10, 0)  # inside night 2026-11-21's window


def _count(settings, table) -> int:
    with warehouse_engine(settings.warehouse).connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def _quarantine(settings) -> list[tuple[str, str, str]]:
    q = schema.quarantine
    with warehouse_engine(settings.warehouse).connect() as conn:
        return sorted(conn.execute(select(q.c.source_table, q.c.source_key, q.c.rule)).all())


@pytest.fixture
def shop(settings) -> Shop:
    stage_migrate(settings)
    return Shop(settings.source)


def test_good_rows_load_and_bad_rows_are_quarantined_with_their_rule(settings, shop) -> None:
    shop.customer(1, updated_at=DAY1)
    shop.customer(2, updated_at=DAY1, email="not-an-address")
    shop.customer(3, updated_at=DAY1, first_name="  ")
    shop.customer(4, updated_at=DAY1, last_name="Bell\x07")
    shop.product(10)
    shop.order(100, 1, DAY1)
    shop.order(101, 999, DAY1)  # unknown customer
    shop.order(102, 1, DAY1 + dt.timedelta(days=400), updated_at=DAY1)  # ordered in the future
    shop.item(1000, 100, 10, updated_at=DAY1)
    shop.item(1001, 100, 10, quantity=-2, updated_at=DAY1)
    shop.item(1002, 100, 77, updated_at=DAY1)  # unknown product
    shop.item(1003, 101, 10, updated_at=DAY1)  # its order was quarantined

    counts = stage_extract(settings, night_for_date("2026-11-20", settings.time_zone), "t1")

    assert counts["rows"] == {"customers": 1, "products": 1, "orders": 1, "order_items": 1}
    assert _quarantine(settings) == [
        ("customers", "2", "malformed_email"),
        ("customers", "3", "missing_name"),
        ("customers", "4", "control_characters"),
        ("order_items", "1001", "negative_quantity"),
        ("order_items", "1002", "unknown_product"),
        ("order_items", "1003", "unknown_order"),
        ("orders", "101", "unknown_customer"),
        ("orders", "102", "future_date"),
    ]


def test_quarantine_keeps_the_raw_row_and_a_reason_naming_the_value(settings, shop) -> None:
    shop.customer(2, updated_at=DAY1, email="anna.example.com")
    stage_extract(settings, night_for_date("2026-11-20", settings.time_zone), "t1")
    q = schema.quarantine
    with warehouse_engine(settings.warehouse).connect() as conn:
        row = conn.execute(select(q.c.detail, q.c.raw)).one()
    assert "anna.example.com" in row.detail
    assert json.loads(row.raw)["email"] == "anna.example.com"


def test_duplicate_ids_keep_the_newest_copy(settings, shop) -> None:
    shop.customer(1, updated_at=DAY1, first_name="Newer")
    shop.customer(1, updated_at=DAY1 - dt.timedelta(hours=3), first_name="Older")
    stage_extract(settings, night_for_date("2026-11-20", settings.time_zone), "t1")
    with warehouse_engine(settings.warehouse).connect() as conn:
        assert conn.execute(select(schema.stg_customers.c.first_name)).scalars().all() == ["Newer"]
    assert _quarantine(settings) == [("customers", "1", "duplicate_key")]


def test_rerunning_a_night_leaves_the_same_state(settings, shop) -> None:
    shop.customer(1, updated_at=DAY1)
    shop.customer(2, updated_at=DAY1, email="bad")
    night = night_for_date("2026-11-20", settings.time_zone)
    first = stage_extract(settings, night, "t1")
    second = stage_extract(settings, night, "t2")
    assert first["rows"] == second["rows"]
    assert _count(settings, schema.stg_customers) == 1
    assert _count(settings, schema.quarantine) == 1


def test_the_window_excludes_changes_after_the_night(settings, shop) -> None:
    shop.customer(1, updated_at=DAY1)
    shop.customer(2, updated_at=DAY2)
    stage_extract(settings, night_for_date("2026-11-20", settings.time_zone), "t1")
    assert _count(settings, schema.stg_customers) == 1
    stage_extract(settings, night_for_date("2026-11-21", settings.time_zone), "t2")
    assert _count(settings, schema.stg_customers) == 2


def test_a_missed_night_is_caught_up_from_the_watermark(settings, shop) -> None:
    shop.customer(1, updated_at=DAY1 - dt.timedelta(days=5))
    stage_extract(settings, night_for_date("2026-11-10", settings.time_zone), "t1")
    shop.customer(2, updated_at=DAY1 - dt.timedelta(days=3))  # changed during nights that never ran
    shop.customer(3, updated_at=DAY1)
    stage_extract(settings, night_for_date("2026-11-20", settings.time_zone), "t2")
    assert _count(settings, schema.stg_customers) == 3


def test_an_older_copy_never_overwrites_a_newer_row(settings, shop) -> None:
    shop.customer(1, updated_at=DAY2, first_name="Current")
    stage_extract(settings, night_for_date("2026-11-21", settings.time_zone), "t1")
    with shop.engine.begin() as conn:
        conn.execute(schema_source_update(1, "Stale", DAY1))
    from retention.extract import extract
    from retention.source import source_engine

    night = night_for_date("2026-11-20", settings.time_zone)  # the stage refuses it: never ran, superseded
    extract(source_engine(settings.source), warehouse_engine(settings.warehouse), night, "t2", settings)
    with warehouse_engine(settings.warehouse).connect() as conn:
        assert conn.execute(select(schema.stg_customers.c.first_name)).scalar() == "Current"


def schema_source_update(customer_id: int, first_name: str, updated_at: dt.datetime):
    from retention import source

    return (
        source.customers.update()
        .where(source.customers.c.customer_id == customer_id)
        .values(first_name=first_name, updated_at=updated_at)
    )


def test_quality_fails_naming_table_rule_and_counts_above_the_threshold(settings, shop) -> None:
    settings = settings.with_overrides(quarantine_min_rows=1)
    shop.customer(1, updated_at=DAY1)
    shop.customer(2, updated_at=DAY1, email="x")
    night = night_for_date("2026-11-20", settings.time_zone)
    stage_extract(settings, night, "t1")
    with pytest.raises(
        QualityError, match=r"customers: 1 of 2 rows quarantined \(50.0% > 5.0%\): malformed_email=1"
    ):
        stage_quality(settings, night, "t1")


def test_quality_passes_small_nights_judged_on_the_minimum_row_count(settings, shop) -> None:
    shop.customer(1, updated_at=DAY1)
    shop.customer(2, updated_at=DAY1, email="x")
    night = night_for_date("2026-11-20", settings.time_zone)
    stage_extract(settings, night, "t1")
    assert stage_quality(settings, night, "t1")["customers"] == {"read": 2, "bad": 1, "share": 0.01}


def test_extract_streams_in_chunks(settings, shop) -> None:
    settings = settings.with_overrides(chunk_size=100)
    for cid in range(1, 251):
        shop.customer(cid, updated_at=DAY1)
    counts = stage_extract(settings, night_for_date("2026-11-20", settings.time_zone), "t1")
    assert counts["rows"]["customers"] == 250


def test_a_child_held_back_for_a_late_parent_loads_when_the_parent_arrives(settings, shop) -> None:
    shop.customer(1, updated_at=DAY1)
    shop.product(10, updated_at=DAY2)  # edited the next day: not in night 11-20's window
    shop.order(100, 1, DAY1)
    shop.item(1000, 100, 10, updated_at=DAY1)
    first = stage_extract(settings, night_for_date("2026-11-20", settings.time_zone), "t1")
    assert first["quarantined"] == {"unknown_product": 1}
    second = stage_extract(settings, night_for_date("2026-11-21", settings.time_zone), "t2")
    assert second["recovered"] == {"order_items": 1}
    assert _count(settings, schema.stg_order_items) == 1
    q = schema.quarantine
    with warehouse_engine(settings.warehouse).connect() as conn:
        assert conn.execute(select(q.c.resolved_night)).scalar() == dt.date(2026, 11, 21)


def test_rerunning_the_first_night_reads_its_whole_window_again(settings, shop) -> None:
    shop.customer(1, updated_at=DAY1 - dt.timedelta(days=300))  # history before the night
    shop.customer(2, updated_at=DAY1)
    night = night_for_date("2026-11-20", settings.time_zone)
    first = stage_extract(settings, night, "t1")
    again = stage_extract(settings, night, "t2")
    assert first["rows"]["customers"] == again["rows"]["customers"] == 2
    assert again["lower_bounds"]["customers"] is None
