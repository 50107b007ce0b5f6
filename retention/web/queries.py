"""The warehouse reads behind the Retention page, one function per panel.

Each query is written to use a key the schema already has, so that a page answers fast on a
warehouse of a million customers:

* nights: ``run_log`` (index on ``night``), a few hundred rows;
* segments and flows: ``segment_report``, the night's counts pre-aggregated by the segments
  stage (primary key ``night, dimension, value``), never the million snapshot rows;
* occasions: ``occasions`` by ``night`` (index), joined to ``outbox`` by its unique key
  (``customer_id, occasion, occasion_date``);
* a customer: ``stg_customers`` by primary key, ``segment_snapshots`` by ``(night,
  customer_id)``, ``occasions`` and ``outbox`` by their unique keys' leading ``customer_id``.
  A search by address reads ``stg_customers.email``, which has no index yet: at 1M customers
  that is one sequential scan (see the report to the lead; an index on it makes it a lookup);
* quarantine: by ``night`` (leading column of ``uq_quarantine_copy``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass

from scipy.stats import binomtest
from sqlalchemy import Connection, and_, func, select

from retention import schema
from retention.settings import OCCASIONS
from retention.sqlmodels import select_model

__all__ = [
    "nights",
    "segment_counts",
    "lifecycle_flows",
    "occasion_outcomes",
    "find_customer",
    "customer_view",
    "message",
    "holdout_uplift",
    "quarantine_by_rule",
    "Uplift",
    "difference_interval",
]

#: An occasion's fate, as the page names it: outbox statuses, and why a candidate was not sent.
OUTCOMES = (
    "sent",
    "queued",
    "sending",
    "failed",
    "unknown",
    "cancelled",
    "expired",
    "skipped",
    "not rendered",
)


def nights(conn: Connection, limit: int = 90) -> list[dt.date]:
    """Nights whose extract completed, newest first."""
    log = schema.run_log
    rows = conn.execute(
        select(log.c.night)
        .where(log.c.stage == "extract", log.c.status == "ok")
        .group_by(log.c.night)
        .order_by(log.c.night.desc())
        .limit(limit)
    )
    return [_as_date(night) for (night,) in rows]


def _as_date(value: object) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def segment_counts(conn: Connection, night: dt.date) -> dict[str, dict[str, int]]:
    """Customers per RFM segment, ABC class and lifecycle phase, from ``segment_report``."""
    rep = schema.segment_report
    out: dict[str, dict[str, int]] = {"rfm": {}, "abc": {}, "lifecycle": {}}
    rows = conn.execute(
        select(rep.c.dimension, rep.c.value, rep.c.customers).where(
            rep.c.night == night, rep.c.dimension.in_(tuple(out))
        )
    )
    for dimension, value, customers in rows:
        out[dimension][value] = int(customers)
    return out


def lifecycle_flows(conn: Connection, night: dt.date) -> list[tuple[str, str, int]]:
    """Moves between lifecycle phases since the night before: (from, to, customers), largest first."""
    rep = schema.segment_report
    rows = conn.execute(
        select(rep.c.value, rep.c.customers).where(
            rep.c.night == night, rep.c.dimension == "lifecycle_transition"
        )
    )
    flows = []
    for value, customers in rows:
        before, _, after = value.partition("->")
        flows.append((before, after, int(customers)))
    return sorted(flows, key=lambda f: (-f[2], f[0], f[1]))


def _outcome(status: str, reason: str | None, box_status: str | None) -> tuple[str, str]:
    """The page's outcome and reason for one occasion row (see :data:`OUTCOMES`)."""
    if status == "selected":
        return (box_status, "") if box_status else ("not rendered", "data missing or render failed")
    if status == "holdout":
        return "skipped", "holdout"
    if status == "blocked":
        return "skipped", f"template blocked: {reason or ''}".strip()
    return "skipped", reason or status


def occasion_outcomes(conn: Connection, night: dt.date) -> list[dict]:
    """The night's occasions by type, language and outcome (with the reason of the skipped ones)."""
    occ, box = schema.occasions, schema.outbox
    query = (
        select(occ.c.occasion, occ.c.language, occ.c.status, occ.c.reason, box.c.status, func.count())
        .select_from(
            occ.outerjoin(
                box,
                and_(
                    box.c.customer_id == occ.c.customer_id,
                    box.c.occasion == occ.c.occasion,
                    box.c.occasion_date == occ.c.occasion_date,
                ),
            )
        )
        .where(occ.c.night == night)
        .group_by(occ.c.occasion, occ.c.language, occ.c.status, occ.c.reason, box.c.status)
    )
    merged: dict[tuple[str, str, str, str], int] = {}
    for occasion, language, status, reason, box_status, n in conn.execute(query):
        outcome, why = _outcome(status, reason, box_status)
        key = (occasion, language, outcome, why)
        merged[key] = merged.get(key, 0) + int(n)
    order = {name: i for i, name in enumerate(OCCASIONS)}
    rows = [
        {"occasion": o, "language": lang, "outcome": out, "reason": why, "count": n}
        for (o, lang, out, why), n in merged.items()
    ]
    return sorted(
        rows,
        key=lambda r: (order.get(r["occasion"], 99), r["occasion"], r["language"], r["outcome"], r["reason"]),
    )


def find_customer(conn: Connection, query: str) -> int | None:
    """The customer id a search means: an id, or an address (current, or one a message went to)."""
    query = query.strip()
    if query.isascii() and query.isdigit() and len(query) <= 18:
        return int(query)
    if "@" not in query:
        return None
    c, box = schema.stg_customers, schema.outbox
    found = conn.execute(select(c.c.customer_id).where(c.c.email == query).limit(1)).scalar()
    if found is None:
        found = conn.execute(select(box.c.customer_id).where(box.c.email == query).limit(1)).scalar()
    return found


def customer_view(conn: Connection, customer_id: int, night: dt.date, limit: int = 20) -> dict | None:
    """One customer: who, their segments on the night, recent occasions and messages."""
    c, s, occ, box = schema.stg_customers, schema.segment_snapshots, schema.occasions, schema.outbox
    person = (
        conn.execute(
            select(
                c.c.customer_id,
                c.c.email,
                c.c.first_name,
                c.c.last_name,
                c.c.language,
                c.c.time_zone,
                c.c.marketing_consent,
            ).where(c.c.customer_id == customer_id)
        )
        .mappings()
        .first()
    )
    messages = [
        dict(r)
        for r in conn.execute(
            select(
                box.c.outbox_id,
                box.c.occasion,
                box.c.occasion_date,
                box.c.language,
                box.c.subject,
                box.c.status,
                box.c.send_at,
                box.c.sent_at,
            )
            .where(box.c.customer_id == customer_id)
            .order_by(box.c.occasion_date.desc(), box.c.outbox_id.desc())
            .limit(limit)
        ).mappings()
    ]
    if person is None and not messages:
        return None
    segment = (
        conn.execute(
            select(
                s.c.rfm_segment,
                s.c.abc_class,
                s.c.lifecycle_phase,
                s.c.r_score,
                s.c.f_score,
                s.c.m_score,
                s.c.p_alive,
                s.c.clv_12m,
                s.c.unprofitable,
            ).where(s.c.night == night, s.c.customer_id == customer_id)
        )
        .mappings()
        .first()
    )
    occasions = [
        dict(r)
        for r in conn.execute(
            select(
                occ.c.occasion, occ.c.occasion_date, occ.c.night, occ.c.language, occ.c.status, occ.c.reason
            )
            .where(occ.c.customer_id == customer_id)
            .order_by(occ.c.occasion_date.desc(), occ.c.occasion)
            .limit(limit)
        ).mappings()
    ]
    return {
        "customer_id": customer_id,
        "person": dict(person) if person else None,
        "segment": dict(segment) if segment else None,
        "occasions": occasions,
        "messages": messages,
    }


def message(conn: Connection, outbox_id: int) -> dict | None:
    """One outbox row as it was sent (or will be): headers, text and HTML."""
    box = schema.outbox
    row = (
        conn.execute(
            select(
                box.c.outbox_id,
                box.c.customer_id,
                box.c.occasion,
                box.c.occasion_date,
                box.c.email,
                box.c.language,
                box.c.subject,
                box.c.text_body,
                box.c.html_body,
                box.c.message_id,
                box.c.status,
                box.c.send_at,
                box.c.sent_at,
                box.c.smtp_reply,
                box.c.template_hash,
            ).where(box.c.outbox_id == outbox_id)
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


@dataclass(frozen=True)
class Uplift:
    """Repeat-purchase rates within ``days`` of the occasion, messaged versus holdout."""

    occasion: str
    days: int
    messaged_customers: int  # all messaged (holdout) customers of the occasion up to the night
    holdout_customers: int
    messaged_n: int  # of them, those whose ``days`` have passed (the rate's denominator)
    messaged_bought: int
    holdout_n: int
    holdout_bought: int
    low: float | None  # 95 % interval of the difference of rates (Newcombe), None without data
    high: float | None

    @property
    def messaged_rate(self) -> float | None:
        return self.messaged_bought / self.messaged_n if self.messaged_n else None

    @property
    def holdout_rate(self) -> float | None:
        return self.holdout_bought / self.holdout_n if self.holdout_n else None

    @property
    def uplift(self) -> float | None:
        a, b = self.messaged_rate, self.holdout_rate
        return None if a is None or b is None else a - b


def difference_interval(k1: int, n1: int, k2: int, n2: int, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 - p2 (Newcombe 1998, method 10).

    Each rate gets a Wilson score interval (scipy's ``binomtest(...).proportion_ci``); the
    two are combined by hand because the combination is two lines and the library that has
    it (statsmodels' ``confint_proportions_2indep``) is not a dependency. Unlike the Wald
    interval it stays inside [-1, 1] and keeps its coverage for small groups and rates near
    0 or 1, which the holdout's 5 % of customers often are.
    """
    ci1 = binomtest(k1, n1).proportion_ci(confidence_level=confidence, method="wilson")
    ci2 = binomtest(k2, n2).proportion_ci(confidence_level=confidence, method="wilson")
    p1, p2 = k1 / n1, k2 / n2
    low = (p1 - p2) - math.sqrt((p1 - ci1.low) ** 2 + (ci2.high - p2) ** 2)
    high = (p1 - p2) + math.sqrt((ci1.high - p1) ** 2 + (p2 - ci2.low) ** 2)
    return low, high


def holdout_uplift(conn: Connection, night: dt.date) -> list[Uplift]:
    """Per occasion and window (30/60/90 days): sample sizes, rates and the interval of the uplift.

    Reads the same model as ``retention report`` (``sql/reports/holdout_uplift.sql``).
    """
    groups: dict[str, dict[str, dict]] = {}
    for row in select_model(conn, "reports/holdout_uplift", {"night": night}):
        group = "messaged" if row["status"] == "selected" else "holdout"
        groups.setdefault(row["occasion"], {})[group] = row
    out = []
    for occasion in sorted(groups):
        messaged, holdout = groups[occasion].get("messaged", {}), groups[occasion].get("holdout", {})
        for days in (30, 60, 90):
            n1, k1 = int(messaged.get(f"eligible_{days}") or 0), int(messaged.get(f"bought_{days}") or 0)
            n2, k2 = int(holdout.get(f"eligible_{days}") or 0), int(holdout.get(f"bought_{days}") or 0)
            low = high = None
            if n1 and n2:
                low, high = difference_interval(k1, n1, k2, n2)
            total1, total2 = int(messaged.get("customers") or 0), int(holdout.get("customers") or 0)
            out.append(Uplift(occasion, days, total1, total2, n1, k1, n2, k2, low, high))
    return out


def quarantine_by_rule(conn: Connection, night: dt.date, examples: int = 3) -> list[dict]:
    """The night's held-back rows per rule, with a few example rows each."""
    q = schema.quarantine
    counts = conn.execute(
        select(q.c.rule, func.count())
        .where(q.c.night == night)
        .group_by(q.c.rule)
        .order_by(func.count().desc())
    ).all()
    out = []
    for rule, n in counts:
        rows = conn.execute(
            select(q.c.source_table, q.c.source_key, q.c.detail, q.c.raw)
            .where(q.c.night == night, q.c.rule == rule)
            .order_by(q.c.quarantine_id)
            .limit(examples)
        ).mappings()
        listed = [{**{k: v for k, v in r.items() if k != "raw"}, "raw": json.loads(r["raw"])} for r in rows]
        out.append({"rule": rule, "count": int(n), "examples": listed})
    return out
