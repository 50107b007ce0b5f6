"""A warehouse of N customers for timing the Retention page, written directly with set-based SQL.

Running real nights for a million customers takes too long for a benchmark; the page only
reads what the nights leave behind. :func:`fill` writes exactly those tables, with plausible
shapes, in a handful of ``INSERT ... SELECT`` statements over a number series
(``generate_series`` on PostgreSQL, a recursive CTE on SQLite):

* ``stg_customers``: N customers in en/de/nb/et (40/30/15/15 %), 85 % with marketing consent;
* ``stg_orders``: 0-4 orders each (about 1.4 on average) over three years, 4 % cancelled (the
  holdout uplift joins them);
* ``segment_snapshots``: both nights (2026-11-21 and 2026-11-22), 4 % of customers change
  lifecycle phase between them; ``segment_report`` aggregated from them as the segments stage does;
* ``occasions``: ``history`` nights (default 120) of 1.5 % of customers a night, 72 % selected,
  23 % skipped with the real reasons, 5 % holdout;
* ``outbox``: a message per selected occasion with a text and a ~4 KB HTML body; the latest
  night's are mostly queued, earlier ones sent (2 % failed, 1 % unknown, 1 % expired);
* ``quarantine`` (0.2 % of customers a night, both nights), ``run_log`` (every night's stages),
  ``suppression`` (1 % of addresses) and ``unsubscribe_preferences`` (0.5 %).

Pseudo-random but deterministic: every "random" choice is a multiplicative hash of the row
number, so the same N gives the same warehouse.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence

from sqlalchemy import Connection, Engine, func, select, text

from retention import schema
from retention.migrate import upgrade
from retention.segments import ABC_CLASSES, LIFECYCLE_PHASES, RFM_SEGMENTS
from retention.unsubscribe import MESSAGE_KINDS, email_hash

__all__ = ["NIGHTS", "fill"]

NIGHTS = (dt.date(2026, 11, 21), dt.date(2026, 11, 22))
_LATEST = NIGHTS[-1]
_PRIME = 4294967291  # largest prime below 2**32
_MULTIPLIERS = (
    2654435761,
    2246822519,
    3266489917,
    668265263,
    374761393,
    1103515245,
    2147483629,
    1500450271,
    3628273133,
    2860486313,
    3367900313,
    1073741789,
)
_STRIDE = 1000003  # a prime: k * _STRIDE mod N is a different customer for each k < N

#: (occasion, share in %) of a night's occasions.
_OCCASION_MIX = (
    ("thank_you", 25),
    ("birthday", 8),
    ("anniversary", 7),
    ("win_back", 15),
    ("feedback", 15),
    ("next_purchase", 12),
    ("accessory", 10),
    ("new_stock", 8),
)
_SKIP_REASONS = (
    "daily cap: thank_you goes out today",
    "weekly cap: 3 messages in the last 6 nights",
    "no marketing consent",
    "address is suppressed",
    "unsubscribed from suggestions",
)
_RULES = ("malformed_email", "unknown_customer", "negative_quantity", "future_order", "duplicate_key")
_STAGES = ("extract", "facts", "segments", "occasions", "render")

_TEXT = (
    "We hope you are enjoying your order. Here is what we thought you might like next, picked "
    "from what customers like you bought after a similar purchase.\n\n"
) * 4
_HTML = (
    "<tr><td style='padding:12px 24px;font-family:Helvetica,Arial,sans-serif;font-size:15px;"
    "line-height:1.5;color:#1d2330'>We hope you are enjoying your order. Here is what we thought you "
    "might like next.</td></tr>\n"
) * 18


class _Sql:
    """The few expressions that differ between PostgreSQL and SQLite."""

    def __init__(self, dialect: str) -> None:
        self.pg = dialect == "postgresql"

    def series(self, n: int) -> tuple[str, str]:
        """(the WITH clause to put before SELECT, the FROM item): rows ``g.i`` = 1..n."""
        if self.pg:
            return "", f"generate_series(1::bigint, {int(n)}) as g(i)"
        return f"with recursive g(i) as (select 1 union all select i + 1 from g where i < {int(n)})", "g"

    @staticmethod
    def h(expr: str, k: int, m: int) -> str:
        """A pseudo-random integer in [0, m) from an integer expression (multiplicative hash)."""
        return f"(((cast({expr} as bigint) * {_MULTIPLIERS[k]}) % {_PRIME}) % {int(m)})"

    @staticmethod
    def pick(expr: str, values: Sequence[str]) -> str:
        cases = " ".join(f"when {i} then '{value}'" for i, value in enumerate(values))
        return f"(case ({expr}) {cases} end)"

    @staticmethod
    def weighted(expr: str, mix: Sequence[tuple[str, int]]) -> str:
        """``expr`` in [0, 100) to a value, by shares in %."""
        cases, bound = [], 0
        for value, share in mix:
            bound += share
            cases.append(f"when ({expr}) < {bound} then '{value}'")
        return f"(case {' '.join(cases)} else '{mix[-1][0]}' end)"

    def date_minus(self, day: dt.date, days: str) -> str:
        if self.pg:
            return f"(date '{day.isoformat()}' - ({days})::int)"
        return f"date('{day.isoformat()}', '-' || ({days}) || ' days')"

    def ts_minus_minutes(self, moment: dt.datetime, minutes: str) -> str:
        if self.pg:
            return f"(timestamp '{moment:%Y-%m-%d %H:%M:%S}' - ({minutes}) * interval '1 minute')"
        return f"datetime('{moment:%Y-%m-%d %H:%M:%S}', '-' || ({minutes}) || ' minutes')"

    def date_plus_minutes(self, day: str, minutes: str) -> str:
        if self.pg:
            return f"(({day}) + ({minutes}) * interval '1 minute')"
        return f"datetime({day}, '+' || ({minutes}) || ' minutes')"


def _run(conn: Connection, label: str, sql: str, **params: object) -> None:
    started = time.perf_counter()
    result = conn.execute(text(sql), params)
    print(
        f"    {label:34} {max(result.rowcount, 0):>10} rows {time.perf_counter() - started:7.1f} s",
        flush=True,
    )


def _customers(conn: Connection, q: _Sql, n: int) -> None:
    with_, series = q.series(n)
    lang = f"(case when {q.h('i', 0, 20)} < 8 then 'en' when {q.h('i', 0, 20)} < 14 then 'de' " + (
        f"when {q.h('i', 0, 20)} < 17 then 'nb' else 'et' end)"
    )
    zone = f"(case {lang} when 'en' then 'Europe/London' when 'de' then 'Europe/Berlin' " + (
        "when 'nb' then 'Europe/Oslo' else 'Europe/Tallinn' end)"
    )
    country = f"(case {lang} when 'en' then 'GB' when 'de' then 'DE' when 'nb' then 'NO' else 'EE' end)"
    first = q.pick(q.h("i", 1, 8), ("Anna", "Jonas", "Ingrid", "Mari", "Lukas", "Emma", "Kristjan", "Sofie"))
    last = q.pick(q.h("i", 2, 6), ("Schmidt", "Hansen", "Tamm", "Smith", "Berg", "Saar"))
    domain = q.pick(
        q.h("i", 3, 5), ("example.com", "example.de", "example.no", "example.ee", "mail.example.org")
    )
    birthday = (
        f"(case when {q.h('i', 4, 10)} < 7 then {q.date_minus(dt.date(2008, 1, 1), q.h('i', 5, 20000))} end)"
    )
    created = q.ts_minus_minutes(dt.datetime(2026, 11, 21, 12), q.h("i", 6, 1500 * 1440))
    _run(
        conn,
        "stg_customers",
        f"""insert into stg_customers (customer_id, email, first_name, last_name, language, time_zone, country,
            birthday, marketing_consent, created_at, updated_at, loaded_night)
        {with_} select i, lower({first}) || '.' || lower({last}) || i || '@' || {domain}, {first}, {last},
            {lang}, {zone}, {country}, {birthday}, {q.h("i", 7, 100)} < 85, {created}, {created}, :night
        from {series}""",
        night=NIGHTS[0],
    )


def _orders(conn: Connection, q: _Sql, n: int) -> None:
    with_, series = q.series(4 * n)
    customer, k = f"((i - 1) % {n} + 1)", f"((i - 1) / {n})"
    count = f"(case when {q.h(customer, 8, 100)} < 25 then 0 when {q.h(customer, 8, 100)} < 60 then 1 " + (
        f"when {q.h(customer, 8, 100)} < 80 then 2 when {q.h(customer, 8, 100)} < 92 then 3 else 4 end)"
    )
    at = q.ts_minus_minutes(dt.datetime(2026, 11, 21, 22), q.h("i", 9, 1095 * 1440))
    _run(
        conn,
        "stg_orders",
        f"""insert into stg_orders (order_id, customer_id, ordered_at, status, currency, updated_at, loaded_night,
            arrived_night)
        {with_} select i, {customer}, {at}, case when {q.h("i", 10, 100)} < 96 then 'placed' else 'cancelled' end,
            'EUR', {at}, :night, :night
        from {series} where {k} < {count}""",
        night=NIGHTS[0],
    )


def _snapshots(conn: Connection, q: _Sql) -> None:
    c = "customer_id"
    for shift, night in enumerate(NIGHTS):
        phase = f"(({q.h(c, 3, 5)} + case when {q.h(c, 4, 100)} < 4 then {shift} else 0 end) % 5)"
        _run(
            conn,
            f"segment_snapshots {night}",
            f"""insert into segment_snapshots (night, customer_id, recency_days, tenure_days, frequency, monetary,
                r_score, f_score, m_score, rfm_segment, abc_class, lifecycle_phase, p_alive,
                expected_purchases_90d, expected_order_value, clv_12m, service_cost_12m, profit_12m, unprofitable)
            select :night, customer_id, {q.h(c, 5, 1000)} + {shift}, {q.h(c, 5, 1000)} + {q.h(c, 6, 800)} + {shift},
                {q.h(c, 8, 5)}, {q.h(c, 7, 200000)} / 100.0, {q.h(c, 9, 5)} + 1, {q.h(c, 10, 5)} + 1,
                {q.h(c, 11, 5)} + 1, {q.pick(q.h(c, 0, len(RFM_SEGMENTS)), RFM_SEGMENTS)},
                case when {q.h(c, 1, 10)} < 2 then 'A' when {q.h(c, 1, 10)} < 5 then 'B' else 'C' end,
                {q.pick(phase, LIFECYCLE_PHASES)}, {q.h(c, 2, 10000)} / 10000.0, {q.h(c, 3, 30000)} / 10000.0,
                {q.h(c, 4, 20000)} / 100.0, {q.h(c, 6, 90000)} / 100.0, 4.50, {q.h(c, 7, 30000)} / 100.0 - 40,
                {q.h(c, 7, 30000)} < 4000
            from stg_customers""",
            night=night,
        )
    for night in NIGHTS:
        for dimension, column in (
            ("rfm", "rfm_segment"),
            ("abc", "abc_class"),
            ("lifecycle", "lifecycle_phase"),
        ):
            _run(
                conn,
                f"segment_report {dimension} {night}",
                f"""insert into segment_report (night, dimension, value, customers, metric)
                select night, '{dimension}', {column}, count(*), null from segment_snapshots where night = :night
                group by night, {column}""",
                night=night,
            )
    for dimension, column in (("lifecycle", "lifecycle_phase"), ("abc", "abc_class"), ("rfm", "rfm_segment")):
        _run(
            conn,
            f"segment_report {dimension}_transition",
            f"""insert into segment_report (night, dimension, value, customers, metric)
            select :night, '{dimension}_transition', b.{column} || '->' || s.{column}, count(*), null
            from segment_snapshots s join segment_snapshots b on b.customer_id = s.customer_id and b.night = :before
            where s.night = :night and b.{column} <> s.{column} group by b.{column}, s.{column}""",
            night=NIGHTS[1],
            before=NIGHTS[0],
        )
    assert ABC_CLASSES == ("A", "B", "C")


def _occasions(conn: Connection, q: _Sql, n: int, history: int) -> None:
    per_night = max(1, n * 15 // 1000)
    with_, series = q.series(history * per_night)
    d, k = f"((i - 1) / {per_night})", f"((i - 1) % {per_night})"
    customer = f"(({k} * {_STRIDE} + {d} * 7919) % {n} + 1)"
    status = (
        f"(case when {q.h('i', 11, 100)} < 72 then 'selected' when {q.h('i', 11, 100)} < 95 then 'skipped' "
        + ("else 'holdout' end)")
    )
    reason = (
        f"(case {status} when 'skipped' then {q.pick(q.h('i', 2, len(_SKIP_REASONS)), _SKIP_REASONS)} "
        + ("when 'holdout' then 'control group: measured, not messaged' end)")
    )
    day = q.date_minus(_LATEST, d)
    _run(
        conn,
        f"occasions ({history} nights)",
        f"""insert into occasions (customer_id, occasion, occasion_date, night, language, details, status, reason)
        {with_} select c.customer_id, {q.weighted(q.h("i", 1, 100), _OCCASION_MIX)}, {day}, {day}, c.language,
            '{{"synthetic": true}}', {status}, {reason}
        from {series} join stg_customers c on c.customer_id = {customer}""",
    )


def _outbox(conn: Connection, q: _Sql) -> None:
    o = "o.occasion_id"
    send_at = q.date_plus_minutes("o.occasion_date", f"480 + {q.h(o, 3, 540)}")
    latest = f"(case when {q.h(o, 4, 100)} < 85 then 'queued' else 'sent' end)"
    earlier = f"(case when {q.h(o, 4, 100)} < 96 then 'sent' when {q.h(o, 4, 100)} < 98 then 'failed' " + (
        f"when {q.h(o, 4, 100)} < 99 then 'unknown' else 'expired' end)"
    )
    status = f"(case when o.night = :latest then {latest} else {earlier} end)"
    subject = (
        "(case o.occasion when 'thank_you' then 'Thank you for your order, ' when 'birthday' then 'Happy birthday, ' "
        "when 'win_back' then 'We miss you, ' else 'Picked for you, ' end) || c.first_name"
    )
    _run(
        conn,
        "outbox",
        f"""insert into outbox (customer_id, occasion, occasion_date, night, email, language, subject, text_body,
            html_body, template_hash, message_id, send_at, send_before, time_zone, status, attempts, sent_at,
            smtp_reply)
        select o.customer_id, o.occasion, o.occasion_date, o.night, c.email, o.language, {subject},
            'Hello ' || c.first_name || ',\n\n' || :text, '<html><body><table>' || :html || '<p>' || c.first_name
                || '</p></table></body></html>',
            'synthetic-template-hash', '<' || o.occasion_id || '.synthetic@shop.example.com>', {send_at},
            {q.date_plus_minutes("o.occasion_date", "1080")}, c.time_zone, {status},
            case when {status} = 'queued' then 0 else 1 end,
            case when {status} = 'sent' then {q.date_plus_minutes("o.occasion_date", "600")} end,
            case {status} when 'sent' then '250 2.0.0 Ok: queued' when 'failed' then '550 5.1.1 mailbox unavailable'
                end
        from occasions o join stg_customers c on c.customer_id = o.customer_id
        where o.status = 'selected'""",
        latest=_LATEST,
        text=_TEXT,
        html=_HTML,
    )


def _bookkeeping(conn: Connection, q: _Sql, n: int, history: int) -> None:
    per_night = max(1, n // 500)
    for night in NIGHTS:
        with_, series = q.series(per_night)
        _run(
            conn,
            f"quarantine {night}",
            f"""insert into quarantine (source_table, source_key, rule, detail, row_hash, raw, night, run_id,
                occurrence)
            {with_} select case when {q.h("i", 0, 2)} = 0 then 'customers' else 'orders' end, i,
                {q.pick(q.h("i", 1, len(_RULES)), _RULES)}, 'synthetic defect of row ' || i, 'h' || i,
                '{{"key": ' || i || ', "email": "not-an-address"}}', :night, 'synthetic', 1
            from {series}""",
            night=night,
        )
    with_, series = q.series(history * len(_STAGES))
    d, s = f"((i - 1) / {len(_STAGES)})", f"((i - 1) % {len(_STAGES)})"
    started = q.ts_minus_minutes(dt.datetime.combine(_LATEST, dt.time(1)), f"{d} * 1440")
    _run(
        conn,
        "run_log",
        f"""insert into run_log (run_id, night, stage, status, counts, message, started_at, finished_at)
        {with_} select 'synthetic-' || {d}, {q.date_minus(_LATEST, d)}, {q.pick(s, _STAGES)}, 'ok', '{{}}', null,
            {started}, {started}
        from {series}""",
    )


def _unsubscribed(conn: Connection, n: int) -> None:
    """1 % of addresses suppressed, 0.5 % with a kind or two stopped (sha256 in Python: SQLite has none)."""
    c = schema.stg_customers
    step_suppressed, step_kinds = 100, 200
    ids = list(range(7, n + 1, step_suppressed)) + list(range(11, n + 1, step_kinds))
    emails = {}
    for start in range(0, len(ids), 20000):
        chunk = ids[start : start + 20000]
        emails.update(
            conn.execute(select(c.c.customer_id, c.c.email).where(c.c.customer_id.in_(chunk))).all()
        )
    kinds = list(MESSAGE_KINDS)
    suppressed = [
        {"email_hash": email_hash(emails[i]), "reason": "unsubscribed", "night": NIGHTS[0]}
        for i in range(7, n + 1, step_suppressed)
    ]
    stopped = [
        {"email_hash": email_hash(emails[i]), "kind": kind, "night": NIGHTS[0]}
        for i in range(11, n + 1, step_kinds)
        for kind in {kinds[i % len(kinds)], kinds[(i // 7) % len(kinds)]}
    ]
    for table, rows in ((schema.suppression, suppressed), (schema.unsubscribe_preferences, stopped)):
        for start in range(0, len(rows), 20000):
            conn.execute(table.insert(), rows[start : start + 20000])
        print(f"    {table.name:34} {len(rows):>10} rows", flush=True)


def fill(engine: Engine, customers: int, history: int = 120) -> None:
    """Migrate an empty warehouse and fill what the Retention page reads (see the module docs)."""
    if customers < 1 or customers % _STRIDE == 0:
        raise ValueError(
            f"--synthetic {customers}: give a positive number of customers, not a multiple of {_STRIDE}"
        )
    upgrade(engine)
    with engine.connect() as conn:
        existing = conn.execute(select(func.count()).select_from(schema.stg_customers)).scalar()
    if existing:
        raise SystemExit(
            f"the warehouse {engine.url.render_as_string()} already has {existing} customers: "
            "--synthetic fills an empty one (create a new database)"
        )
    q = _Sql(engine.dialect.name)
    print(
        f"Filling a synthetic warehouse of {customers} customers, {history} nights of messages ...",
        flush=True,
    )
    started = time.perf_counter()
    with engine.begin() as conn:
        _customers(conn, q, customers)
        _orders(conn, q, customers)
        _snapshots(conn, q)
        _occasions(conn, q, customers, history)
        _outbox(conn, q)
        _bookkeeping(conn, q, customers, history)
        _unsubscribed(conn, customers)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("analyze"))
    print(f"  filled in {time.perf_counter() - started:.0f} s", flush=True)
