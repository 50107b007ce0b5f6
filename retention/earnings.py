"""What retention earns: per occasion and month, the money customers brought after a message,
against the holdout that got none, and what the messages cost.

For each occasion, each month of its occasion dates and each horizon N in 30, 60 and 90 days,
over the occasions whose N days have passed by the report's night:

* customers messaged (selected for a message: intention to treat, so a message that bounced
  still counts, as it would in any honest trial) and held out;
* the share who bought again within N days, and revenue and margin per customer in those days
  (kept items: net of returns; orders from the occasion date on);
* the difference messaged minus holdout with a 95 % **Welch interval** (the normal-theory
  interval for a difference of two means with unequal variances, Welch-Satterthwaite degrees of
  freedom). It is computed from sums and sums of squares that one SQL pass returns
  (``sql/reports/earnings.sql``), so it costs the same at a million customers as at a hundred;
  a bootstrap would need every customer's figures in memory. Revenue is skewed, so with small
  groups the interval is rough: it is withheld below two customers per group;
* the cost: ``RETENTION_MESSAGE_COST`` per message (one per messaged customer), the incremental
  margin (margin uplift per customer times the customers messaged) and the return on that
  cost, ``(incremental margin - cost) / cost``, each with the interval carried through.

``retention report --json`` carries it under ``earnings`` (README, "What retention earns").
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from dataclasses import dataclass, field

from scipy.stats import t as student_t
from sqlalchemy import Connection

from retention.sqlmodels import select_model

__all__ = ["HORIZONS", "GroupSums", "earnings", "variant_report", "welch_interval"]

HORIZONS = (30, 60, 90)
GROUPS = {"selected": "messaged", "holdout": "holdout"}


@dataclass
class GroupSums:
    """One group's sums over the occasions whose window has passed (additive across months)."""

    customers: int = 0
    eligible: dict[int, int] = field(default_factory=lambda: dict.fromkeys(HORIZONS, 0))
    bought: dict[int, int] = field(default_factory=lambda: dict.fromkeys(HORIZONS, 0))
    sums: dict[tuple[str, int], float] = field(default_factory=dict)  # (revenue|margin[_sq], N)

    def add(self, row: dict) -> None:
        self.customers += int(row["customers"])
        for n in HORIZONS:
            self.eligible[n] += int(row[f"eligible_{n}"] or 0)
            self.bought[n] += int(row[f"bought_{n}"] or 0)
            for name in ("revenue", "revenue_sq", "margin", "margin_sq"):
                key = (name, n)
                self.sums[key] = self.sums.get(key, 0.0) + float(row[f"{name}_{n}"] or 0)

    def moments(self, metric: str, n: int) -> tuple[int, float, float]:
        """(count, mean, sample variance) of ``metric`` (revenue, margin, bought) per customer."""
        count = self.eligible[n]
        if metric == "bought":
            total = total_sq = float(self.bought[n])  # a 0/1 figure is its own square
        else:
            total, total_sq = self.sums.get((metric, n), 0.0), self.sums.get((f"{metric}_sq", n), 0.0)
        if count == 0:
            return 0, math.nan, math.nan
        mean = total / count
        variance = max(total_sq - total * total / count, 0.0) / (count - 1) if count > 1 else math.nan
        return count, mean, variance


def welch_interval(
    a: tuple[int, float, float], b: tuple[int, float, float], confidence: float = 0.95
) -> tuple[float, float] | None:
    """The Welch interval of mean(a) - mean(b) from (count, mean, variance); None below 2 each."""
    (n1, m1, v1), (n2, m2, v2) = a, b
    if n1 < 2 or n2 < 2:
        return None
    s1, s2 = v1 / n1, v2 / n2
    se = math.sqrt(s1 + s2)
    diff = m1 - m2
    if se == 0:
        return diff, diff
    df = (s1 + s2) ** 2 / ((s1 * s1) / (n1 - 1) + (s2 * s2) / (n2 - 1))
    q = float(student_t.ppf(0.5 + confidence / 2, df))
    return diff - q * se, diff + q * se


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def _interval(interval: tuple[float, float] | None, scale: float = 1.0, shift: float = 0.0) -> list | None:
    if interval is None:
        return None
    return [_round(interval[0] * scale + shift), _round(interval[1] * scale + shift)]


def _horizon(
    messaged: GroupSums,
    holdout: GroupSums,
    n: int,
    cost: float,
    confidence: float,
    names: tuple[str, str] = ("messaged", "holdout"),
) -> dict:
    figures: dict = {}
    for name, group in zip(names, (messaged, holdout), strict=True):
        count, rate, _ = group.moments("bought", n)
        _, revenue, _ = group.moments("revenue", n)
        _, margin, _ = group.moments("margin", n)
        figures[name] = {
            "customers": count,
            "repeat_rate": _round(rate),
            "revenue_per_customer": _round(revenue, 2),
            "margin_per_customer": _round(margin, 2),
        }
    for metric, key in (("bought", "repeat_rate"), ("revenue", "revenue"), ("margin", "margin")):
        a, b = messaged.moments(metric, n), holdout.moments(metric, n)
        digits = 4 if metric == "bought" else 2
        diff = a[1] - b[1] if a[0] and b[0] else None
        interval = welch_interval(a, b, confidence)
        name = "repeat_rate" if metric == "bought" else f"{key}_per_customer"
        figures[f"{name}_uplift"] = _round(diff, digits)
        figures[f"{name}_interval"] = _interval(interval)
    customers = figures[names[0]]["customers"]
    spent = customers * cost
    uplift = figures["margin_per_customer_uplift"]
    interval = welch_interval(messaged.moments("margin", n), holdout.moments("margin", n), confidence)
    figures["cost"] = _round(spent, 2)
    figures["incremental_margin"] = _round(uplift * customers, 2) if uplift is not None else None
    figures["incremental_margin_interval"] = _interval(interval, customers)
    if spent > 0 and uplift is not None:
        figures["return_on_cost"] = _round((uplift * customers - spent) / spent, 2)
        figures["return_on_cost_interval"] = _interval(interval, customers / spent, -1.0)
    else:
        figures["return_on_cost"] = figures["return_on_cost_interval"] = None
    return figures


def _block(groups: dict[str, GroupSums], cost: float, confidence: float) -> dict:
    messaged, holdout = groups.get("messaged", GroupSums()), groups.get("holdout", GroupSums())
    return {
        "messaged_customers": messaged.customers,
        "holdout_customers": holdout.customers,
        "horizons": {str(n): _horizon(messaged, holdout, n, cost, confidence) for n in HORIZONS},
    }


def earnings(
    conn: Connection, night: dt.date, message_cost: float, confidence: float = 0.95, min_sample: int = 300
) -> dict:
    """Per occasion: the ``total`` over all months and each ``months[YYYY-MM]``; and ``variants``:
    the wordings compared (:func:`variant_report`), as documented."""
    by_month: dict[str, dict[str, dict[str, GroupSums]]] = defaultdict(lambda: defaultdict(dict))
    for row in select_model(conn, "reports/earnings", {"night": night}, by_variant=False):
        group = GROUPS[row["status"]]
        month = str(row["occasion_month"])
        by_month[row["occasion"]][month].setdefault(group, GroupSums()).add(row)
    occasions = {}
    for occasion, months in sorted(by_month.items()):
        totals: dict[str, GroupSums] = {}
        for groups in months.values():
            for group, sums in groups.items():
                totals.setdefault(group, GroupSums()).add(_as_row(sums))
        occasions[occasion] = {
            "total": _block(totals, message_cost, confidence),
            "months": {m: _block(g, message_cost, confidence) for m, g in sorted(months.items())},
        }
    return {
        "night": night.isoformat(),
        "message_cost": message_cost,
        "confidence": confidence,
        "interval": "Welch (difference of means, unequal variances)",
        "occasions": occasions,
        "variants": variant_report(conn, night, min_sample, confidence),
    }


def variant_report(conn: Connection, night: dt.date, min_sample: int, confidence: float = 0.95) -> dict:
    """Variant b against variant a of each template with variants, on the same outcomes, per
    ``occasion/language``: each variant's figures, the differences b - a with their intervals,
    and a ``winner`` only when both variants have ``min_sample`` customers whose 30 days have
    passed and the margin per customer differs beyond its interval (else ``None``, and why)."""
    groups: dict[str, dict[str, GroupSums]] = defaultdict(dict)
    for row in select_model(conn, "reports/earnings", {"night": night}, by_variant=True):
        groups[row["occasion"]].setdefault(row["status"], GroupSums()).add(row)
    report = {}
    for key, by_variant in sorted(groups.items()):
        b, a = by_variant.get("b", GroupSums()), by_variant.get("a", GroupSums())
        horizons = {str(n): _horizon(b, a, n, 0.0, confidence, names=("b", "a")) for n in HORIZONS}
        for figures in horizons.values():
            for cost_key in ("cost", "incremental_margin", "incremental_margin_interval"):
                figures.pop(cost_key)
            figures.pop("return_on_cost"), figures.pop("return_on_cost_interval")
        first = horizons[str(HORIZONS[0])]
        sizes = (first["a"]["customers"], first["b"]["customers"])
        interval = first["margin_per_customer_interval"]
        if min(sizes) < min_sample:
            winner, why = None, f"not enough customers yet: a {sizes[0]}, b {sizes[1]} of {min_sample} each"
        elif interval is None or interval[0] <= 0 <= interval[1]:
            winner, why = None, f"no clear difference in margin per customer over {HORIZONS[0]} days"
        else:
            winner = "b" if interval[0] > 0 else "a"
            why = f"margin per customer over {HORIZONS[0]} days, {interval[0]:+.2f} to {interval[1]:+.2f} (b - a)"
        report[key] = {
            "a_customers": a.customers,
            "b_customers": b.customers,
            "horizons": horizons,
            "winner": winner,
            "why": why,
        }
    return report


def _as_row(sums: GroupSums) -> dict:
    """A group's sums in the SQL model's row shape, to add them up across months."""
    row: dict = {"customers": sums.customers}
    for n in HORIZONS:
        row[f"eligible_{n}"], row[f"bought_{n}"] = sums.eligible[n], sums.bought[n]
        for name in ("revenue", "revenue_sq", "margin", "margin_sq"):
            row[f"{name}_{n}"] = sums.sums.get((name, n), 0.0)
    return row
