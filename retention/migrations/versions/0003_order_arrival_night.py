"""The night an order first arrived in the warehouse

Revision ID: 0003
Revises: 0002

``stg_orders.arrived_night`` is the night whose extract first saw an order; unlike
``loaded_night`` it is never updated. Order follow-ups (next purchase, accessory) count
their delay from it when an order arrived late. Existing orders get their ``loaded_night``,
the best knowledge there is.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stg_orders") as batch:
        batch.add_column(sa.Column("arrived_night", sa.Date(), nullable=True))
    op.execute("update stg_orders set arrived_night = loaded_night")


def downgrade() -> None:
    with op.batch_alter_table("stg_orders") as batch:
        batch.drop_column("arrived_night")
