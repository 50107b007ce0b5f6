"""Issue #17 item 2: what retention earns, on a simulated shop with a known planted effect.

Twenty independent simulated campaigns (occasion names ``sim_00`` .. ``sim_19``, each with its
own customers) share one warehouse: each has 1,500 messaged customers and 1,500 held out. A
held-out customer buys within 30 days of the occasion with probability 0.10, a messaged one
with 0.18; everyone buys late (days 40 to 80) with probability 0.05. Prices are uniform over
50..150 (mean 100), costs 60 % of the price, and some items are returned. So the planted truth:
30-day repeat rate +0.08, revenue +8.00 and margin +3.20 per customer; 90-day revenue +8.00.

Checked: the report's counts, rates and means equal an independent computation from the
simulated rows (not SQL); the 95 % intervals cover the planted effect in at least 16 of the 20
campaigns (19 expected) and never include zero; months split and add up; occasions whose window
has not passed are left out of that horizon; cost and return follow the setting.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest
from sqlalchemy import insert

from retention import schema
from retention.earnings import earnings, welch_interval
from retention.pipeline import stage_migrate, warehouse_engine

NIGHT = dt.date(2026, 6, 1)
CAMPAIGNS, PER_GROUP = 20, 1500
P_HOLDOUT, P_MESSAGED, P_LATE = 0.10, 0.18, 0.05
TRUTH = {"rate_30": 0.08, "revenue_30": 8.0, "margin_30": 3.2, "revenue_90": 8.0}
COST = 0.05


def _order(rng, order_id, customer_id, day, after, orders, items) -> tuple[int, Decimal]:
    """One order ``after`` days from ``day``: some have two units, one of them returned."""
    price = Decimal(rng.randint(50, 150))
    quantity = 2 if rng.random() < 0.2 else 1
    returned = 1 if quantity == 2 and rng.random() < 0.5 else 0
    at = dt.datetime.combine(day + dt.timedelta(days=after), dt.time(12))
    orders.append(
        {
            "order_id": order_id,
            "customer_id": customer_id,
            "ordered_at": at,
            "status": "placed",
            "currency": "EUR",
            "updated_at": at,
            "loaded_night": NIGHT,
        }
    )
    items.append(
        {
            "order_item_id": order_id,
            "order_id": order_id,
            "product_id": 1,
            "quantity": quantity,
            "unit_price": price,
            "unit_cost": price * Decimal("0.6"),
            "returned_quantity": returned,
            "updated_at": at,
            "loaded_night": NIGHT,
        }
    )
    return quantity - returned, price


def _recent_occasions(customer_id: int) -> list[dict]:
    """Two occasions too recent for any horizon: counted as customers, eligible nowhere."""
    rows = []
    for status in ("selected", "holdout"):
        customer_id += 1
        rows.append(
            {
                "customer_id": customer_id,
                "occasion": "sim_00",
                "occasion_date": NIGHT - dt.timedelta(days=10),
                "night": NIGHT - dt.timedelta(days=10),
                "language": "en",
                "details": "{}",
                "status": status,
                "reason": None,
            }
        )
    return rows


def _write(settings, occasions: list[dict], orders: list[dict], items: list[dict]) -> None:
    stage_migrate(settings)
    with warehouse_engine(settings.warehouse).begin() as conn:
        for table, rows in (
            (schema.occasions, occasions),
            (schema.stg_orders, orders),
            (schema.stg_order_items, items),
        ):
            for start in range(0, len(rows), 5000):
                conn.execute(insert(table), rows[start : start + 5000])


def _simulate(settings) -> dict:
    """Write the campaigns into the warehouse; return, per campaign, each customer's truth."""
    rng = random.Random(20261124)
    occasions, orders, items, truth = [], [], [], {}
    customer_id = order_id = 0
    for c in range(CAMPAIGNS):
        name = f"sim_{c:02d}"
        truth[name] = []
        for status in ("selected", "holdout"):
            for k in range(PER_GROUP):
                customer_id += 1
                day = dt.date(2026, 1, 5) + dt.timedelta(days=k % 50)  # January and February
                occasions.append(
                    {
                        "customer_id": customer_id,
                        "occasion": name,
                        "occasion_date": day,
                        "night": day,
                        "language": "en",
                        "details": "{}",
                        "status": status,
                        "reason": None,
                    }
                )
                buys = []
                if rng.random() < (P_MESSAGED if status == "selected" else P_HOLDOUT):
                    buys.append(rng.randint(0, 29))
                if rng.random() < P_LATE:
                    buys.append(rng.randint(40, 80))
                figures = {
                    "status": status,
                    "month": f"{day:%Y-%m}",
                    "bought": {},
                    "revenue": {},
                    "margin": {},
                }
                for n in (30, 60, 90):
                    figures["bought"][n], figures["revenue"][n], figures["margin"][n] = 0, 0.0, 0.0
                for after in buys:
                    order_id += 1
                    kept, price = _order(rng, order_id, customer_id, day, after, orders, items)
                    for n in (30, 60, 90):
                        if after < n:
                            figures["bought"][n] = 1
                            figures["revenue"][n] += float(kept * price)
                            figures["margin"][n] += float(kept * price * Decimal("0.4"))
                truth[name].append(figures)
    occasions += _recent_occasions(customer_id)
    _write(settings, occasions, orders, items)
    return truth


@pytest.fixture
def simulated(settings):
    truth = _simulate(settings)
    with warehouse_engine(settings.warehouse).connect() as conn:
        report = earnings(conn, NIGHT, message_cost=COST)
    return truth, report


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_earnings_of_a_simulated_shop(settings, simulated) -> None:
    """One simulated shop per database (writing it is the slow part), every check on it."""
    _the_figures_equal_an_independent_count_of_the_simulated_rows(simulated)
    _the_intervals_cover_the_planted_effect(simulated)
    _months_split_and_add_up(simulated)
    _cost_and_return_follow_the_setting(simulated)
    _the_retention_page_shows_the_earnings(settings, simulated)


def _the_figures_equal_an_independent_count_of_the_simulated_rows(simulated) -> None:
    truth, report = simulated
    for name, customers in truth.items():
        total = report["occasions"][name]["total"]
        extra = 1 if name == "sim_00" else 0  # the recent occasion: a customer, never eligible
        assert (total["messaged_customers"], total["holdout_customers"]) == (
            PER_GROUP + extra,
            PER_GROUP + extra,
        )
        for n in (30, 60, 90):
            horizon = total["horizons"][str(n)]
            for group, status in (("messaged", "selected"), ("holdout", "holdout")):
                rows = [f for f in customers if f["status"] == status]
                figures = horizon[group]
                assert figures["customers"] == PER_GROUP
                assert figures["repeat_rate"] == round(_mean([f["bought"][n] for f in rows]), 4)
                assert figures["revenue_per_customer"] == pytest.approx(
                    _mean([f["revenue"][n] for f in rows]), abs=0.006
                )
                assert figures["margin_per_customer"] == pytest.approx(
                    _mean([f["margin"][n] for f in rows]), abs=0.006
                )


def _the_intervals_cover_the_planted_effect(simulated) -> None:
    _, report = simulated
    covered = dict.fromkeys(TRUTH, 0)
    for name in (f"sim_{c:02d}" for c in range(CAMPAIGNS)):
        horizons = report["occasions"][name]["total"]["horizons"]
        for key, (metric, n) in {
            "rate_30": ("repeat_rate_interval", 30),
            "revenue_30": ("revenue_per_customer_interval", 30),
            "margin_30": ("margin_per_customer_interval", 30),
            "revenue_90": ("revenue_per_customer_interval", 90),
        }.items():
            low, high = horizons[str(n)][metric]
            assert low > 0, f"{name} {key}: the planted effect must be detected, got [{low}, {high}]"
            covered[key] += low <= TRUTH[key] <= high
    print("campaigns whose interval covers the truth:", covered)
    assert all(hits >= 16 for hits in covered.values()), covered


def _months_split_and_add_up(simulated) -> None:
    _, report = simulated
    block = report["occasions"]["sim_03"]
    assert sorted(block["months"]) == ["2026-01", "2026-02"]
    for group in ("messaged", "holdout"):
        assert sum(m["horizons"]["90"][group]["customers"] for m in block["months"].values()) == PER_GROUP


def _cost_and_return_follow_the_setting(simulated) -> None:
    _, report = simulated
    horizon = report["occasions"]["sim_05"]["total"]["horizons"]["90"]
    assert horizon["cost"] == pytest.approx(PER_GROUP * COST)
    incremental = horizon["incremental_margin"]
    assert incremental == pytest.approx(
        horizon["margin_per_customer_uplift"] * PER_GROUP, abs=0.01 * PER_GROUP
    )
    assert horizon["return_on_cost"] == pytest.approx(
        (incremental - horizon["cost"]) / horizon["cost"], rel=1e-3
    )
    low, high = horizon["return_on_cost_interval"]
    assert low < horizon["return_on_cost"] < high


def test_the_welch_interval_matches_a_textbook_example() -> None:
    # Two groups with known moments; scipy's Welch t-test gives the same interval.
    from scipy import stats

    a = [19.0, 22.0, 16.0, 29.0, 24.0]
    b = [20.0, 11.0, 17.0, 12.0]
    moments = [(len(x), sum(x) / len(x), stats.tvar(x)) for x in (a, b)]
    low, high = welch_interval(*moments)
    result = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (low, high) == pytest.approx((result.low, result.high))
    assert welch_interval((1, 5.0, float("nan")), (10, 1.0, 1.0)) is None


def _the_retention_page_shows_the_earnings(settings, simulated) -> None:
    import asyncio

    import httpx

    from retention.web.retention_app import create_retention_app

    _, report = simulated
    app = create_retention_app(lambda: "tester", settings=settings.with_overrides(message_cost=COST))

    async def get(path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.get(path)

    page = asyncio.run(get(f"/earnings?night={NIGHT}&days=30"))
    assert page.status_code == 200, page.text
    h = report["occasions"]["sim_07"]["total"]["horizons"]["30"]
    low, high = h["margin_per_customer_interval"]
    assert f"{low} to {high}" in page.text and "2026-02" in page.text
    assert asyncio.run(get(f"/earnings?night={NIGHT}&days=45")).status_code == 400
