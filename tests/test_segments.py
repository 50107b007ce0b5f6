"""Segments on hand-built customers: every expectation below is computed by hand in its comment.

Night 2026-11-20 (Europe/Berlin): the window ends 2026-11-19 23:00 UTC, so "today" for day counts
is 2026-11-19 and the trailing year starts 2025-11-19 23:00 UTC.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from retention import schema
from retention.night import night_for_date
from retention.pipeline import run_night, warehouse_engine
from tests.shop import Shop

NIGHT = "2026-11-20"


def _day(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(hour=10)


class Orders:
    """Give customers orders with one line each: quantity x 100.00 (cost 60.00)."""

    def __init__(self, shop: Shop) -> None:
        self.shop = shop
        self.next_id = 1
        shop.product(1)

    def add(
        self, customer_id: int, day: str, quantity: int = 1, returned: int = 0, status: str = "placed"
    ) -> None:
        when = _day(day)
        self.shop.order(self.next_id, customer_id, when, status=status)
        self.shop.item(
            self.next_id, self.next_id, 1, quantity=quantity, returned_quantity=returned, updated_at=when
        )
        self.next_id += 1


@pytest.fixture
def shop(settings) -> Shop:
    return Shop(settings.source)


def _snapshot(settings) -> dict[int, dict]:
    s = schema.segment_snapshots
    with warehouse_engine(settings.warehouse).connect() as conn:
        rows = conn.execute(select(s).where(s.c.night == dt.date.fromisoformat(NIGHT))).mappings()
        return {row["customer_id"]: dict(row) for row in rows}


def _run(settings) -> dict[int, dict]:
    run_night(settings, night_for_date(NIGHT, settings.time_zone), "t")
    return _snapshot(settings)


def test_quintile_scores_share_the_lowest_score_of_a_tie(settings, shop) -> None:
    orders = Orders(shop)
    quantities = [1, 2, 3, 3, 5, 6, 7, 8, 9, 10]  # customers 3 and 4 tie on revenue
    for customer_id, quantity in enumerate(quantities, start=1):
        shop.customer(customer_id)
        orders.add(customer_id, f"2026-10-{customer_id:02d}", quantity)
    snap = _run(settings)
    # m_rank 1,2,3,3,5,...,10 of 10 buyers -> 1 + 5*(rank-1)//10
    assert [snap[c]["m_score"] for c in range(1, 11)] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    # later orders are more recent: customer 10 ordered last -> highest recency score
    assert [snap[c]["r_score"] for c in range(1, 11)] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    # everyone has one order: one tie, the lowest score
    assert {snap[c]["f_score"] for c in range(1, 11)} == {1}


def test_single_order_customer_is_exploring_with_no_usual_gap(settings, shop) -> None:
    orders = Orders(shop)
    shop.customer(1)
    orders.add(1, "2026-11-01")
    snap = _run(settings)[1]
    assert (snap["frequency"], snap["recency_days"], snap["lifecycle_phase"]) == (1, 18, "exploration")


def test_customer_with_only_returns_has_zero_revenue_and_is_unprofitable(settings, shop) -> None:
    orders = Orders(shop)
    shop.customer(1)
    orders.add(1, "2026-10-01", quantity=2, returned=2)
    snap = _run(settings)[1]
    # revenue 0, margin 0, one order costs 5.00 to serve -> profit -5.00
    assert float(snap["monetary"]) == 0.0
    assert snap["abc_class"] == "C"
    assert float(snap["profit_12m"]) == -5.0
    assert snap["unprofitable"] is True or snap["unprofitable"] == 1


def test_customer_who_never_bought_is_a_prospect_in_awareness(settings, shop) -> None:
    Orders(shop)
    shop.customer(1)
    snap = _run(settings)[1]
    assert (snap["rfm_segment"], snap["lifecycle_phase"], snap["abc_class"]) == ("prospect", "awareness", "C")
    assert snap["r_score"] is None and not snap["unprofitable"]


def test_dissolution_starts_the_day_after_three_usual_gaps(settings, shop) -> None:
    orders = Orders(shop)
    shop.customer(20)  # gap 40 days, silent 120 days = exactly 3 gaps: not yet
    orders.add(20, "2026-06-12")
    orders.add(20, "2026-07-22")
    shop.customer(21)  # gap 40 days, silent 121 days
    orders.add(21, "2026-06-11")
    orders.add(21, "2026-07-21")
    snap = _run(settings)
    assert (snap[20]["recency_days"], snap[20]["lifecycle_phase"]) == (120, "exploration")
    assert (snap[21]["recency_days"], snap[21]["lifecycle_phase"]) == (121, "dissolution")


def test_commitment_needs_a_full_year_between_first_and_last_order(settings, shop) -> None:
    orders = Orders(shop)
    for customer_id, first in ((30, "2025-11-19"), (31, "2025-11-20")):
        shop.customer(customer_id)
        for day in (first, "2026-03-01", "2026-06-01", "2026-09-01", "2026-11-19"):
            orders.add(customer_id, day)
    snap = _run(settings)
    assert snap[30]["lifecycle_phase"] == "commitment"  # 365 days active, 5 orders, 4 in the year
    assert snap[31]["lifecycle_phase"] == "expansion"  # 364 days active


def test_abc_classes_split_trailing_revenue_80_15_5(settings, shop) -> None:
    orders = Orders(shop)
    for customer_id in (1, 2, 3):
        shop.customer(customer_id)
    orders.add(1, "2026-10-01", quantity=10)
    orders.add(1, "2026-10-02", quantity=6)  # 1600
    orders.add(2, "2026-10-03", quantity=3)  # 300
    orders.add(3, "2026-10-04", quantity=1)  # 100 -> total 2000
    # before 1: 0 < 1600 -> A; before 2: 1600, not below 0.80*2000 = 1600 -> B (1600 < 1900);
    # before 3: 1900, not below 0.95*2000 = 1900 -> C. Both lie exactly on a threshold.
    snap = _run(settings)
    assert [snap[c]["abc_class"] for c in (1, 2, 3)] == ["A", "B", "C"]


def test_cancelled_orders_do_not_count(settings, shop) -> None:
    orders = Orders(shop)
    shop.customer(1)
    orders.add(1, "2026-10-01")
    orders.add(1, "2026-10-10", status="cancelled")
    snap = _run(settings)[1]
    assert (snap["frequency"], float(snap["monetary"]), snap["recency_days"]) == (1, 100.0, 49)


def test_segment_counts_add_up_to_the_customers(settings, shop) -> None:
    orders = Orders(shop)
    for customer_id in range(1, 31):
        shop.customer(customer_id)
        for n in range(customer_id % 4):
            orders.add(
                customer_id, f"2026-{1 + customer_id % 10:02d}-{1 + n * 7:02d}", quantity=1 + customer_id % 3
            )
    run_night(settings, night_for_date(NIGHT, settings.time_zone), "t")
    from retention.segments import segment_summary

    with warehouse_engine(settings.warehouse).connect() as conn:
        summary = segment_summary(conn, dt.date.fromisoformat(NIGHT))
    assert summary["customers"] == 30
    for dimension in ("rfm", "abc", "lifecycle"):
        assert sum(summary[dimension].values()) == 30, dimension


@pytest.mark.filterwarnings(
    "ignore:.*fit ended at extreme values:RuntimeWarning"
)  # 30 customers: a tiny sample
def test_churn_is_fitted_tonight_and_scores_every_buyer(settings, shop) -> None:
    orders = Orders(shop)
    for customer_id in range(1, 31):
        shop.customer(customer_id)
        for n in range(1 + customer_id % 5):
            orders.add(
                customer_id,
                f"2026-{1 + (customer_id + 3 * n) % 10:02d}-{1 + customer_id % 27:02d}",
                1 + n % 3,
            )
    shop.customer(99)  # two orders, both sent back: nothing kept, no spend to learn from
    orders.add(99, "2026-03-03", returned=1)
    orders.add(99, "2026-05-05", returned=1)
    snap = _run(settings)
    buyers = [row for row in snap.values() if row["frequency"] > 0]
    assert all(row["p_alive"] is not None and 0 < float(row["p_alive"]) <= 1 for row in buyers)
    # Customer 99's repeat transactions kept nothing (repeat mean 0, issue #12: the model's input
    # is the repeat mean); the fit here trusts each customer's own mean, so 99 is scored ~0.
    assert all(float(row["expected_order_value"]) > 0 for row in buyers if row["customer_id"] != 99)
    others = min(float(row["expected_order_value"]) for row in buyers if row["customer_id"] != 99)
    assert 0 <= float(snap[99]["expected_order_value"]) < others
    assert all(row["clv_12m"] is not None for row in buyers)
    s = schema.churn_fits
    with warehouse_engine(settings.warehouse).connect() as conn:
        fitted = dict(conn.execute(select(s.c.model, s.c.customers)).all())
    assert fitted == {"bg_nbd": 31, "gamma_gamma": len([c for c in range(1, 31) if c % 5])}


# ------------------------------------------------------------------------------ churn fallbacks


def _churn(settings) -> tuple[dict, dict]:
    """Tonight's churn outcomes from the run log, and the report's view of them."""
    from retention.report import night_report
    from retention.runlog import stage_counts

    night = dt.date.fromisoformat(NIGHT)
    engine = warehouse_engine(settings.warehouse)
    with engine.connect() as conn:
        fits = stage_counts(conn, night, "segments")["fits"]
    return fits, night_report(engine, night)["segments"]["churn"]


def _repeat_buyers(orders: Orders, shop: Shop, customers: range, days: tuple[str, ...], quantity=None) -> None:
    for customer_id in customers:
        shop.customer(customer_id)
        for n, day in enumerate(days):
            orders.add(customer_id, day, quantity or 1 + (customer_id + n) % 4)


def test_one_repeat_customer_is_too_few_to_fit_and_the_night_goes_on(settings, shop) -> None:
    orders = Orders(shop)
    _repeat_buyers(orders, shop, range(1, 2), ("2026-03-01", "2026-06-01"))
    _repeat_buyers(orders, shop, range(2, 40), ("2026-05-01",))
    snap = _run(settings)
    fits, report = _churn(settings)
    assert fits["bg_nbd"]["status"] == "fallback"
    assert "1 repeat customers (minimum 20)" in fits["bg_nbd"]["reason"]
    assert fits["gamma_gamma"]["status"] == "fallback"
    assert fits["clv"] == {
        "status": "fallback",
        "reason": "CLV of 39 of 39 buyers left empty: BG/NBD fallback; Gamma-Gamma fallback",
        "customers": 39,
        "scored": 0,
    }
    assert report["bg_nbd"]["reason"] == fits["bg_nbd"]["reason"]
    for row in snap.values():
        assert (row["p_alive"], row["expected_purchases_90d"], row["expected_order_value"], row["clv_12m"]) == (
            None,
            None,
            None,
            None,
        )
    assert len(snap) == 39 and snap[1]["lifecycle_phase"] == "exploration"  # the rest of the snapshot stands


def test_identical_histories_are_too_few_triples_and_identical_spend_too_few_values(settings, shop) -> None:
    orders = Orders(shop)
    _repeat_buyers(orders, shop, range(1, 31), ("2026-02-01", "2026-04-01", "2026-06-01"), quantity=2)
    snap = _run(settings)
    fits, report = _churn(settings)
    assert fits["triples"] == 1
    assert fits["bg_nbd"]["status"] == report["bg_nbd"]["status"] == "fallback"
    assert "30 repeat customers (minimum 20), 1 distinct (frequency, recency, age) triples (minimum 10)" in (
        fits["bg_nbd"]["reason"]
    )
    assert "1 different average order values (minimum 2)" in fits["gamma_gamma"]["reason"]
    assert all(row["p_alive"] is None and row["expected_order_value"] is None for row in snap.values())


def _varied_repeat_buyers(shop: Shop) -> None:
    orders = Orders(shop)
    for customer_id in range(1, 41):
        shop.customer(customer_id)
        for n in range(1 + customer_id % 5):
            orders.add(
                customer_id,
                f"2026-{1 + (customer_id + 3 * n) % 10:02d}-{1 + customer_id % 27:02d}",
                1 + (customer_id + n) % 4,
            )


def test_a_fit_with_non_finite_parameters_falls_back(settings, shop, monkeypatch) -> None:
    from retention import churn

    _varied_repeat_buyers(shop)
    monkeypatch.setattr(
        churn, "fit_bg_nbd", lambda *a, **k: churn.BgNbdParams(0.5, float("nan"), 1.0, 2.0, 0.0, 40)
    )
    monkeypatch.setattr(
        churn, "fit_gamma_gamma", lambda *a, **k: churn.GammaGammaParams(2.0, 0.8, 10.0, 0.0, 30)
    )
    snap = _run(settings)
    fits, report = _churn(settings)
    assert fits["bg_nbd"]["status"] == "fallback"
    assert fits["bg_nbd"]["reason"] == "BG/NBD fit gave non-finite or non-positive parameters {'alpha': nan}"
    assert fits["gamma_gamma"]["status"] == report["gamma_gamma"]["status"] == "fallback"
    assert fits["gamma_gamma"]["reason"] == "Gamma-Gamma q = 0.8 <= 1: mean order value infinite"
    assert all(row["p_alive"] is None and row["expected_order_value"] is None for row in snap.values())


def test_predictions_that_are_not_finite_leave_those_customers_empty(settings, shop, monkeypatch) -> None:
    from retention import churn

    _varied_repeat_buyers(shop)
    # a and b this large are a legitimate limit of the model, but the hypergeometric function
    # of the 90-day forecast overflows there: p_alive is fine, expected purchases are -inf.
    monkeypatch.setattr(churn, "fit_bg_nbd", lambda *a, **k: churn.BgNbdParams(0.7, 70.0, 4e5, 4e6, 0.0, 40))
    snap = _run(settings)
    fits, _ = _churn(settings)
    # p_alive is sound and kept; only the forecast (and so the CLV) is left empty.
    assert fits["bg_nbd"]["status"] == "partial" and fits["bg_nbd"]["scored"] == 0
    assert "non-finite expected purchases for 40 customers" in fits["bg_nbd"]["reason"]
    assert fits["gamma_gamma"]["status"] == "fitted"
    assert all(0 <= float(row["p_alive"]) <= 1 for row in snap.values())
    assert all(row["expected_purchases_90d"] is None and row["clv_12m"] is None for row in snap.values())
    assert all(float(row["expected_order_value"]) > 0 for row in snap.values())


def test_a_fit_that_raises_or_does_not_converge_falls_back(settings, shop, monkeypatch) -> None:
    import warnings

    from retention import churn

    _varied_repeat_buyers(shop)

    def not_converged(*args, **kwargs):
        warnings.warn("BG/NBD fit did not converge: ABNORMAL", churn.NotConvergedWarning, stacklevel=2)
        return churn.BgNbdParams(0.5, 50.0, 1.0, 2.0, 0.0, 40)

    def broken(*args, **kwargs):
        raise FloatingPointError("overflow in exp")

    monkeypatch.setattr(churn, "fit_bg_nbd", not_converged)
    monkeypatch.setattr(churn, "fit_gamma_gamma", broken)
    snap = _run(settings)
    fits, _ = _churn(settings)
    assert (fits["bg_nbd"]["status"], fits["bg_nbd"]["reason"]) == (
        "fallback",
        "BG/NBD fit did not converge: ABNORMAL",
    )
    assert fits["gamma_gamma"]["reason"] == "Gamma-Gamma fit failed: FloatingPointError: overflow in exp"
    assert all(row["p_alive"] is None and row["expected_order_value"] is None for row in snap.values())


def test_judge_scores_names_each_problem_with_its_customers() -> None:
    import numpy as np

    from retention.segments import _judge_scores

    nan, inf = float("nan"), float("inf")
    scores = {
        "p_alive": np.array([0.5, nan, 1.2, 0.5, 0.5, 0.5, 0.9]),
        "expected_purchases_90d": np.array([0.1, 0.1, 0.1, -inf, -0.5, 2e6, -1e-9]),
        "discounted_purchases_12m": np.array([0.3, 0.3, 0.3, nan, 0.3, 0.3, 0.0]),
    }
    p_ok, forecast_ok, problems = _judge_scores(scores, np.array([1, 2, 3, 4, 5, 6, 7]))
    assert p_ok.tolist() == [True, False, False, True, True, True, True]
    assert forecast_ok.tolist() == [True, True, True, False, False, False, True]  # -1e-9 rounds to 0
    assert problems == [
        "non-finite p_alive for 2 customers",
        "p_alive outside [0, 1] for 3 customers",
        "non-finite expected purchases for 4 customers",
        "negative expected purchases for 5 customers",
        "expected purchases above 1,000,000 for 6 customers",
    ]


# ------------------------------------------------------------------------------ the summary


def test_the_summary_counts_and_moves_match_a_plain_count(warehouse_url) -> None:
    """segment_summary reads the snapshot in two grouped scans (issue 15); a plain-Python count of
    the same random rows, over three nights (moves are against the latest earlier night), with a
    value outside the known ones and customers who joined or left between the nights."""
    import random
    from collections import Counter

    from retention.db import engine_for
    from retention.segments import ABC_CLASSES, LIFECYCLE_PHASES, RFM_SEGMENTS, segment_summary

    engine = engine_for(warehouse_url)
    schema.metadata.create_all(engine)
    rng = random.Random(15)
    nights = [dt.date(2026, 11, 20), dt.date(2026, 11, 22), dt.date(2026, 11, 23)]
    columns = {
        "rfm_segment": RFM_SEGMENTS + ("odd",),
        "abc_class": ABC_CLASSES,
        "lifecycle_phase": LIFECYCLE_PHASES,
    }
    kept: dict[dt.date, dict[int, dict]] = {}
    for night in nights:
        ids = rng.sample(range(1, 400), 300)
        kept[night] = {
            cid: {
                "night": night,
                "customer_id": cid,
                "frequency": 1,
                "monetary": 10,
                "service_cost_12m": 0,
                "profit_12m": 0,
                "unprofitable": rng.random() < 0.2,
                **{column: rng.choice(values) for column, values in columns.items()},
            }
            for cid in ids
        }
        with engine.begin() as conn:
            conn.execute(schema.segment_snapshots.insert(), list(kept[night].values()))
    with engine.connect() as conn:
        summaries = {night: segment_summary(conn, night) for night in nights}
    names = {"rfm": "rfm_segment", "abc": "abc_class", "lifecycle": "lifecycle_phase"}
    for i, night in enumerate(nights):
        rows = kept[night]
        summary = summaries[night]
        assert summary["customers"] == len(rows)
        assert summary["unprofitable"] == sum(r["unprofitable"] for r in rows.values())
        for dimension, column in names.items():
            expected = Counter(r[column] for r in rows.values())
            known = {"rfm": RFM_SEGMENTS, "abc": ABC_CLASSES, "lifecycle": LIFECYCLE_PHASES}[dimension]
            assert list(summary[dimension])[: len(known)] == list(known)  # display order, zeros too
            assert {k: v for k, v in summary[dimension].items() if v} == dict(expected)
            if i == 0:
                assert summary["transitions"][dimension] == {}
                continue
            before = kept[nights[i - 1]]
            moves = Counter(
                f"{before[cid][column]}->{row[column]}"
                for cid, row in rows.items()
                if cid in before and before[cid][column] != row[column]
            )
            assert summary["transitions"][dimension] == dict(sorted(moves.items()))
    engine.dispose()
