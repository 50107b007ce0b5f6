"""Build the context each template receives, from an occasion's details and the warehouse.

The variables per occasion are the contract written in ``templates/README.md``: every
value is formatted for the customer's locale here (Babel), so that templates only
place words. :func:`gather` fetches everything a night's pending messages need in a
few set-based queries; :func:`context_for` then assembles one message's context.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import Connection, func, select

from retention import schema
from retention.night import local_date
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


def _ids(items: list[dict], keys: tuple[str, ...]) -> list[int]:
    return sorted({int(item[k]) for item in items for k in keys if item.get(k) is not None})


def _chunks(ids: list[int], size: int = 5000):
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def gather(conn: Connection, items: list[dict]) -> Lookups:
    """Fetch every order, product, rule and last-order date the pending messages refer to."""
    lookups = Lookups()
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
    win_back = [item for item in items if item["occasion"] == "win_back"]
    for chunk in _chunks(_ids(win_back, ("customer_id",))):
        query = select(facts.c.customer_id, facts.c.last_order_at).where(facts.c.customer_id.in_(chunk))
        lookups.last_orders.update(dict(conn.execute(query).all()))
    return lookups


def _months_between(earlier: dt.date, later: dt.date) -> int:
    months = (later.year - earlier.year) * 12 + later.month - earlier.month
    return months - 1 if later.day < earlier.day else months


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
    context.update(_occasion_fields(item, lookups, fmt, occasion_date))
    return context


def _occasion_fields(item: dict, lookups: Lookups, fmt: Formatter, occasion_date: dt.date) -> dict:
    occasion = item["occasion"]
    order = lookups.orders.get(item.get("order_id"))
    if occasion == "thank_you":
        return {"order": {**fmt.order(order), "first": bool(int(item.get("first_order", 1)))}}
    if occasion == "anniversary":
        return {
            "years": int(item["years"]),
            "first_order": {"date": fmt.day(dt.date.fromisoformat(item["first_order_date"]))},
        }
    if occasion == "win_back":
        last = local_date(lookups.last_orders[item["customer_id"]], fmt.zone)
        return {"last_order": {"date": fmt.day(last)}, "months": max(_months_between(last, occasion_date), 1)}
    if occasion in ("next_purchase", "accessory"):
        return _suggestion_fields(item, lookups, fmt)
    if occasion == "new_stock":
        ids = [item.get(k) for k in ("product_1", "product_2", "product_3")]
        return {
            "category": item["category"],
            "products": [
                fmt.product(lookups.products[int(i)])
                for i in ids
                if i is not None and int(i) in lookups.products
            ],
        }
    if occasion == "feedback":
        return {
            "order": {"id": order["order_id"], "date": fmt.day(local_date(order["ordered_at"], fmt.zone))},
            "feedback_url": f"{fmt.shop_url}/feedback?order={order['order_id']}",
        }
    return {}


def _suggestion_fields(item: dict, lookups: Lookups, fmt: Formatter) -> dict:
    """``product``, ``because`` and the figures a suggestion is explained with (issue #12).

    The occasion row names the rule behind the suggestion (``rule_kind``, ``share``,
    ``made_for``, see ``sql/occasions/occ_next_purchase.sql``); rows recorded before it did
    (or whose rule no longer holds: ``share`` is None) fall back to tonight's product-level
    rule, and to 0 (no number quoted) without one.
    """
    occasion = item["occasion"]
    product = lookups.products[int(item["product_id"])]
    because = lookups.products[int(item["because_product_id"])]
    if item.get("share") is not None:
        share = int(item["share"])
    else:
        share = round(lookups.rules.get((occasion, because["product_id"], product["product_id"]), 0.0) * 100)
    fields = {"product": fmt.product(product), "because": {"name": because["name"]}, "share": share}
    if occasion == "next_purchase":
        # the share counts customers who bought in because's category and then in product's
        fields["similar"] = item.get("rule_kind") == "next_category"
    else:
        made_for = item.get("made_for")
        if made_for is None:
            made_for = product.get("accessory_for") == because["product_id"]
        fields["made_for"] = bool(int(made_for))
    return fields
