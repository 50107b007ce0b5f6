"""The demo shop through the nightly chain: every planted bad row ends in the quarantine with its rule,
and every night of the demo passes the default quality gate."""

from __future__ import annotations

from sqlalchemy import select

from retention import schema
from retention.db import engine_for
from retention.demo import DEMO_AS_OF, demo_defects, generate
from retention.night import night_for_date
from retention.pipeline import run_night, stage_extract, stage_migrate, stage_quality, warehouse_engine
from retention.settings import Settings


def test_every_planted_defect_is_quarantined_with_its_rule(settings) -> None:
    generate(settings.source, 300, 11)
    results = run_night(settings, night_for_date(DEMO_AS_OF, settings.time_zone), "demo")
    source = engine_for(settings.source)
    with source.connect() as conn:
        planted = {(r.source_table, r.source_key, r.rule) for r in conn.execute(select(demo_defects))}
    source.dispose()
    q = schema.quarantine
    with warehouse_engine(settings.warehouse).connect() as conn:
        held = {
            (r.source_table, r.source_key, r.rule)
            for r in conn.execute(select(q.c.source_table, q.c.source_key, q.c.rule))
        }
        cascaded_orders = {key for table, key, rule in held if rule == "unknown_customer"}
        lines = schema.stg_order_items
        assert conn.execute(select(lines).where(lines.c.quantity < 1)).first() is None
    assert planted <= held
    # Anything else held back is an order line of an order held back itself.
    others = held - planted
    assert {rule for _, _, rule in others} <= {"unknown_order"}
    assert len(others) >= len(cascaded_orders) > 0
    assert results["quality"]  # the night passed the quality gate
    assert sum(results["occasions"].get("thank_you", {}).values()) > 0


NIGHTS = ("2026-11-18", "2026-11-19", "2026-11-20", "2026-11-21", "2026-11-22")


def test_every_night_of_a_20k_demo_passes_the_quality_gate(tmp_path) -> None:
    """Night 1 takes in the history; each later night one day, the last one the busy last day.
    Every one has a realistic share of bad rows, below the default gate (5 %)."""
    settings = Settings(home=tmp_path, time_zone="Europe/Berlin")  # SQLite only: this tests the generator
    generate(settings.source, 20_000, 42)
    stage_migrate(settings)
    raw = {}
    for date in NIGHTS:
        night = night_for_date(date, settings.time_zone)
        extracted = stage_extract(settings, night, f"gate-{date}")
        quality = stage_quality(settings, night, f"gate-{date}")  # raises QualityError past the gate
        assert sum(extracted["read"].values()) > 0, date
        raw[date] = quality
    # Bad rows per row read, with no small-night allowance: below the gate on every night too.
    assert all(
        counts["bad"] < settings.quarantine_max_share * counts["read"]
        for by_table in raw.values()
        for counts in by_table.values()
        if counts["read"] >= settings.quarantine_min_rows
    ), raw
