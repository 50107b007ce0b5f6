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
from decimal import Decimal
from email.utils import parseaddr
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, and_, func, select

from retention import schema
from retention.db import insert_ignore
from retention.night import Night
from retention.render import Renderer, TemplateProblem, format_day, format_money, salutation
from retention.settings import Settings
from retention.unsubscribe import sign

__all__ = ["fill", "message_id", "send_at"]

log = logging.getLogger(__name__)


def message_id(customer_id: int, occasion: str, occasion_date: dt.date, sender: str) -> str:
    """A Message-ID derived from the outbox key: a resend would carry the same id."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "retention.invalid"
    return f"<{occasion}.{customer_id}.{occasion_date:%Y%m%d}@{domain}>"


def send_at(occasion_date: dt.date, time_zone: str, window_start: dt.time) -> dt.datetime:
    """Start of the send window on the occasion date, local to the customer, as naive UTC."""
    local = dt.datetime.combine(occasion_date, window_start, tzinfo=ZoneInfo(time_zone))
    return local.astimezone(dt.UTC).replace(tzinfo=None)


def fill(warehouse: Engine, night: Night, settings: Settings, secret: bytes) -> dict:
    """Render every selected occasion of the night that has no outbox row yet."""
    renderer = Renderer(settings.templates_path, settings.default_language)
    counts: Counter = Counter()
    failures: dict[str, str] = {}
    with warehouse.begin() as conn:
        pending = _pending(conn, night)
        orders = _orders(conn, [p["order_id"] for p in pending if p.get("order_id")])
        by_occasion: dict[str, list[dict]] = defaultdict(list)
        for item in pending:
            by_occasion[item["occasion"]].append(item)
        for occasion, items in by_occasion.items():
            try:
                rows = [_message_row(renderer, item, orders, night, settings, secret) for item in items]
            except TemplateProblem as problem:
                # A broken template blocks its own occasion only; the others still go out.
                failures[occasion] = str(problem)
                log.error("occasion %s not rendered: %s", occasion, problem)
                continue
            counts[occasion] += insert_ignore(
                conn, schema.outbox, rows, ("customer_id", "occasion", "occasion_date")
            )
    log.info("outbox: %d new messages %s", sum(counts.values()), dict(counts))
    return {"queued": dict(counts), "template_failures": failures}


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


def _orders(conn: Connection, order_ids: list[int]) -> dict[int, dict]:
    if not order_ids:
        return {}
    orders, items = schema.stg_orders, schema.stg_order_items
    query = (
        select(
            orders.c.order_id,
            orders.c.ordered_at,
            orders.c.currency,
            func.sum(items.c.quantity * items.c.unit_price).label("total"),
        )
        .join(items, items.c.order_id == orders.c.order_id)
        .where(orders.c.order_id.in_(order_ids))
        .group_by(orders.c.order_id, orders.c.ordered_at, orders.c.currency)
    )
    return {row.order_id: dict(row._mapping) for row in conn.execute(query)}


def _message_row(
    renderer: Renderer, item: dict, orders: dict, night: Night, settings: Settings, secret: bytes
) -> dict:
    language, country, zone = item["language"], item["country"], item["time_zone"]
    context = {
        "customer": {
            "first_name": item["first_name"],
            "last_name": item["last_name"] or "",
            "salutation": salutation(language, item["first_name"], item["last_name"]),
        },
        "shop": {"name": settings.shop_name, "url": settings.shop_url},
        "unsubscribe_url": f"{settings.shop_url}/unsubscribe?token={sign(secret, item['customer_id'], item['email'])}",
        "occasion": item["occasion"],
    }
    order = orders.get(item.get("order_id"))
    if order:
        local_day = order["ordered_at"].replace(tzinfo=dt.UTC).astimezone(ZoneInfo(zone)).date()
        context["order"] = {
            "id": order["order_id"],
            "date": format_day(local_day, language, country),
            "total": format_money(Decimal(str(order["total"])), order["currency"], language, country),
        }
    message = renderer.render(item["occasion"], language, context)
    occasion_date = item["occasion_date"]
    return {
        "customer_id": item["customer_id"],
        "occasion": item["occasion"],
        "occasion_date": occasion_date,
        "night": night.date,
        "email": item["email"],
        "language": language,
        "subject": message.subject,
        "text_body": message.text,
        "html_body": message.html,
        "template_hash": message.template_hash,
        "message_id": message_id(item["customer_id"], item["occasion"], occasion_date, settings.sender),
        "send_at": send_at(occasion_date, zone, settings.send_window_start),
        "status": "queued",
        "attempts": 0,
    }
