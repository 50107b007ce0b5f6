"""64-bit source ids and wider sums on PostgreSQL; every copy of a bad row in the quarantine

Revision ID: 0002
Revises: 0001

The shop's ids are integers up to 2**63 - 1, so every column holding a customer, product,
order or order-line id becomes BIGINT on PostgreSQL (SQLite's INTEGER is 64-bit already,
and an INTEGER PRIMARY KEY must stay one to remain the rowid). Sums of order lines get
room for ten thousand lines of the largest admitted value: NUMERIC(18, 2) (SQLite
enforces no precision and keeps its declared type).

The quarantine's key gains the night and an occurrence number: identical copies of a bad
row read in one night are each recorded (1, 2, ...), a re-run of the night adds nothing.
Existing rows are occurrence 1 of the night they were first recorded.

A churn score's figures may each be NULL: when extreme fitted parameters break the
forecast, p_alive can still be sound and is kept.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: (table, column, nullable) of every column holding a source id (or a sum of quantities).
ID_COLUMNS = (
    ("stg_customers", "customer_id", False),
    ("stg_products", "product_id", False),
    ("stg_products", "accessory_for", True),
    ("stg_orders", "order_id", False),
    ("stg_orders", "customer_id", False),
    ("stg_order_items", "order_item_id", False),
    ("stg_order_items", "order_id", False),
    ("stg_order_items", "product_id", False),
    ("changed_customers", "customer_id", False),
    ("customer_facts", "customer_id", False),
    ("customer_facts", "first_order_id", True),
    ("customer_facts", "items", False),
    ("customer_facts", "returned_items", False),
    ("segment_snapshots", "customer_id", False),
    ("product_rules", "antecedent_product_id", False),
    ("product_rules", "consequent_product_id", False),
    ("recommendations", "customer_id", False),
    ("recommendations", "product_id", False),
    ("recommendations", "because_product_id", False),
    ("occasions", "customer_id", False),
    ("outbox", "customer_id", False),
)

#: (table, column, nullable) of the sums of order lines: NUMERIC(14, 2) -> NUMERIC(18, 2).
TOTAL_COLUMNS = (
    ("customer_facts", "revenue", False),
    ("customer_facts", "returns_value", False),
    ("customer_facts", "margin", False),
    ("customer_facts", "avg_order_value", True),
    ("customer_facts", "revenue_12m", False),
    ("customer_facts", "margin_12m", False),
    ("segment_snapshots", "monetary", False),
    ("segment_snapshots", "expected_order_value", True),
    ("segment_snapshots", "clv_12m", True),
    ("segment_snapshots", "service_cost_12m", False),
    ("segment_snapshots", "profit_12m", False),
)

OLD_KEY = ("source_table", "source_key", "rule", "row_hash")
NEW_KEY = ("night", "source_table", "source_key", "rule", "row_hash", "occurrence")

#: churn_scores figures that may be NULL from this revision on, with their types.
CHURN_FIGURES = (
    ("p_alive", sa.Numeric(6, 4)),
    ("expected_purchases_90d", sa.Numeric(10, 4)),
    ("discounted_purchases_12m", sa.Numeric(10, 4)),
)


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _retype(columns, old: sa.types.TypeEngine, new: sa.types.TypeEngine) -> None:
    for table, column, nullable in columns:
        op.alter_column(table, column, type_=new, existing_type=old, existing_nullable=nullable)


def upgrade() -> None:
    if _postgresql():
        _retype(ID_COLUMNS, sa.Integer(), sa.BigInteger())
        _retype(TOTAL_COLUMNS, sa.Numeric(14, 2), sa.Numeric(18, 2))
        op.alter_column(
            "segment_report",
            "metric",
            type_=sa.Numeric(24, 4),
            existing_type=sa.Numeric(14, 4),
            existing_nullable=True,
        )
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.add_column(sa.Column("occurrence", sa.Integer(), server_default="1", nullable=False))
        batch_op.drop_constraint("uq_quarantine_row", type_="unique")
        batch_op.create_unique_constraint("uq_quarantine_copy", list(NEW_KEY))
    _churn_figures_nullable(True)


def _churn_figures_nullable(nullable: bool) -> None:
    with op.batch_alter_table("churn_scores", schema=None) as batch_op:
        for column, type_ in CHURN_FIGURES:
            batch_op.alter_column(column, existing_type=type_, nullable=nullable)


def downgrade() -> None:
    # churn_scores is rebuilt every night: rows with an empty figure can go.
    figures = " or ".join(f"{column} is null" for column, _ in CHURN_FIGURES)
    op.execute(f"delete from churn_scores where {figures}")
    _churn_figures_nullable(False)
    # The old key holds one row per (table, key, rule, row): keep the first of each.
    keys = ", ".join(OLD_KEY)
    op.execute(
        "delete from quarantine where quarantine_id not in "
        f"(select min(quarantine_id) from quarantine group by {keys})"
    )
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.drop_constraint("uq_quarantine_copy", type_="unique")
        batch_op.create_unique_constraint("uq_quarantine_row", list(OLD_KEY))
        batch_op.drop_column("occurrence")
    if _postgresql():
        op.alter_column(
            "segment_report",
            "metric",
            type_=sa.Numeric(14, 4),
            existing_type=sa.Numeric(24, 4),
            existing_nullable=True,
        )
        _retype(TOTAL_COLUMNS, sa.Numeric(18, 2), sa.Numeric(14, 2))
        _retype(ID_COLUMNS, sa.BigInteger(), sa.Integer())
