"""The warehouse schema: the current model that the migrations build.

Tables are SQLAlchemy Core objects so that the same definitions serve SQLite and
PostgreSQL. Changes go through a new Alembic migration in ``retention/migrations``;
``tests/test_migrations.py`` checks that the migrations produce exactly this model.

Naming follows the layers of DESIGN.md: ``stg_`` staging copies of the shop's
tables, marts (``customer_facts``), ``occasions``, ``outbox``; plus the bookkeeping
tables ``quarantine``, ``run_log``, ``extract_watermark`` and ``changed_customers``.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["metadata", "STAGING", "STAGING_KEYS"]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Money = Numeric(14, 2)

# --- staging: cleaned copies of the shop's tables, one row per source key ------------------------

stg_customers = Table(
    "stg_customers",
    metadata,
    Column("customer_id", Integer, primary_key=True, autoincrement=False),
    Column("email", Text, nullable=False),
    Column("first_name", Text, nullable=False),
    Column("last_name", Text),
    Column("language", String(8), nullable=False),
    Column("time_zone", String(64), nullable=False),
    Column("country", String(2)),
    Column("birthday", Date),
    Column("marketing_consent", Boolean, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("loaded_night", Date, nullable=False),
)

stg_products = Table(
    "stg_products",
    metadata,
    Column("product_id", Integer, primary_key=True, autoincrement=False),
    Column("sku", String(32)),
    Column("name", Text, nullable=False),
    Column("category", String(64), nullable=False),
    Column("accessory_for", Integer),
    Column("price", Money, nullable=False),
    Column("cost", Money, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("loaded_night", Date, nullable=False),
)

stg_orders = Table(
    "stg_orders",
    metadata,
    Column("order_id", Integer, primary_key=True, autoincrement=False),
    Column("customer_id", Integer, nullable=False, index=True),
    Column("ordered_at", DateTime, nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("loaded_night", Date, nullable=False),
)

stg_order_items = Table(
    "stg_order_items",
    metadata,
    Column("order_item_id", Integer, primary_key=True, autoincrement=False),
    Column("order_id", Integer, nullable=False, index=True),
    Column("product_id", Integer, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", Money, nullable=False),
    Column("unit_cost", Money, nullable=False),
    Column("returned_quantity", Integer, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("loaded_night", Date, nullable=False),
)

#: Staging table and its key column, per source table, in extract order.
STAGING = {
    "customers": stg_customers,
    "products": stg_products,
    "orders": stg_orders,
    "order_items": stg_order_items,
}
STAGING_KEYS = {
    "customers": "customer_id",
    "products": "product_id",
    "orders": "order_id",
    "order_items": "order_item_id",
}

# --- bookkeeping ---------------------------------------------------------------------------------

quarantine = Table(
    "quarantine",
    metadata,
    Column("quarantine_id", Integer, primary_key=True),
    Column("source_table", String(64), nullable=False),
    Column("source_key", String(64), nullable=False),
    Column("rule", String(64), nullable=False, index=True),
    Column("detail", Text, nullable=False),
    Column("row_hash", String(64), nullable=False),
    Column("raw", Text, nullable=False),  # the source row as JSON
    Column("night", Date, nullable=False),
    Column("run_id", String(250), nullable=False),
    UniqueConstraint("source_table", "source_key", "rule", "row_hash", name="uq_quarantine_row"),
)

run_log = Table(
    "run_log",
    metadata,
    Column("run_log_id", Integer, primary_key=True),
    Column("run_id", String(250), nullable=False),
    Column("night", Date, nullable=False, index=True),
    Column("stage", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # ok, failed
    Column("counts", Text, nullable=False),  # JSON object
    Column("message", Text),
    # Audit timestamps of the process, not business time: nothing reads them to decide anything.
    Column("started_at", DateTime, nullable=False),
    Column("finished_at", DateTime),
)

extract_watermark = Table(
    "extract_watermark",
    metadata,
    Column("source_table", String(64), primary_key=True),
    Column("watermark", DateTime, nullable=False),  # UTC; rows updated before it are loaded
    Column("night", Date, nullable=False),
)

changed_customers = Table(
    "changed_customers",
    metadata,
    Column("night", Date, primary_key=True),
    Column("customer_id", Integer, primary_key=True, autoincrement=False),
)

# --- marts ---------------------------------------------------------------------------------------

customer_facts = Table(
    "customer_facts",
    metadata,
    Column("customer_id", Integer, primary_key=True, autoincrement=False),
    Column("first_order_at", DateTime),
    Column("last_order_at", DateTime),
    Column("first_order_id", Integer),
    Column("orders", Integer, nullable=False),
    Column("items", Integer, nullable=False),
    Column("revenue", Money, nullable=False),
    Column("returns_value", Money, nullable=False),
    Column("margin", Money, nullable=False),
    Column("avg_order_value", Money),
    Column("night", Date, nullable=False),
)

# --- occasions and messages ----------------------------------------------------------------------

occasions = Table(
    "occasions",
    metadata,
    Column("occasion_id", Integer, primary_key=True),
    Column("customer_id", Integer, nullable=False),
    Column("occasion", String(32), nullable=False),
    Column("occasion_date", Date, nullable=False),  # the customer's local date
    Column("night", Date, nullable=False, index=True),
    Column("language", String(8), nullable=False),
    Column("details", Text, nullable=False),  # JSON: what the template may quote
    Column("status", String(16), nullable=False),  # selected, skipped, holdout
    Column("reason", Text),
    UniqueConstraint("customer_id", "occasion", "occasion_date", name="uq_occasions_key"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("outbox_id", Integer, primary_key=True),
    Column("customer_id", Integer, nullable=False),
    Column("occasion", String(32), nullable=False),
    Column("occasion_date", Date, nullable=False),
    Column("night", Date, nullable=False, index=True),
    Column("email", Text, nullable=False),
    Column("language", String(8), nullable=False),
    Column("subject", Text, nullable=False),
    Column("text_body", Text, nullable=False),
    Column("html_body", Text, nullable=False),
    Column("template_hash", String(64), nullable=False),
    Column("message_id", String(250), nullable=False),
    Column("send_at", DateTime, nullable=False),  # UTC
    Column("status", String(16), nullable=False),  # queued, sending, sent, failed, unknown
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_owner", String(128)),
    Column("lease_expires_at", DateTime),
    Column("sent_at", DateTime),
    Column("smtp_reply", Text),
    UniqueConstraint("customer_id", "occasion", "occasion_date", name="uq_outbox_key"),
    Index("ix_outbox_status_send_at", "status", "send_at"),
)

suppression = Table(
    "suppression",
    metadata,
    # sha256 of the lower-cased address: a suppression outlives the erasure of the person.
    Column("email_hash", String(64), primary_key=True),
    Column("reason", String(64), nullable=False),
    Column("night", Date),
)
