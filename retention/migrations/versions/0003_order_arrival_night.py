"""The night an order first arrived in the warehouse

Revision ID: 0003
Revises: 0002

``stg_orders.arrived_night`` is the night whose extract first saw an order; unlike
``loaded_night`` it is never updated. Order follow-ups (next purchase, accessory) count
their delay from it when an order arrived late. Existing orders keep it NULL: they were
there before anyone looked, which the follow-ups read as "arrived in time" (as they do a
first load's history).
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


def downgrade() -> None:
    with op.batch_alter_table("stg_orders") as batch:
        batch.drop_column("arrived_night")
