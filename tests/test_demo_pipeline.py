"""The demo shop through the nightly chain: every planted bad row ends in the quarantine with its rule."""

from __future__ import annotations

from sqlalchemy import select

from retention import schema
from retention.db import engine_for
from retention.demo import DEMO_AS_OF, demo_defects, generate
from retention.night import night_for_date
from retention.pipeline import run_night, warehouse_engine


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
