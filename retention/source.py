"""The shop's own database (the *source*), as the extract reads it.

The source is somebody else's system: its ids are not guaranteed unique, its
values are not validated. That is why none of these tables declares a primary
key or a foreign key; the extract's quality rules decide what is good.

Every table carries ``updated_at`` (UTC, naive ``DATETIME``), which drives the
incremental extract.

Read the source through :func:`source_engine`: with SQLite a text value whose bytes are
not UTF-8 would otherwise fail the whole fetch, not just its row.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    event,
)

from retention.db import engine_for

__all__ = [
    "metadata",
    "customers",
    "products",
    "orders",
    "order_items",
    "SOURCE_TABLES",
    "UndecodableText",
    "source_engine",
]

metadata = MetaData()

customers = Table(
    "customers",
    metadata,
    Column("customer_id", Integer, nullable=False, index=True),
    Column("email", Text),
    Column("first_name", Text),
    Column("last_name", Text),
    Column("language", String(8)),  # en, de, nb, et
    Column("time_zone", String(64)),  # IANA name, e.g. Europe/Oslo
    Column("country", String(2)),
    Column("birthday", Date),  # null when unknown
    Column("marketing_consent", Boolean, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False, index=True),
)

products = Table(
    "products",
    metadata,
    Column("product_id", Integer, nullable=False, index=True),
    Column("sku", String(32)),
    Column("name", Text),
    Column("category", String(64)),
    # The product this one is an accessory for (a docking station for a laptop); null otherwise.
    Column("accessory_for", Integer),
    Column("price", Numeric(12, 2)),
    Column("cost", Numeric(12, 2)),
    Column("currency", String(3)),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False, index=True),
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", Integer, nullable=False, index=True),
    Column("customer_id", Integer),
    Column("ordered_at", DateTime),  # UTC
    Column("status", String(16)),  # placed, cancelled
    Column("currency", String(3)),
    Column("updated_at", DateTime, nullable=False, index=True),
)

order_items = Table(
    "order_items",
    metadata,
    Column("order_item_id", Integer, nullable=False, index=True),
    Column("order_id", Integer),
    Column("product_id", Integer),
    Column("quantity", Integer),
    Column("unit_price", Numeric(12, 2)),
    Column("unit_cost", Numeric(12, 2)),
    Column("returned_quantity", Integer, nullable=False, default=0),
    Column("updated_at", DateTime, nullable=False, index=True),
)

#: Extract order: parents before children, so that reference checks see the parents.
SOURCE_TABLES = ("customers", "products", "orders", "order_items")


class UndecodableText(bytes):
    """A text value whose bytes are not UTF-8, as :func:`source_engine` hands it over.

    sqlite3 raises "Could not decode to UTF-8" for the whole fetch on such a value
    unless the connection's ``text_factory`` says otherwise; with this one the extract
    sees the bytes and quarantines the one row (rule ``invalid_text``).
    """


def decode_text(data: bytes) -> str | UndecodableText:
    """A sqlite3 ``text_factory``: UTF-8 text as ``str``, anything else as :class:`UndecodableText`."""
    try:
        return data.decode()
    except UnicodeDecodeError:
        return UndecodableText(data)


def source_engine(url: str) -> Engine:
    """An engine to read the shop's database with (see :func:`decode_text` for SQLite)."""
    engine = engine_for(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _tolerant_text)
    return engine


def _tolerant_text(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.text_factory = decode_text
