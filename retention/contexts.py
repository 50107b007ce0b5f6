"""Build the context each template receives, from an occasion's details and the warehouse.

The variables per occasion are the contract written in ``templates/README.md``: every
value is formatted for the customer's locale here (Babel), so that templates only
place words. The variables every message has are built here; each occasion's own come
from its declaration (``Occasion.context``, :mod:`retention.registry`). :func:`gather` fetches everything a night's pending messages need in a
few set-based queries; :func:`context_for` then assembles one message's context.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import Connection, func, select

from retention import registry, schema
from retention.render import Formatter, salutation
from retention.settings import Settings

__all__ = ["Lookups", "gather", "context_for"]

_PRODUCT_KEYS = ("product_id", "because_product_id", "product_1", "product_2", "product_3")


@dataclass
class Lookups:
    """What the night's messages quote: orders, products, rules and last orders, by id."""

    orders: dict[int, dict] = field(default_factory=dict)
    products: dict[int, dict] = field(default_factory=dict)
    rules: dict[tuple[str, int, int], float] = field(default_factory=dict)
    last_orders: dict[int, dt.datetime] = field(default_factory=dict)
    #: What links in a message are built with (the feedback message's signed rating links).
    settings: Settings | None = field(default=None, repr=False)
    secret: bytes | None = field(default=None, repr=False)


def _ids(items: list[dict], keys: tuple[str, ...]) -> list[int]:
    return sorted({int(item[k]) for item in items for k in keys if item.get(k) is not None})


def _chunks(ids: list[int], size: int = 5000):
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def gather(
    conn: Connection, items: list[dict], settings: Settings | None = None, secret: bytes | None = None
) -> Lookups:
    """Fetch every order, product, rule and last-order date the pending messages refer to.

    Orders and products by the ids in the items' details (``order_id``, ``product_id``...);
    last orders for the occasions that declare they need them (``Occasion.needs``).
    """
    lookups = Lookups(settings=settings, secret=secret)
    orders, lines, products = schema.stg_orders, schema.stg_order_items, schema.stg_products
    for chunk in _chunks(_ids(items, ("order_id",))):
        query = (
            select(
                orders.c.order_id,
                orders.c.ordered_at,
                orders.c.currency,
                func.coalesce(func.sum(lines.c.quantity * lines.c.unit_price), 0).label("total"),
            )
            # outer: an order whose lines were all held back still has a date worth quoting
            .outerjoin(lines, lines.c.order_id == orders.c.order_id)
            .where(orders.c.order_id.in_(chunk))
            .group_by(orders.c.order_id, orders.c.ordered_at, orders.c.currency)
        )
        lookups.orders.update({row.order_id: dict(row._mapping) for row in conn.execute(query)})
    for chunk in _chunks(_ids(items, _PRODUCT_KEYS)):
        query = select(
            products.c.product_id,
            products.c.sku,
            products.c.name,
            products.c.price,
            products.c.currency,
            products.c.accessory_for,
        )
        lookups.products.update(
            {
                row.product_id: dict(row._mapping)
                for row in conn.execute(query.where(products.c.product_id.in_(chunk)))
            }
        )
    rules = schema.product_rules
    for chunk in _chunks(_ids(items, ("because_product_id",))):
        query = select(
            rules.c.kind, rules.c.antecedent_product_id, rules.c.consequent_product_id, rules.c.confidence
        )
        for row in conn.execute(query.where(rules.c.antecedent_product_id.in_(chunk))):
            lookups.rules[(row.kind, row.antecedent_product_id, row.consequent_product_id)] = float(
                row.confidence
            )
    facts = schema.customer_facts
    known = registry.occasions(settings)
    wanting = [item for item in items if item["occasion"] in known and "last_orders" in known[item["occasion"]].needs]
    for chunk in _chunks(_ids(wanting, ("customer_id",))):
        query = select(facts.c.customer_id, facts.c.last_order_at).where(facts.c.customer_id.in_(chunk))
        lookups.last_orders.update(dict(conn.execute(query).all()))
    return lookups


def context_for(item: dict, lookups: Lookups, settings: Settings, unsubscribe_url: str) -> dict:
    """The template context of one pending message (see ``templates/README.md``)."""
    fmt = Formatter(
        item["language"], item["country"], settings.shop_url, settings.currency, item["time_zone"]
    )
    occasion_date = item["occasion_date"]
    if isinstance(occasion_date, str):
        occasion_date = dt.date.fromisoformat(occasion_date)
    context = {
        "customer": {
            "first_name": item["first_name"],
            "last_name": item["last_name"] or "",
            "salutation": salutation(item["language"], item["first_name"], item["last_name"]),
            "language": item["language"],
            "country": item["country"] or "",
        },
        "shop": {"name": settings.shop_name, "url": settings.shop_url},
        "unsubscribe_url": unsubscribe_url,
        "occasion": item["occasion"],
        "occasion_date": fmt.day(occasion_date),
    }
    context.update(registry.occasion(item["occasion"], settings).context(item, lookups, fmt, occasion_date))
    return context
