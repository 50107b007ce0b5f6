"""Each customer's mean value of repeat transactions

Revision ID: 0005
Revises: 0004

``customer_facts.repeat_avg_order_value`` is the Gamma-Gamma model's monetary value: the
kept revenue of the order days after the first, divided by ``order_days - 1``; NULL with
one order day (issue #12). The expected order value of the segment snapshots uses it
instead of ``avg_order_value`` (all orders, first ones included).

Facts are recomputed only for customers who change, so the upgrade fills the column for
every existing customer from staging, with the same definition as
``sql/marts/customer_facts.sql`` (which the next night's recomputation then keeps).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _backfill() -> None:
    bind = op.get_bind()
    day = "cast({} as date)" if bind.dialect.name == "postgresql" else "date({})"
    op.execute(
        sa.text(
            f"""
            update customer_facts
            set repeat_avg_order_value = round(1.0 * coalesce((
                select sum((items.quantity - items.returned_quantity) * items.unit_price)
                from stg_orders as orders
                inner join stg_order_items as items on items.order_id = orders.order_id
                where orders.customer_id = customer_facts.customer_id
                  and orders.status = 'placed'
                  and {day.format("orders.ordered_at")} > {day.format("customer_facts.first_order_at")}
            ), 0) / (order_days - 1), 2)
            where order_days > 1
            """
        )
    )


def upgrade() -> None:
    with op.batch_alter_table("customer_facts") as batch:
        # as retention.schema.Total: NUMERIC(18, 2), NUMERIC(14, 2) on SQLite (migration 0002)
        total = sa.Numeric(18, 2).with_variant(sa.Numeric(14, 2), "sqlite")
        batch.add_column(sa.Column("repeat_avg_order_value", total, nullable=True))
    _backfill()


def downgrade() -> None:
    with op.batch_alter_table("customer_facts") as batch:
        batch.drop_column("repeat_avg_order_value")
