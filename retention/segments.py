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
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
from sqlalchemy import Connection, and_, case, func, or_, select, text

from retention import churn, schema
from retention.db import empty_table, insert_rows, refresh_statistics
from retention.night import DAYS_PER_MONTH, Night
from retention.settings import Settings
from retention.sqlmodels import bind_dates, materialize, render

__all__ = [
    "fit_churn",
    "build_snapshots",
    "snapshot_outcomes",
    "prune_snapshots",
    "segment_summary",
    "write_report",
    "draw_chart",
]

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

#: The documented minimums (README, "Churn and value"). Below them a model is not fitted tonight and
#: its figures stay empty (NULL): BG/NBD has four parameters and Gamma-Gamma three, and a handful of
#: customers who came back, or a handful of distinct histories, cannot tell them apart.
MIN_REPEAT_CUSTOMERS = 20
MIN_TRIPLES = 10
#: Gamma-Gamma learns how spend differs between customers: identical averages leave nothing to learn.
MIN_SPEND_VALUES = 2
#: Largest values the warehouse columns hold: churn_scores' Numeric(10, 4), money's Numeric(14, 2).
MAX_PURCHASES = 999_999.9999
MAX_MONEY = 999_999_999_999.99
#: Statuses of a model's outcome (run log, report): all figures; some customers' figures empty
#: (``reason`` says how many and why); no figures tonight (``reason`` says why).
FITTED, PARTIAL, FALLBACK = "fitted", "partial", "fallback"
#: The snapshot's churn figures, NULL where a fit gave none.
CHURN_FIGURES = ("p_alive", "expected_purchases_90d", "expected_order_value", "clv_12m")


def _columns(conn: Connection, model: str, params: dict, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """A model's result as float columns, read as plain tuples: at a million customers there are
    some 800,000 triples, and a dict per row cost 4 of the 6.6 s of reading them (issue 15)."""
    sql = render(model, conn.dialect.name)
    result = conn.execute(text(f"select {', '.join(names)} from ({sql}) as model"), bind_dates(conn, params))
    rows = result.fetchall()
    if not rows:
        return {name: np.zeros(0, dtype=float) for name in names}
    # Decimal and int columns alike: float() of each value. Per column from plain tuples: numpy
    # handed the Row objects themselves probes each for the array protocols through SQLAlchemy's
    # key lookup (0.81 s for 59k triples at 100k customers, 0.02 s this way).
    return {
        name: np.fromiter(map(float, column), dtype=float, count=len(rows))
        for name, column in zip(names, zip(*rows, strict=True), strict=True)
    }


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


def _outcome(status: str, reason: str | None, customers: int, **extra: object) -> dict:
    """One model's night: what the run log and ``retention report`` show."""
    out = {"status": status, "reason": reason, "customers": customers, "params": None}
    out.update(extra)
    if status != FITTED:
        log.warning("churn: %s: %s", status, reason)
    return out


def _attempt(model: str, fit: Callable[[], object]) -> tuple[object | None, float, str | None, str | None]:
    """Run one fit: (params, seconds, doubt, problem); ``problem`` set means the fit is unusable.

    A fit that cannot be made falls back with a recorded reason (DESIGN.md, non-negotiables), so
    any exception of the pure-numpy fit is caught here and becomes the reason. A fit that did not
    converge is unusable; one that ended at extreme values (``doubt``) is kept, and what it
    predicts is checked customer by customer.
    """
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            params = fit()
        except Exception as exc:  # any failure of the fit means "no figures tonight"
            log.warning("churn: %s fit failed", model, exc_info=True)
            return (
                None,
                time.perf_counter() - started,
                None,
                f"{model} fit failed: {type(exc).__name__}: {exc}",
            )
    seconds = time.perf_counter() - started
    doubts = [str(w.message) for w in caught if issubclass(w.category, churn.FitWarning)]
    for w in caught:
        if not issubclass(w.category, churn.FitWarning):
            log.warning("churn: %s fit: %s", model, w.message)
    if any(issubclass(w.category, churn.NotConvergedWarning) for w in caught):
        return None, seconds, None, doubts[0]
    values = {k: v for k, v in asdict(params).items() if k not in ("customers", "log_likelihood")}
    odd = {k: v for k, v in values.items() if not (np.isfinite(v) and v > 0)}
    if odd:
        return None, seconds, None, f"{model} fit gave non-finite or non-positive parameters {odd}"
    return params, seconds, "; ".join(doubts) or None, None


def _fit_bg_nbd(conn: Connection, night: Night, t: dict[str, np.ndarray], rate: float) -> dict:
    """BG/NBD tonight: fit, score every distinct triple, keep the triples whose figures hold."""
    buyers = int(t["customers"].sum())
    repeaters = int(t["customers"][t["frequency"] > 0].sum())
    if repeaters < MIN_REPEAT_CUSTOMERS or len(t["customers"]) < MIN_TRIPLES:
        reason = (
            f"too few buyers to fit BG/NBD: {repeaters} repeat customers (minimum {MIN_REPEAT_CUSTOMERS}), "
            f"{len(t['customers'])} distinct (frequency, recency, age) triples (minimum {MIN_TRIPLES})"
        )
        return _outcome(FALLBACK, reason, buyers, scored=0)
    fit = partial(churn.fit_bg_nbd, t["frequency"], t["recency"], t["age"], weights=t["customers"])
    bg, seconds, doubt, problem = _attempt("BG/NBD", fit)
    if bg is None:
        return _outcome(FALLBACK, problem, buyers, scored=0, seconds=round(seconds, 3))
    try:
        with np.errstate(all="ignore"):  # non-finite results are judged below, per triple
            scores = {
                "p_alive": churn.p_alive(bg, t["frequency"], t["recency"], t["age"]),
                "expected_purchases_90d": churn.expected_purchases(
                    bg, 90.0, t["frequency"], t["recency"], t["age"]
                ),
                "discounted_purchases_12m": _discounted_purchases(bg, t, 12, rate),
            }
    except (ValueError, ArithmeticError) as exc:
        reason = f"BG/NBD predictions failed: {type(exc).__name__}: {exc}"
        return _outcome(FALLBACK, reason, buyers, scored=0, seconds=round(seconds, 3), warning=doubt)
    p_ok, forecast_ok, problems = _judge_scores(scores, t["customers"])
    _write_scores(conn, t, scores, p_ok, forecast_ok)
    _record_fit(conn, night, "bg_nbd", bg, seconds)
    scored = int(t["customers"][p_ok & forecast_ok].sum())
    extra = {"scored": scored, "params": _params(bg), "seconds": round(seconds, 3), "warning": doubt}
    if scored == buyers:
        return _outcome(FITTED, None, buyers, **extra)
    status = PARTIAL if (p_ok | forecast_ok).any() else FALLBACK
    reason = f"BG/NBD figures of {buyers - scored} of {buyers} buyers left empty: " + "; ".join(problems)
    if doubt:
        reason += f" ({doubt})"
    return _outcome(status, reason, buyers, **extra)


def _judge_scores(
    scores: dict[str, np.ndarray], customers: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Which triples' p_alive and which triples' forecasts can be stored, and what was wrong.

    The two are judged apart: extreme parameters can break the forecast (scipy's hyp2f1
    overflows) while p_alive, a simpler expression, is still sound; it is kept then.
    """
    p, ep, dp = (
        np.round(scores[k], 4) for k in ("p_alive", "expected_purchases_90d", "discounted_purchases_12m")
    )
    finite = np.isfinite(ep) & np.isfinite(dp)
    p_checks = (
        ("non-finite p_alive", ~np.isfinite(p)),
        ("p_alive outside [0, 1]", np.isfinite(p) & ((p < 0) | (p > 1))),
    )
    forecast_checks = (
        ("non-finite expected purchases", ~finite),
        ("negative expected purchases", finite & ((ep < 0) | (dp < 0))),
        (
            f"expected purchases above {MAX_PURCHASES:,.0f}",
            finite & ((ep > MAX_PURCHASES) | (dp > MAX_PURCHASES)),
        ),
    )
    problems: list[str] = []

    def judge(checks) -> np.ndarray:
        valid = np.ones(len(customers), dtype=bool)
        for label, bad in checks:
            if bad.any():
                problems.append(f"{label} for {int(customers[bad].sum())} customers")
                valid &= ~bad
        return valid

    return judge(p_checks), judge(forecast_checks), problems


def _fit_gamma_gamma(conn: Connection, night: Night) -> dict:
    """Gamma-Gamma tonight: its p, q, v go into the snapshot's SQL, or nothing when unusable."""
    spend = _columns(conn, "marts/churn_spend", {}, ("frequency", "monetary", "customers"))
    repeaters = int(spend["customers"].sum())
    values = len(np.unique(spend["monetary"]))
    if repeaters < MIN_REPEAT_CUSTOMERS or values < MIN_SPEND_VALUES:
        reason = (
            f"too few buyers to fit Gamma-Gamma: {repeaters} repeat customers with spend (minimum "
            f"{MIN_REPEAT_CUSTOMERS}), {values} different average order values (minimum {MIN_SPEND_VALUES})"
        )
        return _outcome(FALLBACK, reason, repeaters)
    fit = partial(churn.fit_gamma_gamma, spend["frequency"], spend["monetary"], weights=spend["customers"])
    gg, seconds, doubt, problem = _attempt("Gamma-Gamma", fit)
    if gg is None:
        return _outcome(FALLBACK, problem, repeaters, seconds=round(seconds, 3))
    _record_fit(conn, night, "gamma_gamma", gg, seconds)
    extra = {"params": _params(gg), "seconds": round(seconds, 3), "warning": doubt}
    # Every customer's expected order value lies between their own average and the population
    # mean p v / (q - 1): when that mean is finite and fits a money column, so does every value.
    if gg.q <= 1.0:
        return _outcome(
            FALLBACK, f"Gamma-Gamma q = {gg.q:.4g} <= 1: mean order value infinite", repeaters, **extra
        )
    mean = gg.p * gg.v / (gg.q - 1.0)
    if not (np.isfinite(mean) and mean < MAX_MONEY):
        reason = f"Gamma-Gamma population mean order value {mean:.4g} is beyond the money columns"
        return _outcome(FALLBACK, reason, repeaters, **extra)
    return _outcome(FITTED, None, repeaters, **extra)


def _params(params: object) -> dict:
    return {k: v for k, v in asdict(params).items() if k not in ("customers",)}


def fit_churn(conn: Connection, night: Night, settings: Settings) -> dict:
    """Fit BG/NBD and Gamma-Gamma tonight and fill ``churn_scores``; never raises for the data.

    Returns ``{"bg_nbd": outcome, "gamma_gamma": outcome, "triples": n}``. An outcome has
    ``status`` (``fitted``, ``partial``: some customers' figures empty, ``fallback``: none tonight),
    ``reason`` (why figures are empty, None when fitted), ``customers`` (the model's population),
    ``scored`` (customers with figures), ``params``, ``seconds`` and ``warning`` (a doubt about a
    fit that was kept). Figures that are left empty are NULL in the snapshot.
    """
    empty_table(conn, schema.churn_scores)  # only this stage reads the scores
    conn.execute(schema.churn_fits.delete().where(schema.churn_fits.c.night == night.date))
    t = _triples(conn, night)
    bg = _fit_bg_nbd(conn, night, t, settings.churn_monthly_discount)
    gg = _fit_gamma_gamma(conn, night)
    log.info("churn: BG/NBD %s; Gamma-Gamma %s", bg, gg)
    return {"bg_nbd": bg, "gamma_gamma": gg, "triples": len(t["customers"])}


def _write_scores(
    conn: Connection,
    t: dict[str, np.ndarray],
    scores: dict[str, np.ndarray],
    p_ok: np.ndarray,
    forecast_ok: np.ndarray,
) -> None:
    """The figures that passed :func:`_judge_scores`; the others are NULL (no row: all NULL).

    Column-wise and through :func:`retention.db.insert_rows` (COPY on PostgreSQL): at a million
    customers there are some hundred thousand triples a night (issue 15).
    """
    keep = np.flatnonzero(p_ok | forecast_ok)

    def whole(name: str) -> list[int]:
        return t[name][keep].astype(np.int64).tolist()

    def figures(name: str, ok: np.ndarray) -> list[float | None]:
        values, good = scores[name][keep].tolist(), ok[keep].tolist()
        return [round(v, 4) if g else None for v, g in zip(values, good, strict=True)]

    columns = {
        "frequency": whole("frequency"),
        "recency": whole("recency"),
        "age": whole("age"),
        "customers": whole("customers"),
        "p_alive": figures("p_alive", p_ok),
        "expected_purchases_90d": figures("expected_purchases_90d", forecast_ok),
        "discounted_purchases_12m": figures("discounted_purchases_12m", forecast_ok),
    }
    insert_rows(conn, schema.churn_scores, list(columns), list(zip(*columns.values(), strict=True)))


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
    """Replace the night's snapshot with every customer's segments as of the night.

    Gamma-Gamma's parameters are passed only when it was fitted; otherwise they are NULL and so is
    every expected order value and CLV (SQL arithmetic with NULL gives NULL).
    """
    gg_fit = fits.get("gamma_gamma") or {}
    gg = (gg_fit.get("params") or {}) if gg_fit.get("status") == FITTED else {}
    snapshots = schema.segment_snapshots
    rows = materialize(
        conn,
        "marts/segment_snapshots",
        snapshots,
        snapshot_params(night, settings, gg),
        snapshots.c.night == night.date,
    )
    refresh_statistics(conn, snapshots.name, rows)  # the occasions read tonight's rows next
    return rows


def snapshot_params(night: Night, settings: Settings, gamma_gamma: dict | None = None) -> dict:
    """The bound parameters of ``marts/segment_snapshots`` for a night; without ``gamma_gamma``
    (its fitted p, q, v) every expected order value and CLV is NULL. The forecast binds the same."""
    gg = gamma_gamma or {}
    return {
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
        "max_money": MAX_MONEY,
    }


def snapshot_outcomes(conn: Connection, night: dt.date, fits: dict) -> dict:
    """Complete the fits' outcomes with what the night's snapshot holds; adds ``fits["clv"]``.

    Expected order values and CLVs that would not fit their money column are NULL (the snapshot's
    SQL guards them); they are counted here so that every empty figure has its reason.
    """
    s = schema.segment_snapshots
    missing = {name: func.sum(case((s.c[name].is_(None), 1), else_=0)) for name in CHURN_FIGURES}
    row = conn.execute(
        select(func.count().label("buyers"), *(v.label(k) for k, v in missing.items())).where(
            s.c.night == night, s.c.frequency > 0
        )
    ).one()
    buyers = int(row.buyers)
    bg, gg = fits["bg_nbd"], fits["gamma_gamma"]
    eov_missing, clv_missing = int(row.expected_order_value or 0), int(row.clv_12m or 0)
    if gg["status"] == FITTED and eov_missing:
        gg.update(
            status=PARTIAL, reason=f"expected order value of {eov_missing} buyers beyond {MAX_MONEY:,.2f}"
        )
    models = (("BG/NBD", bg), ("Gamma-Gamma", gg))
    reasons = [f"{label} {fit['status']}" for label, fit in models if fit["status"] != FITTED]
    beyond = clv_missing - int(
        conn.execute(
            select(func.count()).where(
                s.c.night == night,
                s.c.frequency > 0,
                or_(s.c.expected_purchases_90d.is_(None), s.c.expected_order_value.is_(None)),
            )
        ).scalar()
    )
    if beyond:
        reasons.append(f"CLV of {beyond} buyers beyond {MAX_MONEY:,.2f}")
    status = FITTED if not clv_missing else (FALLBACK if clv_missing == buyers else PARTIAL)
    reason = (
        f"CLV of {clv_missing} of {buyers} buyers left empty: " + "; ".join(reasons) if clv_missing else None
    )
    fits["clv"] = {"status": status, "reason": reason, "customers": buyers, "scored": buyers - clv_missing}
    return fits


def prune_snapshots(conn: Connection, night: Night, keep_days: int) -> int:
    """Drop daily snapshots older than ``keep_days`` nights, except those of the 1st of a month."""
    snapshots = schema.segment_snapshots
    cutoff = night.date - dt.timedelta(days=keep_days)
    old = conn.execute(select(snapshots.c.night).where(snapshots.c.night < cutoff).distinct()).scalars().all()
    doomed = [day for day in old if day.day != 1]
    if not doomed:
        return 0
    return conn.execute(snapshots.delete().where(snapshots.c.night.in_(doomed))).rowcount


#: The snapshot columns the summary counts by, and the order their values are shown in.
_DIMENSIONS = {
    "rfm": ("rfm_segment", RFM_SEGMENTS),
    "abc": ("abc_class", ABC_CLASSES),
    "lifecycle": ("lifecycle_phase", LIFECYCLE_PHASES),
}


def _in_order(found: dict, order: tuple[str, ...]) -> dict[str, int]:
    """Customers per value, every known value listed (zeros too) in display order."""
    found = dict(found)
    counts = {value: int(found.pop(value, 0)) for value in order}
    counts.update({str(k): int(v) for k, v in found.items()})  # never hide an unexpected value
    return counts


def _counts(conn: Connection, night: dt.date) -> tuple[int, int, dict[str, dict[str, int]]]:
    """Customers, unprofitable customers, and customers per value of each dimension: one scan of
    the night's snapshot grouped by all three dimensions at once (at most 360 groups), not one
    scan per figure (issue 15: at a million customers each scan is a second or more)."""
    s = schema.segment_snapshots
    columns = [s.c[column] for column, _ in _DIMENSIONS.values()]
    unprofitable = func.sum(case((s.c.unprofitable.is_(True), 1), else_=0))
    rows = conn.execute(
        select(*columns, func.count(), unprofitable).where(s.c.night == night).group_by(*columns)
    ).all()
    found: dict[str, Counter] = {name: Counter() for name in _DIMENSIONS}
    for row in rows:
        for i, name in enumerate(_DIMENSIONS):
            found[name][row[i]] += row[-2]
    counts = {name: _in_order(found[name], order) for name, (_, order) in _DIMENSIONS.items()}
    return sum(row[-2] for row in rows), sum(int(row[-1] or 0) for row in rows), counts


def _transitions(conn: Connection, night: dt.date) -> dict[str, dict[str, int]]:
    """Moves since the last snapshot before ``night``, per dimension (``"at_risk->lost": n``):
    one join of the two nights grouped by the three dimensions' before and after values."""
    s = schema.segment_snapshots
    previous = conn.execute(select(func.max(s.c.night)).where(s.c.night < night)).scalar()
    if previous is None:
        return {name: {} for name in _DIMENSIONS}
    before = s.alias("before")
    pairs = [(before.c[column], s.c[column]) for column, _ in _DIMENSIONS.values()]
    changed = or_(*(was != now for was, now in pairs))
    flat = [col for pair in pairs for col in pair]
    rows = conn.execute(
        select(*flat, func.count())
        .join(before, and_(before.c.customer_id == s.c.customer_id, before.c.night == previous))
        .where(s.c.night == night, changed)
        .group_by(*flat)
    ).all()
    moves: dict[str, Counter] = {name: Counter() for name in _DIMENSIONS}
    for row in rows:
        for i, name in enumerate(_DIMENSIONS):
            was, now = row[2 * i], row[2 * i + 1]
            if was is not None and now is not None and was != now:  # as SQL's "was <> now"
                moves[name][was, now] += row[-1]
    return {name: {f"{a}->{b}": n for (a, b), n in sorted(moves[name].items())} for name in _DIMENSIONS}


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
    customers, unprofitable, counts = _counts(conn, night)
    moves = _transitions(conn, night)
    return {
        "customers": customers,
        "rfm": counts["rfm"],
        "abc": counts["abc"],
        "lifecycle": counts["lifecycle"],
        "unprofitable": unprofitable,
        "transitions": {"lifecycle": moves["lifecycle"], "abc": moves["abc"], "rfm": moves["rfm"]},
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


def draw_chart(night: dt.date, summary: dict, path: Path) -> Path | None:
    """A PNG of customers per RFM segment, ABC class and lifecycle phase.

    ``None`` when matplotlib is not installed (the ``charts`` extra): the chart is for people
    looking at a demo, the night's figures are in the report either way.
    """
    try:
        import matplotlib
    except ModuleNotFoundError:
        log.info("segments chart skipped: matplotlib is not installed (pip install 'retention[charts]')")
        return None

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
