"""An ordinary night's changes, written into the demo shop (the source database) between nights.

About ``share`` of the customers change in one local day: some place new orders, some
return an item, some cancel an order, some are new customers with a first order, and a
few products are edited (a new price). Every changed row gets an ``updated_at`` inside
the night's window, which is what the incremental extract reads (``retention.extract``).
Deterministic: the same shop, night and seed always give the same rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import Engine, bindparam, func, select

from retention import source
from retention.night import Night

__all__ = ["NightChanges", "write_night_changes"]

#: How the changed customers split between the kinds of change (the rest of 1.0: new customers).
SPLIT = {"new_orders": 0.55, "returns": 0.15, "cancellations": 0.10}
NEW_CUSTOMERS = 1.0 - sum(SPLIT.values())
#: Share of the catalogue edited in a night (at least one product).
PRODUCT_SHARE = 0.01


@dataclass
class NightChanges:
    """What one night's generator wrote (rows per kind of change)."""

    night: str
    customers_changed: int = 0
    rows: dict[str, int] = field(default_factory=dict)


def _moments(rng: np.random.Generator, night: Night, k: int) -> list[dt.datetime]:
    """``k`` moments inside the night's window (naive UTC, whole seconds), leaving 10 minutes' room."""
    start, end = night.window_start_naive, night.window_end_naive
    span = int((end - start).total_seconds()) - 600
    return [start + dt.timedelta(seconds=int(s)) for s in np.sort(rng.integers(0, span, k))]


def _sample(rng: np.random.Generator, values: np.ndarray, k: int) -> np.ndarray:
    return rng.choice(values, size=min(k, len(values)), replace=False) if len(values) else values


class _Writer:
    """The shop's tables as this night's generator sees them (ids to sample from, next free ids)."""

    def __init__(self, conn, rng: np.random.Generator, night: Night) -> None:
        self.conn, self.rng, self.night = conn, rng, night
        c, o, i, p = source.customers, source.orders, source.order_items, source.products
        self.customer_ids = np.array(conn.execute(select(c.c.customer_id).distinct()).scalars().all())
        products = conn.execute(
            select(p.c.product_id, p.c.price, p.c.cost).where(p.c.price.is_not(None), p.c.cost.is_not(None))
        ).all()
        self.products = [(pid, float(price), float(cost)) for pid, price, cost in products]
        self.next_order = int(conn.execute(select(func.max(o.c.order_id))).scalar() or 0) + 1
        self.next_item = int(conn.execute(select(func.max(i.c.order_item_id))).scalar() or 0) + 1
        self.next_customer = int(conn.execute(select(func.max(c.c.customer_id))).scalar() or 0) + 1
        self.max_order = self.next_order - 1
        self.max_item = self.next_item - 1

    def orders(self, customer_ids: list[int], moments: list[dt.datetime]) -> int:
        """A new order of 1-3 lines for each customer at each moment; returns the rows written."""
        orders, items = [], []
        for customer_id, moment in zip(customer_ids, moments, strict=True):
            order_id, self.next_order = self.next_order, self.next_order + 1
            updated = moment + dt.timedelta(seconds=int(self.rng.integers(120, 600)))
            orders.append(
                {
                    "order_id": order_id,
                    "customer_id": int(customer_id),
                    "ordered_at": moment,
                    "status": "placed",
                    "currency": "EUR",
                    "updated_at": updated,
                }
            )
            for index in self.rng.choice(len(self.products), int(self.rng.integers(1, 4)), replace=False):
                product_id, price, cost = self.products[index]
                items.append(
                    {
                        "order_item_id": self.next_item,
                        "order_id": order_id,
                        "product_id": product_id,
                        "quantity": int(self.rng.integers(1, 3)),
                        "unit_price": price,
                        "unit_cost": cost,
                        "returned_quantity": 0,
                        "updated_at": updated,
                    }
                )
                self.next_item += 1
        if orders:
            self.conn.execute(source.orders.insert(), orders)
            self.conn.execute(source.order_items.insert(), items)
        return len(orders) + len(items)

    def new_customers(self, k: int, moments: list[dt.datetime]) -> list[int]:
        """``k`` new customers, each like a random existing one (language, zone, names); their ids."""
        c = source.customers
        models = self.conn.execute(
            select(c.c.first_name, c.c.last_name, c.c.language, c.c.time_zone, c.c.country)
            .where(c.c.customer_id.in_([int(x) for x in _sample(self.rng, self.customer_ids, 4 * k)]))
            .where(c.c.first_name.is_not(None), c.c.time_zone.is_not(None))
        ).all()
        rows = []
        for n, moment in enumerate(moments[:k]):
            first, last, language, zone, country = models[n % len(models)]
            customer_id, self.next_customer = self.next_customer, self.next_customer + 1
            rows.append(
                {
                    "customer_id": customer_id,
                    "email": f"bench.{customer_id}@example.com",
                    "first_name": first,
                    "last_name": last,
                    "language": language,
                    "time_zone": zone,
                    "country": country,
                    "birthday": None if n % 3 else dt.date(1980 + n % 30, 1 + n % 12, 1 + n % 28),
                    "marketing_consent": n % 5 != 0,
                    "created_at": moment,
                    "updated_at": moment,
                }
            )
        if rows:
            self.conn.execute(c.insert(), rows)
        return [row["customer_id"] for row in rows]

    def returns(self, k: int, moments: list[dt.datetime]) -> int:
        """Whole-line returns of ``k`` random placed lines of older orders."""
        i = source.order_items
        candidates = [int(x) for x in self.rng.integers(1, self.max_item + 1, 3 * k)]
        lines = self.conn.execute(
            select(i.c.order_item_id, i.c.quantity)
            .where(i.c.order_item_id.in_(candidates), i.c.quantity >= 1, i.c.returned_quantity == 0)
            .limit(k)
        ).all()
        updates = [
            {"key": line_id, "returned": quantity, "moment": moment}
            for (line_id, quantity), moment in zip(lines, moments, strict=False)
        ]
        if updates:
            self.conn.execute(
                i.update()
                .where(i.c.order_item_id == bindparam("key"))
                .values(returned_quantity=bindparam("returned"), updated_at=bindparam("moment")),
                updates,
            )
        return len(updates)

    def cancellations(self, k: int, moments: list[dt.datetime]) -> int:
        """``k`` random placed orders cancelled."""
        o = source.orders
        candidates = [int(x) for x in self.rng.integers(1, self.max_order + 1, 3 * k)]
        keys = (
            self.conn.execute(
                select(o.c.order_id).where(o.c.order_id.in_(candidates), o.c.status == "placed").limit(k)
            )
            .scalars()
            .all()
        )
        updates = [{"key": key, "moment": m} for key, m in zip(keys, moments, strict=False)]
        if updates:
            self.conn.execute(
                o.update()
                .where(o.c.order_id == bindparam("key"))
                .values(status="cancelled", updated_at=bindparam("moment")),
                updates,
            )
        return len(updates)

    def products_edited(self, k: int, moments: list[dt.datetime]) -> int:
        """``k`` products get a price 5 % higher."""
        p = source.products
        chosen = _sample(self.rng, np.array([pid for pid, _, _ in self.products]), k)
        updates = [{"key": int(pid), "moment": m} for pid, m in zip(chosen, moments, strict=False)]
        if updates:
            self.conn.execute(
                p.update()
                .where(p.c.product_id == bindparam("key"))
                .values(price=p.c.price * 1.05, updated_at=bindparam("moment")),
                updates,
            )
        return len(updates)


def write_night_changes(engine: Engine, night: Night, seed: int, share: float = 0.01) -> NightChanges:
    """Write about ``share`` of the customers' changes for ``night`` into the shop at ``engine``."""
    rng = np.random.default_rng([seed, night.date.toordinal()])
    with engine.begin() as conn:
        writer = _Writer(conn, rng, night)
        k = max(4, round(share * len(writer.customer_ids)))
        counts = {kind: max(1, round(k * part)) for kind, part in SPLIT.items()}
        counts["new_customers"] = max(1, k - sum(counts.values()))
        buyers = [int(x) for x in _sample(rng, writer.customer_ids, counts["new_orders"])]
        rows = {"orders_and_lines": writer.orders(buyers, _moments(rng, night, len(buyers)))}
        new_ids = writer.new_customers(counts["new_customers"], _moments(rng, night, counts["new_customers"]))
        rows["new_customers"] = len(new_ids)
        rows["orders_and_lines"] += writer.orders(new_ids, _moments(rng, night, len(new_ids)))
        rows["returns"] = writer.returns(counts["returns"], _moments(rng, night, counts["returns"]))
        rows["cancellations"] = writer.cancellations(
            counts["cancellations"], _moments(rng, night, counts["cancellations"])
        )
        edited = max(1, round(PRODUCT_SHARE * len(writer.products)))
        rows["products_edited"] = writer.products_edited(edited, _moments(rng, night, edited))
    changed = len(buyers) + rows["new_customers"] + rows["returns"] + rows["cancellations"]
    return NightChanges(str(night.date), changed, rows)
