"""The facts' money sums at the edges of what the extract lets in (issue 15): PostgreSQL sums them
as whole cents in bigint (``cents()`` in ``sql/macros.sql``), so a line of the largest admitted
value, cent amounts that floats cannot hold, returns and the trailing year must come out to the
cent, against an independent Decimal computation of the same definitions (``customer_facts.sql``).

Night 2026-11-20 (Europe/Berlin); its trailing year starts 365 days before the window's end.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import select

from retention import schema
from retention.night import night_for_date
from retention.pipeline import TRAILING_YEAR, run_night, warehouse_engine
from tests.shop import Shop

NIGHT = "2026-11-20"
CENT = Decimal("0.01")
#: Just under the extract's limit for one line's value (``quality._LINE_LIMIT``, 10**12).
LARGEST = Decimal("999999999999.99")

# (customer, ordered_at, quantity, returned, unit_price, unit_cost, category)
LINES = [
    (1, "2025-06-01T10:00", 1, 0, LARGEST, Decimal("0.01"), "garden"),  # older than the trailing year
    (1, "2026-03-01T10:00", 1, 0, LARGEST, LARGEST, "garden"),  # no margin at all
    (1, "2026-03-01T10:00", 3, 1, Decimal("0.01"), Decimal("0.00"), "tools"),
    (1, "2026-09-01T10:00", 7, 2, Decimal("123.45"), Decimal("200.10"), "tools"),  # sold at a loss
    (2, "2026-01-10T10:00", 3, 0, Decimal("0.10"), Decimal("0.07"), "garden"),
    (2, "2026-02-10T10:00", 1, 0, Decimal("0.20"), Decimal("0.05"), "kitchen"),
    (2, "2026-02-10T23:00", 9, 9, Decimal("19.99"), Decimal("9.99"), "kitchen"),  # all sent back
    (2, "2026-10-10T10:00", 3, 1, Decimal("19.99"), Decimal("0.33"), "kitchen"),
    (3, "2026-11-19T10:00", 11, 0, Decimal("0.07"), Decimal("0.01"), "tools"),
]


def _round(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _expected(year_start: dt.datetime) -> dict[int, dict]:
    """The facts' money figures worked out line by line in Decimal."""
    out: dict[int, dict] = defaultdict(lambda: defaultdict(Decimal))
    days: dict[int, set] = defaultdict(set)
    orders: dict[int, int] = defaultdict(int)  # one line an order
    by_category: dict[int, dict] = defaultdict(lambda: defaultdict(Decimal))
    for customer, when, quantity, returned, price, cost, category in LINES:
        at = dt.datetime.fromisoformat(when)
        kept = quantity - returned
        figures = out[customer]
        figures["revenue"] += kept * price
        figures["returns_value"] += returned * price
        figures["margin"] += kept * (price - cost)
        if at >= year_start:
            figures["revenue_12m"] += kept * price
            figures["margin_12m"] += kept * (price - cost)
        by_category[customer][category] += kept * price
        days[customer].add(at.date())
        orders[customer] += 1
    for customer, figures in out.items():
        first_day = min(days[customer])
        repeat = sum(
            (q - r) * p for c, w, q, r, p, _, _ in LINES if c == customer and dt.date.fromisoformat(w[:10]) > first_day
        )
        figures["avg_order_value"] = figures["revenue"] / orders[customer]
        if len(days[customer]) > 1:
            figures["repeat_avg_order_value"] = repeat / (len(days[customer]) - 1)
        # most revenue, ties by name
        figures["preferred_category"] = min(by_category[customer].items(), key=lambda kv: (-kv[1], kv[0]))[0]
    return out


def test_money_sums_are_exact_to_the_cent(settings) -> None:
    shop = Shop(settings.source)
    for customer in sorted({line[0] for line in LINES}):
        shop.customer(customer)
    products: dict[tuple, int] = {}
    for number, (customer, when, quantity, returned, price, cost, category) in enumerate(LINES, start=1):
        key = (price, cost, category)
        if key not in products:
            products[key] = 100 + len(products)
            shop.product(products[key], price=str(price), cost=str(cost), category=category)
        at = dt.datetime.fromisoformat(when)
        order_id = number  # one line an order; two orders may share an instant
        shop.order(order_id, customer, at)
        shop.item(
            number,
            order_id,
            products[key],
            quantity=quantity,
            returned_quantity=returned,
            unit_price=price,
            unit_cost=cost,
            updated_at=at,
        )
    night = night_for_date(NIGHT, settings.time_zone)
    run_night(settings, night, "t")

    f = schema.customer_facts
    with warehouse_engine(settings.warehouse).connect() as conn:
        got = {r["customer_id"]: dict(r) for r in conn.execute(select(f)).mappings()}
    expected = _expected(night.window_end_naive - TRAILING_YEAR)
    assert set(got) == set(expected)
    for customer, figures in expected.items():
        row = got[customer]
        for name in (
            "revenue",
            "returns_value",
            "margin",
            "revenue_12m",
            "margin_12m",
            "avg_order_value",
            "repeat_avg_order_value",
        ):
            want = _round(figures[name]) if name in figures else None
            have = None if row[name] is None else _round(Decimal(str(row[name])))
            assert have == want, (customer, name, row[name], want)
        assert row["preferred_category"] == figures["preferred_category"], customer
