"""Held-out check of the expected order value (issue #12): repeat-only versus all-orders input.

The Gamma-Gamma model's monetary value is the mean of a customer's REPEAT transactions;
feeding it the mean of all orders, first ones included, overstates what customers spend next
when first orders are larger (they are, in the demo shop and in many real ones). This
measures both inputs on the same data:

1. The history before ``cutoff`` (placed orders, kept revenue, as customer_facts counts it):
   per customer the transactions (order days, UTC, as the nightly fit counts them), x = days - 1,
   and two means: of the repeat days (the first left out) and of all days.
2. Gamma-Gamma is fitted twice by retention.churn.fit_gamma_gamma, once per input, on the
   customers with x > 0 and a positive mean, as sql/marts/churn_spend.sql selects them; each
   customer's expected order value is E(M | x, m_x), the population mean for x = 0 (as the
   snapshot computes it).
3. Actual: each customer's mean value per transaction in [cutoff, cutoff + horizon_days).
   Evaluated: customers who bought before the cut-off and bought again in the horizon.

The mean absolute error of the two predictions against the actual values is returned, with
the fitted parameters. Orders are read per order (sums computed in SQL) and grouped per day in
Python: a few numbers per order, no order lines.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import asdict, dataclass

import numpy as np
from sqlalchemy import Engine, text

from retention import churn

__all__ = ["OrderValueCheck", "check_order_values"]

_ORDER_REVENUE = """
select orders.customer_id, orders.ordered_at, sum((items.quantity - items.returned_quantity) * items.unit_price)
from stg_orders as orders
inner join stg_order_items as items on items.order_id = orders.order_id
where orders.status = 'placed' and orders.ordered_at < :until
group by orders.order_id, orders.customer_id, orders.ordered_at
"""


@dataclass(frozen=True)
class OrderValueCheck:
    """The outcome of :func:`check_order_values`; money in the shop's currency."""

    cutoff: str
    horizon_days: int
    customers: int  # evaluated: bought before the cut-off and again within the horizon
    repeat_customers: int  # of those, with a repeat transaction before the cut-off
    mae_repeat_only: float
    mae_all_orders: float
    mean_actual: float
    mean_repeat_only: float
    mean_all_orders: float
    params_repeat_only: dict
    params_all_orders: dict

    def as_dict(self) -> dict:
        return asdict(self)


def _days(engine: Engine, until: dt.datetime) -> dict[int, dict[dt.date, float]]:
    """customer -> UTC order day -> kept revenue of that day, for orders before ``until``."""
    out: dict[int, dict[dt.date, float]] = defaultdict(lambda: defaultdict(float))
    with engine.connect() as conn:
        for customer_id, ordered_at, revenue in conn.execute(text(_ORDER_REVENUE), {"until": until}):
            if isinstance(ordered_at, str):  # SQLite without a declared type on the text() query
                ordered_at = dt.datetime.fromisoformat(ordered_at)
            out[int(customer_id)][ordered_at.date()] += float(revenue or 0)
    return out


def _fit(x: np.ndarray, m: np.ndarray) -> churn.GammaGammaParams:
    keep = (x > 0) & (m > 0)
    return churn.fit_gamma_gamma(x[keep], m[keep])


def _expected(gg: churn.GammaGammaParams, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """E(M | x, m_x) as sql/marts/segment_snapshots.sql computes it.

    Written out rather than churn.expected_order_value, which refuses m_x = 0 where x > 0: a
    customer whose repeat days were all sent back has that mean, and the snapshot scores them.
    """
    return gg.p * (gg.v + x * m) / (gg.p * x + gg.q - 1.0)


def check_order_values(engine: Engine, cutoff: dt.date, horizon_days: int = 90) -> OrderValueCheck:
    """Fit on the orders before ``cutoff`` (00:00 UTC), measure on the next ``horizon_days``."""
    start = dt.datetime.combine(cutoff, dt.time())
    end = start + dt.timedelta(days=horizon_days)
    every = _days(engine, end)
    customers, x, repeat_mean, all_mean, actual = [], [], [], [], []
    for customer_id, days in every.items():
        before = sorted((day, value) for day, value in days.items() if day < cutoff)
        after = [value for day, value in days.items() if day >= cutoff]
        if not before:
            continue
        repeats = [value for _, value in before[1:]]
        customers.append(customer_id)
        x.append(len(repeats))
        repeat_mean.append(sum(repeats) / len(repeats) if repeats else 0.0)
        all_mean.append(sum(value for _, value in before) / len(before))
        actual.append(sum(after) / len(after) if after else np.nan)
    xs, repeat_m, all_m, actual_m = (np.array(a, dtype=float) for a in (x, repeat_mean, all_mean, actual))
    gg_repeat, gg_all = _fit(xs, repeat_m), _fit(xs, all_m)
    evaluated = ~np.isnan(actual_m)
    predicted_repeat = _expected(gg_repeat, xs[evaluated], repeat_m[evaluated])
    predicted_all = _expected(gg_all, xs[evaluated], all_m[evaluated])
    truth = actual_m[evaluated]

    def params(gg: churn.GammaGammaParams) -> dict:
        return {"p": round(gg.p, 4), "q": round(gg.q, 4), "v": round(gg.v, 4), "customers": gg.customers}

    return OrderValueCheck(
        cutoff=cutoff.isoformat(),
        horizon_days=horizon_days,
        customers=int(evaluated.sum()),
        repeat_customers=int((xs[evaluated] > 0).sum()),
        mae_repeat_only=round(float(np.mean(np.abs(predicted_repeat - truth))), 2),
        mae_all_orders=round(float(np.mean(np.abs(predicted_all - truth))), 2),
        mean_actual=round(float(truth.mean()), 2),
        mean_repeat_only=round(float(predicted_repeat.mean()), 2),
        mean_all_orders=round(float(predicted_all.mean()), 2),
        params_repeat_only=params(gg_repeat),
        params_all_orders=params(gg_all),
    )
