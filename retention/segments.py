"""Where each customer stands tonight: churn figures, RFM, ABC, lifecycle, profitability.

The heavy lifting is SQL over the one-row-per-customer facts (``sql/marts/
segment_snapshots.sql``). The churn models are fitted in Python, but never on order
lines or even on customers: on the distinct (repeat order days, recency, age) triples
with their counts, aggregated in SQL. A million customers collapse to a few hundred
thousand triples at most, which is what keeps the nightly fit fast.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from sqlalchemy import Connection, and_, func, select

from retention import churn, schema
from retention.night import Night
from retention.settings import Settings
from retention.sqlmodels import materialize, select_model

__all__ = ["fit_churn", "build_snapshots", "prune_snapshots", "segment_summary", "write_report", "draw_chart"]

log = logging.getLogger(__name__)

#: Display order of the named segments and phases (README, "Segments").
RFM_SEGMENTS = (
    "champions",
    "loyal",
    "potential_loyalist",
    "new",
    "promising",
    "need_attention",
    "about_to_sleep",
    "at_risk",
    "cannot_lose",
    "hibernating",
    "lost",
    "prospect",
)
LIFECYCLE_PHASES = ("awareness", "exploration", "expansion", "commitment", "dissolution")
ABC_CLASSES = ("A", "B", "C")

#: Fewer repeat customers than this and the models are not fitted (their figures stay empty).
MIN_REPEAT_CUSTOMERS = 20
DAYS_PER_MONTH = 365.25 / 12


def _columns(conn: Connection, model: str, params: dict, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """A small model's result as float columns."""
    rows = select_model(conn, model, params)
    return {name: np.array([float(row[name]) for row in rows], dtype=float) for name in names}


def _triples(conn: Connection, night: Night) -> dict[str, np.ndarray]:
    t = _columns(
        conn,
        "marts/churn_triples",
        {"window_end": night.window_end_naive},
        ("frequency", "recency", "age", "customers"),
    )
    return t


def _discounted_purchases(
    bg: churn.BgNbdParams, t: dict[str, np.ndarray], months: int, rate: float
) -> np.ndarray:
    """Expected purchases in each of the next months, discounted monthly, summed."""
    total = np.zeros_like(t["frequency"])
    previous = np.zeros_like(t["frequency"])
    for month in range(1, months + 1):
        cumulative = churn.expected_purchases(
            bg, month * DAYS_PER_MONTH, t["frequency"], t["recency"], t["age"]
        )
        total += (cumulative - previous) / (1 + rate) ** month
        previous = cumulative
    return total


def fit_churn(conn: Connection, night: Night, settings: Settings) -> dict:
    """Fit BG/NBD and Gamma-Gamma tonight, fill ``churn_scores``; returns the fitted parameters."""
    conn.execute(schema.churn_scores.delete())
    conn.execute(schema.churn_fits.delete().where(schema.churn_fits.c.night == night.date))
    t = _triples(conn, night)
    repeaters = float(t["customers"][t["frequency"] > 0].sum()) if len(t["customers"]) else 0.0
    if repeaters < MIN_REPEAT_CUSTOMERS:
        log.warning("churn: only %d repeat customers, models not fitted tonight", repeaters)
        return {"bg_nbd": None, "gamma_gamma": None, "triples": len(t["customers"])}
    started = time.perf_counter()
    bg = churn.fit_bg_nbd(t["frequency"], t["recency"], t["age"], weights=t["customers"])
    bg_seconds = time.perf_counter() - started
    scores = {
        "p_alive": churn.p_alive(bg, t["frequency"], t["recency"], t["age"]),
        "expected_purchases_90d": churn.expected_purchases(bg, 90.0, t["frequency"], t["recency"], t["age"]),
        "discounted_purchases_12m": _discounted_purchases(bg, t, 12, settings.churn_monthly_discount),
    }
    _write_scores(conn, t, scores)
    started = time.perf_counter()
    spend = _columns(conn, "marts/churn_spend", {}, ("frequency", "monetary", "customers"))
    gg = churn.fit_gamma_gamma(spend["frequency"], spend["monetary"], weights=spend["customers"])
    gg_seconds = time.perf_counter() - started
    _record_fit(conn, night, "bg_nbd", bg, bg_seconds)
    _record_fit(conn, night, "gamma_gamma", gg, gg_seconds)
    log.info("churn: BG/NBD %s in %.2fs; Gamma-Gamma %s in %.2fs", bg, bg_seconds, gg, gg_seconds)
    return {"bg_nbd": asdict(bg), "gamma_gamma": asdict(gg), "triples": len(t["customers"])}


def _write_scores(conn: Connection, t: dict[str, np.ndarray], scores: dict[str, np.ndarray]) -> None:
    rows = [
        {
            "frequency": int(t["frequency"][i]),
            "recency": int(t["recency"][i]),
            "age": int(t["age"][i]),
            "customers": int(t["customers"][i]),
            "p_alive": round(float(scores["p_alive"][i]), 4),
            "expected_purchases_90d": round(float(scores["expected_purchases_90d"][i]), 4),
            "discounted_purchases_12m": round(float(scores["discounted_purchases_12m"][i]), 4),
        }
        for i in range(len(t["frequency"]))
    ]
    for start in range(0, len(rows), 10_000):
        conn.execute(schema.churn_scores.insert(), rows[start : start + 10_000])


def _record_fit(conn: Connection, night: Night, model: str, params: object, seconds: float) -> None:
    values = {k: v for k, v in asdict(params).items() if k not in ("log_likelihood", "customers")}
    conn.execute(
        schema.churn_fits.insert().values(
            night=night.date,
            model=model,
            params=json.dumps(values, sort_keys=True),
            customers=params.customers,
            log_likelihood=round(params.log_likelihood, 4),
            seconds=round(seconds, 3),
        )
    )


def build_snapshots(conn: Connection, night: Night, settings: Settings, fits: dict) -> int:
    """Replace the night's snapshot with every customer's segments as of the night."""
    gg = fits.get("gamma_gamma") or {}
    params = {
        "night": night.date,
        "window_end": night.window_end_naive,
        "abc_a_share": settings.abc_a_share,
        # rounded so that 0.80 + 0.15 is 0.95 and a customer exactly on the line is judged fairly
        "abc_ab_share": round(settings.abc_a_share + settings.abc_b_share, 9),
        "exploration_max_orders": settings.exploration_max_orders,
        "commitment_min_orders": settings.commitment_min_orders,
        "commitment_min_days": settings.commitment_min_days,
        "commitment_min_orders_12m": settings.commitment_min_orders_12m,
        "dissolution_factor": settings.dissolution_factor,
        "dissolution_min_days": settings.dissolution_min_days,
        "default_gap_days": settings.default_gap_days,
        "service_cost_per_order": settings.service_cost_per_order,
        "gg_p": gg.get("p"),
        "gg_q": gg.get("q"),
        "gg_v": gg.get("v"),
    }
    snapshots = schema.segment_snapshots
    return materialize(conn, "marts/segment_snapshots", snapshots, params, snapshots.c.night == night.date)


def prune_snapshots(conn: Connection, night: Night, keep_days: int) -> int:
    """Drop daily snapshots older than ``keep_days`` nights, except those of the 1st of a month."""
    snapshots = schema.segment_snapshots
    cutoff = night.date - dt.timedelta(days=keep_days)
    old = conn.execute(select(snapshots.c.night).where(snapshots.c.night < cutoff).distinct()).scalars().all()
    doomed = [day for day in old if day.day != 1]
    if not doomed:
        return 0
    return conn.execute(snapshots.delete().where(snapshots.c.night.in_(doomed))).rowcount


def _counts(conn: Connection, night: dt.date, column, order: tuple[str, ...]) -> dict[str, int]:
    """Customers per value, every known value listed (zeros too) in display order."""
    s = schema.segment_snapshots
    found = dict(conn.execute(select(column, func.count()).where(s.c.night == night).group_by(column)).all())
    counts = {value: int(found.pop(value, 0)) for value in order}
    counts.update({str(k): int(v) for k, v in found.items()})  # never hide an unexpected value
    return counts


def _transitions(conn: Connection, night: dt.date, column_name: str) -> dict[str, int]:
    s = schema.segment_snapshots
    previous = conn.execute(select(func.max(s.c.night)).where(s.c.night < night)).scalar()
    if previous is None:
        return {}
    before = s.alias("before")
    now_col, before_col = s.c[column_name], before.c[column_name]
    rows = conn.execute(
        select(before_col, now_col, func.count())
        .join(before, and_(before.c.customer_id == s.c.customer_id, before.c.night == previous))
        .where(s.c.night == night, before_col != now_col)
        .group_by(before_col, now_col)
    )
    return {f"{a}->{b}": n for a, b, n in sorted(rows)}


def _abc_comparison(conn: Connection, night: dt.date) -> dict:
    """How much more often A customers buy, and how much larger their orders are, than the rest."""
    s, f = schema.segment_snapshots, schema.customer_facts
    is_a = s.c.abc_class == "A"
    rows = conn.execute(
        select(
            is_a.label("is_a"),
            func.count(),
            func.sum(f.c.orders_12m),
            func.sum(f.c.revenue_12m),
        )
        .join(f, f.c.customer_id == s.c.customer_id)
        .where(s.c.night == night, f.c.orders_12m > 0)
        .group_by(is_a)
    ).all()
    groups = {}
    for flag, customers, orders, revenue in rows:
        name = "A" if flag else "rest"
        groups[name] = {
            "customers": int(customers),
            "orders_per_customer_12m": round(float(orders) / customers, 3),
            "avg_order_value_12m": round(float(revenue) / float(orders), 2) if orders else 0.0,
        }
    if "A" in groups and "rest" in groups:
        a, rest = groups["A"], groups["rest"]
        groups["frequency_ratio"] = round(a["orders_per_customer_12m"] / rest["orders_per_customer_12m"], 2)
        if rest["avg_order_value_12m"]:
            groups["order_value_ratio"] = round(a["avg_order_value_12m"] / rest["avg_order_value_12m"], 2)
    return groups


def segment_summary(conn: Connection, night: dt.date) -> dict:
    """Customers per RFM segment, ABC class and lifecycle phase; transitions; the A-versus-rest figures."""
    s = schema.segment_snapshots
    customers = conn.execute(select(func.count()).where(s.c.night == night)).scalar()
    unprofitable = conn.execute(
        select(func.count()).where(s.c.night == night, s.c.unprofitable.is_(True))
    ).scalar()
    return {
        "customers": customers,
        "rfm": _counts(conn, night, s.c.rfm_segment, RFM_SEGMENTS),
        "abc": _counts(conn, night, s.c.abc_class, ABC_CLASSES),
        "lifecycle": _counts(conn, night, s.c.lifecycle_phase, LIFECYCLE_PHASES),
        "unprofitable": unprofitable,
        "transitions": {
            "lifecycle": _transitions(conn, night, "lifecycle_phase"),
            "abc": _transitions(conn, night, "abc_class"),
            "rfm": _transitions(conn, night, "rfm_segment"),
        },
        "abc_comparison": _abc_comparison(conn, night),
    }


def write_report(conn: Connection, night: dt.date, summary: dict) -> int:
    """Store the summary in ``segment_report`` (one row per dimension and value)."""
    table = schema.segment_report
    conn.execute(table.delete().where(table.c.night == night))
    rows = []
    for dimension in ("rfm", "abc", "lifecycle"):
        rows += [
            {"night": night, "dimension": dimension, "value": value, "customers": n, "metric": None}
            for value, n in summary[dimension].items()
        ]
    for dimension, moves in summary["transitions"].items():
        rows += [
            {
                "night": night,
                "dimension": f"{dimension}_transition",
                "value": move,
                "customers": n,
                "metric": None,
            }
            for move, n in moves.items()
        ]
    for group in ("A", "rest"):
        figures = summary["abc_comparison"].get(group)
        if figures:
            for metric in ("orders_per_customer_12m", "avg_order_value_12m"):
                rows.append(
                    {
                        "night": night,
                        "dimension": "abc_comparison",
                        "value": f"{group}:{metric}",
                        "customers": figures["customers"],
                        "metric": figures[metric],
                    }
                )
    rows.append(
        {
            "night": night,
            "dimension": "total",
            "value": "unprofitable",
            "customers": summary["unprofitable"],
            "metric": None,
        }
    )
    if rows:
        conn.execute(table.insert(), rows)
    return len(rows)


def format_summary(night: dt.date, summary: dict) -> str:
    """The summary as it appears in the task log."""
    lines = [f"Segments on {night}: {summary['customers']} customers, {summary['unprofitable']} unprofitable"]
    for dimension in ("rfm", "abc", "lifecycle"):
        lines.append(f"  {dimension:9} " + ", ".join(f"{k} {v}" for k, v in summary[dimension].items()))
    moves = summary["transitions"]["lifecycle"]
    if moves:
        lines.append("  moved     " + ", ".join(f"{k} {v}" for k, v in moves.items()))
    comparison = summary["abc_comparison"]
    if "frequency_ratio" in comparison:
        lines.append(
            f"  A customers order {comparison['frequency_ratio']}x as often as the rest"
            + (
                f", with orders {comparison['order_value_ratio']}x as large"
                if "order_value_ratio" in comparison
                else ""
            )
        )
    return "\n".join(lines)


def draw_chart(night: dt.date, summary: dict, path: Path) -> Path:
    """A PNG of customers per RFM segment, ABC class and lifecycle phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 5), gridspec_kw={"width_ratios": [3, 1, 2]})
    for ax, (key, title) in zip(
        axes, [("rfm", "RFM segment"), ("abc", "ABC class"), ("lifecycle", "Lifecycle phase")], strict=True
    ):
        labels = list(summary[key])
        values = [summary[key][k] for k in labels]
        ax.barh(labels, values, color="#2f5d50")
        ax.set_title(title)
        ax.invert_yaxis()
        for i, value in enumerate(values):
            ax.text(value, i, f" {value}", va="center", fontsize=8)
    fig.suptitle(f"Customers on {night} ({summary['customers']})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
