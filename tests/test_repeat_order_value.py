"""Gamma-Gamma on repeat transactions only (issue #12): customer_facts.repeat_avg_order_value,
and each customer's expected order value in the snapshot, against values worked out by hand
and an independent evaluation of the model's formula (retention.churn, numpy).

Night 2026-11-20 (Europe/Berlin). A transaction is an order day (UTC); every line costs
100.00 a piece (tests/shop.py), so whole-euro sums also check that no division truncates.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from alembic import command
from sqlalchemy import select

from retention import churn, schema
from retention.migrate import alembic_config, upgrade
from retention.night import night_for_date
from retention.pipeline import run_night, warehouse_engine
from tests.shop import Shop

NIGHT = "2026-11-20"


class Orders:
    """Orders of one line each: quantity x 100.00."""

    def __init__(self, shop: Shop) -> None:
        self.shop, self.next_id = shop, 1
        shop.product(1)

    def add(self, customer_id: int, when: str, quantity: int = 1, returned: int = 0, status: str = "placed"):
        at = dt.datetime.fromisoformat(when)
        self.shop.order(self.next_id, customer_id, at, status=status)
        self.shop.item(
            self.next_id, self.next_id, 1, quantity=quantity, returned_quantity=returned, updated_at=at
        )
        self.next_id += 1


def _facts(settings) -> dict[int, dict]:
    f = schema.customer_facts
    with warehouse_engine(settings.warehouse).connect() as conn:
        return {r["customer_id"]: dict(r) for r in conn.execute(select(f)).mappings()}


def _money(value) -> float | None:
    return None if value is None else float(value)


def _seven_customers(settings) -> None:
    """The hand-worked histories of the first test."""
    shop = Shop(settings.source)
    orders = Orders(shop)
    for customer_id in range(1, 8):
        shop.customer(customer_id)
    orders.add(1, "2026-03-01T10:00", 3)  # first day 300
    orders.add(1, "2026-04-01T10:00", 1)  # repeat day: 100 + 200 in two orders = one transaction
    orders.add(1, "2026-04-01T18:00", 2)
    orders.add(2, "2026-03-01T10:00", 5)  # one order: no repeat transaction
    orders.add(3, "2026-03-01T09:00", 1)  # two orders on one day: still one transaction
    orders.add(3, "2026-03-01T20:00", 4)
    orders.add(4, "2026-03-01T10:00", 9)  # repeat days: 0 kept (sent back), 200
    orders.add(4, "2026-04-01T10:00", 1, returned=1)
    orders.add(4, "2026-05-01T10:00", 2)
    orders.add(5, "2026-03-01T10:00", 1)  # a cancelled order is no transaction
    orders.add(5, "2026-04-01T10:00", 5, status="cancelled")
    orders.add(5, "2026-05-01T10:00", 3)
    orders.add(6, "2026-03-01T10:00", 2)  # repeat days 100, 200, 200: 500 / 3
    orders.add(6, "2026-04-01T10:00", 1)
    orders.add(6, "2026-05-01T10:00", 2)
    orders.add(6, "2026-06-01T10:00", 2)
    # customer 7 never ordered


def test_repeat_average_leaves_out_the_first_order_day(settings) -> None:
    _seven_customers(settings)
    run_night(settings, night_for_date(NIGHT, settings.time_zone), "t")
    facts = _facts(settings)
    repeat = {c: _money(facts[c]["repeat_avg_order_value"]) for c in range(1, 8)}
    assert repeat == {1: 300.0, 2: None, 3: None, 4: 100.0, 5: 300.0, 6: 166.67, 7: None}
    # all orders, first ones included: 600 / 3, 700 / 4 (exact, not truncated to whole euros)
    assert (_money(facts[1]["avg_order_value"]), _money(facts[6]["avg_order_value"])) == (200.0, 175.0)
    assert _money(facts[4]["avg_order_value"]) == round(1100 / 3, 2)


def _history(shop: Shop, orders: Orders) -> dict[int, tuple[int, float]]:
    """30 repeat customers with a big first order and smaller repeat ones, 10 one-order customers.

    Returns customer -> (repeat transactions x, mean repeat value m_x), worked out here.
    """
    expected = {}
    for c in range(1, 31):
        shop.customer(c)
        orders.add(c, "2025-12-01T10:00", 8 + c % 5)  # first orders are large
        repeats = [1 + (c + n) % 4 for n in range(1 + c % 4)]
        for n, quantity in enumerate(repeats):
            orders.add(c, f"2026-{2 + 2 * n:02d}-{1 + c % 27:02d}T10:00", quantity)
        expected[c] = (len(repeats), 100.0 * sum(repeats) / len(repeats))
    for c in range(31, 41):
        shop.customer(c)
        orders.add(c, f"2026-0{1 + c % 9}-15T10:00", 1 + c % 6)
        expected[c] = (0, 0.0)
    return expected


def test_expected_order_value_is_the_model_on_repeat_transactions(settings) -> None:
    shop = Shop(settings.source)
    expected = _history(shop, Orders(shop))
    run_night(settings, night_for_date(NIGHT, settings.time_zone), "t")
    fits, s = schema.churn_fits, schema.segment_snapshots
    with warehouse_engine(settings.warehouse).connect() as conn:
        params = json.loads(
            conn.execute(select(fits.c.params).where(fits.c.model == "gamma_gamma")).scalar_one()
        )
        snapshot = {
            r.customer_id: _money(r.expected_order_value)
            for r in conn.execute(select(s.c.customer_id, s.c.expected_order_value))
        }
    gg = churn.GammaGammaParams(params["p"], params["q"], params["v"], 0.0, 30)
    customers = sorted(expected)
    x = [expected[c][0] for c in customers]
    m = [expected[c][1] for c in customers]
    model = churn.expected_order_value(gg, x, m)
    assert [snapshot[c] for c in customers] == pytest.approx(model.tolist(), abs=0.006)
    population = params["p"] * params["v"] / (params["q"] - 1)
    assert all(snapshot[c] == pytest.approx(population, abs=0.006) for c in range(31, 41))


def test_migration_0005_fills_the_column_as_the_nightly_model_does(settings) -> None:
    """Facts are recomputed only for customers who change: the upgrade fills every existing row."""
    _seven_customers(settings)
    run_night(settings, night_for_date(NIGHT, settings.time_zone), "t")
    nightly = {c: row["repeat_avg_order_value"] for c, row in _facts(settings).items()}
    engine = warehouse_engine(settings.warehouse)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0004")  # a warehouse from before: no column
    upgrade(engine)
    backfilled = {c: row["repeat_avg_order_value"] for c, row in _facts(settings).items()}
    assert backfilled == nightly
    assert sum(value is not None for value in backfilled.values()) == 4
