"""A tiny hand-built shop for tests: small enough to check every expectation by hand."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import Engine, insert

from retention import source
from retention.db import engine_for

T0 = dt.datetime(2026, 1, 1, 12, 0)


class Shop:
    """Builds a source database row by row; every timestamp is naive UTC."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = engine_for(url)
        source.metadata.drop_all(self.engine)
        source.metadata.create_all(self.engine)

    def _insert(self, table, **row) -> dict:
        with self.engine.begin() as conn:
            conn.execute(insert(table).values(**row))
        return row

    def customer(self, customer_id: int, *, updated_at: dt.datetime = T0, **values) -> dict:
        row = {
            "customer_id": customer_id,
            "email": f"customer{customer_id}@example.com",
            "first_name": f"Name{customer_id}",
            "last_name": "Tester",
            "language": "en",
            "time_zone": "Europe/Berlin",
            "country": "DE",
            "birthday": None,
            "marketing_consent": True,
            "created_at": T0 - dt.timedelta(days=400),
            "updated_at": updated_at,
        }
        row.update(values)
        return self._insert(source.customers, **row)

    def product(self, product_id: int, *, price: str = "100.00", cost: str = "60.00", **values) -> dict:
        row = {
            "product_id": product_id,
            "sku": f"SKU{product_id}",
            "name": f"Product {product_id}",
            "category": "garden",
            "accessory_for": None,
            "price": Decimal(price),
            "cost": Decimal(cost),
            "currency": "EUR",
            "created_at": T0 - dt.timedelta(days=500),
            "updated_at": T0 - dt.timedelta(days=500),
        }
        row.update(values)
        return self._insert(source.products, **row)

    def order(self, order_id: int, customer_id: int | None, ordered_at: dt.datetime, **values) -> dict:
        row = {
            "order_id": order_id,
            "customer_id": customer_id,
            "ordered_at": ordered_at,
            "status": "placed",
            "currency": "EUR",
            "updated_at": ordered_at,
        }
        row.update(values)
        return self._insert(source.orders, **row)

    def item(
        self,
        item_id: int,
        order_id: int,
        product_id: int,
        *,
        quantity: int = 1,
        updated_at: dt.datetime,
        **values,
    ) -> dict:
        row = {
            "order_item_id": item_id,
            "order_id": order_id,
            "product_id": product_id,
            "quantity": quantity,
            "unit_price": Decimal("100.00"),
            "unit_cost": Decimal("60.00"),
            "returned_quantity": 0,
            "updated_at": updated_at,
        }
        row.update(values)
        return self._insert(source.order_items, **row)
