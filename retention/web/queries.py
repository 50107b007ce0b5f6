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
  A search by address compares ``lower(email)``, the expression of the index
  ``ix_stg_customers_email_lower`` (migration 0007): a lookup, in any case the address is typed;
  the stopped kinds and suppression are read by the address hash (primary keys);
* quarantine: by ``night`` (leading column of ``uq_quarantine_copy``);
* feedback: answers by ``answered_at`` (index) within the weeks shown, comments by ``updated_at``
  (index), open follow-ups by ``status, created_at`` (index); a customer's phase at the answer
  by ``ix_segment_snapshots_customer``.

The holdout uplift is the exception: it must look at every messaged and holdout occasion up to
the night and the orders after each (1.4M occasions and 1.4M orders take 4-7 s on PostgreSQL at
1M customers; ``bench/bench_ui.py --synthetic``), so the page reads it through
:func:`cached_uplift`: computed once per night and warehouse state, in the background.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scipy.stats import binomtest
from sqlalchemy import Connection, Date, Engine, and_, case, cast, func, select

from retention import schema
from retention.feedback import FOLLOWUP_COLUMNS
from retention.registry import names as occasion_names
from retention.sqlmodels import select_model
from retention.unsubscribe import MESSAGE_KINDS, email_hash

__all__ = [
    "nights",
    "segment_counts",
    "lifecycle_flows",
    "occasion_outcomes",
    "find_customer",
    "customer_view",
    "message",
    "holdout_uplift",
    "cached_uplift",
    "quarantine_by_rule",
    "feedback_since",
    "feedback_weeks",
    "feedback_by_category",
    "feedback_by_phase",
    "feedback_comments",
    "open_followups",
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
    order = {name: i for i, name in enumerate(occasion_names())}
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
    # lower(email): the expression of ix_stg_customers_email_lower and ix_outbox_email_lower, so
    # the search is a lookup whatever the case of the address typed or stored (the lowest id if
    # two differ only in case). min(customer_id + 0), not min(customer_id): PostgreSQL may answer
    # a min() by walking the customer_id index until a row passes the filter, which for an
    # address nobody has is every row (3 s on a 1.3M-row outbox whose statistics were not yet
    # gathered); an expression has no index to walk, so the address index is used.
    needle = query.lower()
    for table in (schema.stg_customers, schema.outbox):
        found = conn.execute(
            select(func.min(table.c.customer_id + 0)).where(func.lower(table.c.email) == needle)
        ).scalar()
        if found is not None:
            return int(found)
    return None


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
        **(_unsubscribed(conn, person["email"]) if person else {"stopped_kinds": [], "suppressed": None}),
    }


def _unsubscribed(conn: Connection, email: str) -> dict:
    """What an address asked on the unsubscribe page: the kinds of message it stopped (with the
    date, in ``MESSAGE_KINDS`` order), and the reason it is suppressed, if it is."""
    prefs, supp = schema.unsubscribe_preferences, schema.suppression
    key = email_hash(email)
    stopped = dict(conn.execute(select(prefs.c.kind, prefs.c.night).where(prefs.c.email_hash == key)).all())
    reason = conn.execute(select(supp.c.reason).where(supp.c.email_hash == key)).scalar()
    order = list(MESSAGE_KINDS)
    kinds = sorted(stopped, key=lambda k: (order.index(k) if k in order else len(order), k))
    return {
        "stopped_kinds": [{"kind": kind, "since": _as_date(stopped[kind])} for kind in kinds],
        "suppressed": reason,
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
                box.c.template_version_id,
                box.c.variant,
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


class BackgroundReport:
    """A slow report of a night (``compute(conn, night)``: :func:`holdout_uplift`, the earnings)
    per (warehouse, night, state), each computed once in a background thread.

    The state is what the figures depend on: the newest ``run_log`` row (every stage writes one
    after its data, so a night's extract of late orders or a re-run of its occasions changes it),
    the newest occasion id and the number of tombstones (an erasure removes occasions and orders).
    A result computed while a stage was writing is kept under the state it started with, so the
    next request after the stage sees a new state and computes again.
    """

    def __init__(self, compute: Callable[[Connection, dt.date], Any], size: int = 32) -> None:
        self._compute_report = compute
        self._lock = threading.Lock()
        self._results: OrderedDict[tuple, list[Uplift]] = OrderedDict()
        self._running: dict[tuple, threading.Event] = {}
        self._errors: dict[tuple, BaseException] = {}
        self._size = size

    @staticmethod
    def _state(conn: Connection) -> tuple:
        log, occ = schema.run_log, schema.occasions
        return (
            conn.execute(select(func.max(log.c.run_log_id))).scalar(),
            conn.execute(select(func.max(occ.c.occasion_id))).scalar(),
            conn.execute(select(func.count()).select_from(schema.erasures)).scalar(),
        )

    def get(self, engine: Engine, night: dt.date, patience: float) -> list[Uplift] | None:
        with engine.connect() as conn:
            key = (engine.url.render_as_string(hide_password=True), night, self._state(conn))
        with self._lock:
            if key in self._errors:  # the last attempt failed: say why, the next request tries again
                raise self._errors.pop(key)
            if key in self._results:
                self._results.move_to_end(key)
                return self._results[key]
            done = self._running.get(key)
            if done is None:
                done = self._running[key] = threading.Event()
                threading.Thread(target=self._compute, args=(engine, night, key, done), daemon=True).start()
        done.wait(patience)
        with self._lock:
            if key in self._errors:
                raise self._errors.pop(key)
            return self._results.get(key)

    def _compute(self, engine: Engine, night: dt.date, key: tuple, done: threading.Event) -> None:
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    # JIT compiles this one-off aggregate for about a second before it runs.
                    conn.exec_driver_sql("set local jit = off")
                result = self._compute_report(conn, night)
            with self._lock:
                self._results[key] = result
                while len(self._results) > self._size:
                    self._results.popitem(last=False)
        except Exception as exc:  # noqa: BLE001 (handed to the request that asks next)
            with self._lock:
                self._errors[key] = exc
        finally:
            with self._lock:
                self._running.pop(key, None)
            done.set()


_UPLIFT_CACHE = BackgroundReport(holdout_uplift)


def cached_uplift(engine: Engine, night: dt.date, patience: float = 0.3) -> list[Uplift] | None:
    """:func:`holdout_uplift` of the night, or ``None`` while it is still being computed.

    Waits at most ``patience`` seconds: a small warehouse gets its figures in the same request;
    on a large one the page answers at once, says the figures are coming, and the computation
    that started goes on in the background for the next request (one per night and state).
    An error of the computation is raised by the request that asks next; the one after computes again.
    """
    return _UPLIFT_CACHE.get(engine, night, patience)


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


def stale_queued(conn: Connection, occasion: str, language: str, version_id: int | None) -> int:
    """Queued messages of (occasion, language) rendered from another template version than
    ``version_id`` (None: the shipped file): what ``retention rerender`` would render again."""
    box = schema.outbox
    return conn.execute(
        select(func.count()).where(
            box.c.status == "queued",
            box.c.occasion == occasion,
            box.c.language == language,
            box.c.template_version_id.is_distinct_from(version_id),
        )
    ).scalar_one()


# --- feedback (the Feedback tab; retention.feedback) ----------------------------------------------


def _week_start(conn: Connection, column: Any) -> Any:
    """The Monday (UTC) of a moment's week, as a date, in the warehouse's dialect."""
    if conn.dialect.name == "postgresql":
        return cast(func.date_trunc("week", column), Date)
    return func.date(column, "-6 days", "weekday 1")  # SQLite: back 6 days, then on to a Monday


def _day(conn: Connection, column: Any) -> Any:
    return cast(column, Date) if conn.dialect.name == "postgresql" else func.date(column)


def feedback_since(conn: Connection, weeks: int) -> dt.datetime | None:
    """The start (Monday 00:00 UTC) of the ``weeks`` weeks that end with the newest answer; None: no answer."""
    f = schema.feedback
    newest = conn.execute(select(func.max(f.c.answered_at))).scalar()  # the index's last entry
    if newest is None:
        return None
    newest = newest if isinstance(newest, dt.datetime) else dt.datetime.fromisoformat(str(newest))
    monday = newest.date() - dt.timedelta(days=newest.weekday())
    return dt.datetime.combine(monday - dt.timedelta(weeks=max(weeks, 1) - 1), dt.time(0))


def _average(value: object) -> float | None:
    return None if value is None else round(float(value), 2)


def feedback_weeks(conn: Connection, since: dt.datetime) -> list[dict]:
    """Ratings per week (UTC, Monday first) since ``since``: answers, average, and how many of each 1..5.

    Reads the answers of those weeks through the index on ``answered_at``.
    """
    f = schema.feedback
    week = _week_start(conn, f.c.answered_at).label("week")
    counts = [func.sum(case((f.c.rating == n, 1), else_=0)).label(f"r{n}") for n in range(1, 6)]
    rows = conn.execute(
        select(week, func.count().label("answers"), func.avg(f.c.rating).label("average"), *counts)
        .where(f.c.answered_at >= since, f.c.rating.is_not(None))
        .group_by(week)
        .order_by(week)
    ).mappings()
    return [
        {
            "week": _as_date(r["week"]),
            "answers": int(r["answers"]),
            "average": _average(r["average"]),
            "ratings": [int(r[f"r{n}"] or 0) for n in range(1, 6)],
        }
        for r in rows
    ]


def feedback_by_category(conn: Connection, since: dt.datetime) -> list[dict]:
    """Ratings per product category since ``since``: an order counts once in each category it holds.

    The answers of the period (index on ``answered_at``), their order lines (index on
    ``stg_order_items.order_id``) and products (primary key).
    """
    f, i, p = schema.feedback, schema.stg_order_items, schema.stg_products
    pairs = (
        select(f.c.customer_id, f.c.order_id, f.c.rating, p.c.category)
        .distinct()
        .select_from(f.join(i, i.c.order_id == f.c.order_id).join(p, p.c.product_id == i.c.product_id))
        .where(f.c.answered_at >= since, f.c.rating.is_not(None))
        .subquery()
    )
    rows = conn.execute(
        select(pairs.c.category, func.count().label("answers"), func.avg(pairs.c.rating).label("average"))
        .group_by(pairs.c.category)
        .order_by(func.count().desc(), pairs.c.category)
    ).mappings()
    return [
        {"category": r["category"], "answers": int(r["answers"]), "average": _average(r["average"])}
        for r in rows
    ]


def feedback_by_phase(conn: Connection, since: dt.datetime) -> list[dict]:
    """Ratings per lifecycle phase since ``since``: the customer's phase in their latest segment
    snapshot on or before the (UTC) day of the answer; "unknown" without one.

    One lookup per answer in ``ix_segment_snapshots_customer`` (customer_id, night).
    """
    f, s = schema.feedback, schema.segment_snapshots
    earlier = s.alias("earlier")
    latest = (
        select(func.max(earlier.c.night))
        .where(earlier.c.customer_id == f.c.customer_id, earlier.c.night <= _day(conn, f.c.answered_at))
        .scalar_subquery()
    )
    phase = func.coalesce(s.c.lifecycle_phase, "unknown").label("phase")
    rows = conn.execute(
        select(phase, func.count().label("answers"), func.avg(f.c.rating).label("average"))
        .select_from(f.outerjoin(s, and_(s.c.customer_id == f.c.customer_id, s.c.night == latest)))
        .where(f.c.answered_at >= since, f.c.rating.is_not(None))
        .group_by(phase)
    ).mappings()
    from retention.segments import LIFECYCLE_PHASES

    order = {name: i for i, name in enumerate(LIFECYCLE_PHASES)}
    out = [
        {"phase": r["phase"], "answers": int(r["answers"]), "average": _average(r["average"])} for r in rows
    ]
    return sorted(out, key=lambda r: (order.get(r["phase"], len(order)), r["phase"]))


def feedback_comments(conn: Connection, page: int = 0, per_page: int = 20) -> tuple[list[dict], bool]:
    """One page of comments, newest change first, and whether there are more (index on ``updated_at``)."""
    f = schema.feedback
    rows = [
        dict(r)
        for r in conn.execute(
            select(f.c.customer_id, f.c.order_id, f.c.rating, f.c.comment, f.c.updated_at)
            .where(f.c.comment.is_not(None))
            .order_by(f.c.updated_at.desc(), f.c.customer_id.desc(), f.c.order_id.desc())
            .limit(per_page + 1)
            .offset(max(page, 0) * per_page)
        ).mappings()
    ]
    return rows[:per_page], len(rows) > per_page


def open_followups(conn: Connection, limit: int = 200) -> list[dict]:
    """Open follow-ups of low ratings, newest first (index on ``status, created_at``)."""
    fu = schema.feedback_followups
    return [
        dict(r)
        for r in conn.execute(
            select(*FOLLOWUP_COLUMNS, fu.c.mailed_at)
            .where(fu.c.status == "open")
            .order_by(fu.c.created_at.desc(), fu.c.followup_id.desc())
            .limit(limit)
        ).mappings()
    ]
