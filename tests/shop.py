"""A tiny hand-built shop for tests: small enough to check every expectation by hand."""

from __future__ import annotations

import datetime as dt
import sqlite3
from contextlib import closing
from decimal import Decimal

from sqlalchemy import Engine, insert
from sqlalchemy.engine import make_url

from retention import source
from retention.db import engine_for

T0 = dt.datetime(2026, 1, 1, 12, 0)
DAY1 = dt.datetime(2026, 11, 19, 10, 0)  # inside night 2026-11-20's window (Berlin)


class BadUtf8(bytes):
    """Bytes to plant as a TEXT value (storage class TEXT) although they are not UTF-8."""


def _sqlite_value(value: object) -> object:
    """A value as SQLAlchemy would have stored it in SQLite (dates as text, money as REAL)."""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


class Shop:
    """Builds a source database row by row; every timestamp is naive UTC."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = engine_for(url)
        source.metadata.drop_all(self.engine)
        source.metadata.create_all(self.engine)

    def plant(self, table: str, key: object, **values: object) -> dict:
        """Write one row of ``table`` with raw sqlite3: any value, any storage class.

        The row is a good one (referring to customer 1, product 10 and order 100) except
        for ``values``; a :class:`BadUtf8` value is stored as TEXT that is not UTF-8.
        """
        row = {schema_key(table): key, **_GOOD[table](key), **values}
        columns = ", ".join(row)
        marks = ", ".join("CAST(? AS TEXT)" if isinstance(v, BadUtf8) else "?" for v in row.values())
        params = [bytes(v) if isinstance(v, BadUtf8) else _sqlite_value(v) for v in row.values()]
        with closing(sqlite3.connect(make_url(str(self.engine.url)).database)) as conn, conn:
            conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", params)
        return row

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


def schema_key(table: str) -> str:
    """The id column of a source table."""
    return {"customers": "customer_id", "products": "product_id", "orders": "order_id"}.get(
        table, "order_item_id"
    )


#: A good row of each table but for its key (see :meth:`Shop.plant`).
_GOOD = {
    "customers": lambda key: {
        "email": f"customer{key}@example.com",
        "first_name": "Anna",
        "last_name": "Tester",
        "language": "en",
        "time_zone": "Europe/Berlin",
        "country": "DE",
        "birthday": None,
        "marketing_consent": 1,
        "created_at": T0 - dt.timedelta(days=400),
        "updated_at": DAY1,
    },
    "products": lambda key: {
        "sku": "SKU",
        "name": "Product",
        "category": "garden",
        "accessory_for": None,
        "price": 100.0,
        "cost": 60.0,
        "currency": "EUR",
        "created_at": T0 - dt.timedelta(days=500),
        "updated_at": DAY1,
    },
    "orders": lambda key: {
        "customer_id": 1,
        "ordered_at": DAY1,
        "status": "placed",
        "currency": "EUR",
        "updated_at": DAY1,
    },
    "order_items": lambda key: {
        "order_id": 100,
        "product_id": 10,
        "quantity": 1,
        "unit_price": 100.0,
        "unit_cost": 60.0,
        "returned_quantity": 0,
        "updated_at": DAY1,
    },
}
