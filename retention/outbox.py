"""Render the night's selected occasions into the outbox, exactly once per key.

The outbox key is (customer, occasion, occasion date); the insert ignores a key that
exists already, so re-runs and racing runs can never create a second message. Each
message gets a ``send_at`` at the start of the send window in the customer's own
time zone on the occasion date.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import Counter, defaultdict
from email.utils import parseaddr
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, and_, select

from retention import schema
from retention.contexts import Lookups, context_for, gather
from retention.db import insert_ignore
from retention.night import Night
from retention.render import Renderer, TemplateProblem
from retention.settings import Settings
from retention.unsubscribe import sign

__all__ = ["fill", "message_id", "send_at"]

log = logging.getLogger(__name__)


def message_id(customer_id: int, occasion: str, occasion_date: dt.date, sender: str) -> str:
    """A Message-ID derived from the outbox key: a resend would carry the same id."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "retention.invalid"
    return f"<{occasion}.{customer_id}.{occasion_date:%Y%m%d}@{domain}>"


def send_at(occasion_date: dt.date, time_zone: str, local_time: dt.time) -> dt.datetime:
    """A local time of the customer's on a date (the send window's start or end), as naive UTC."""
    local = dt.datetime.combine(occasion_date, local_time, tzinfo=ZoneInfo(time_zone))
    return local.astimezone(dt.UTC).replace(tzinfo=None)


def fill(warehouse: Engine, night: Night, settings: Settings, secret: bytes) -> dict:
    """Render every selected occasion of the night that has no outbox row yet.

    A template that cannot render blocks its own occasion only: the problem is logged
    and returned under ``template_failures``; every other occasion still goes out.
    """
    renderer = Renderer(settings.templates_path, settings.default_language)
    counts: Counter = Counter()
    missing: Counter = Counter()  # messages skipped because the data they quote has gone
    failures: dict[str, str] = {}
    with warehouse.begin() as conn:
        pending = _pending(conn, night)
        lookups = gather(conn, pending)
        by_occasion: dict[str, list[dict]] = defaultdict(list)
        for item in pending:
            by_occasion[item["occasion"]].append(item)
        for occasion, items in by_occasion.items():
            try:
                rows = _message_rows(renderer, items, lookups, night, settings, secret, missing)
            except TemplateProblem as problem:
                failures[occasion] = str(problem)
                log.error("occasion %s not rendered: %s", occasion, problem)
                continue
            for start in range(0, len(rows), 1000):
                counts[occasion] += insert_ignore(
                    conn,
                    schema.outbox,
                    rows[start : start + 1000],
                    ("customer_id", "occasion", "occasion_date"),
                )
    log.info("outbox: %d new messages %s", sum(counts.values()), dict(counts))
    return {"queued": dict(counts), "template_failures": failures, "missing_data": dict(missing)}


def _pending(conn: Connection, night: Night) -> list[dict]:
    occ, cust, box = schema.occasions, schema.stg_customers, schema.outbox
    query = (
        select(occ, cust.c.email, cust.c.first_name, cust.c.last_name, cust.c.time_zone, cust.c.country)
        .join(cust, cust.c.customer_id == occ.c.customer_id)
        .outerjoin(
            box,
            and_(
                box.c.customer_id == occ.c.customer_id,
                box.c.occasion == occ.c.occasion,
                box.c.occasion_date == occ.c.occasion_date,
            ),
        )
        .where(occ.c.night == night.date, occ.c.status == "selected", box.c.outbox_id.is_(None))
        .order_by(occ.c.occasion, occ.c.customer_id)
    )
    rows = []
    for row in conn.execute(query).mappings():
        item = dict(row)
        item.update(json.loads(item.pop("details")))
        rows.append(item)
    return rows


def _message_rows(
    renderer: Renderer,
    items: list[dict],
    lookups: Lookups,
    night: Night,
    settings: Settings,
    secret: bytes,
    counts: Counter,
) -> list[dict]:
    """Render one occasion's messages; one whose data vanished is skipped and counted, not fatal."""
    rows = []
    for item in items:
        try:
            rows.append(_message_row(renderer, item, lookups, night, settings, secret))
        except (KeyError, TypeError, ValueError) as exc:
            counts[item["occasion"]] += 1
            log.warning(
                "%s for customer %s not rendered: the data it quotes is missing (%s: %s)",
                item["occasion"],
                item["customer_id"],
                type(exc).__name__,
                exc,
            )
    return rows


def _message_row(
    renderer: Renderer, item: dict, lookups: Lookups, night: Night, settings: Settings, secret: bytes
) -> dict:
    unsubscribe_url = (
        f"{settings.shop_url}/unsubscribe?token={sign(secret, item['customer_id'], item['email'])}"
    )
    context = context_for(item, lookups, settings, unsubscribe_url)
    message = renderer.render(item["occasion"], item["language"], context)
    occasion_date = item["occasion_date"]
    return {
        "customer_id": item["customer_id"],
        "occasion": item["occasion"],
        "occasion_date": occasion_date,
        "night": night.date,
        "email": item["email"],
        "language": item["language"],
        "subject": message.subject,
        "text_body": message.text,
        "html_body": message.html,
        "template_hash": message.template_hash,
        "message_id": message_id(item["customer_id"], item["occasion"], occasion_date, settings.sender),
        "send_at": send_at(occasion_date, item["time_zone"], settings.send_window_start),
        "send_before": send_at(occasion_date, item["time_zone"], settings.send_window_end),
        "time_zone": item["time_zone"],
        "status": "queued",
        "attempts": 0,
    }
