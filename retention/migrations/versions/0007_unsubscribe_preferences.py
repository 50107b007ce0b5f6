"""Per-kind unsubscribe preferences, and indexes for finding a customer by address

Revision ID: 0007
Revises: 0006

``unsubscribe_preferences`` holds the kinds of message (``retention.unsubscribe.MESSAGE_KINDS``)
an address stopped on the unsubscribe page while keeping the others; detection skips their
occasions. Like ``suppression`` it is keyed by the sha256 of the lower-cased address, so that a
preference outlives the erasure of the person.

``ix_stg_customers_email_lower`` is an index on ``lower(email)``: the Retention page searches
customers by address in any case (``lower(email) = lower(:q)``); without it that search reads
every customer. ``ix_outbox_email_lower`` does the same for the outbox, where the search
looks next (an address a message went to that the customer no longer has): without it a search
for an unknown address read the whole outbox (5 s at 1M customers and 1.3M messages).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "unsubscribe_preferences",
        sa.Column("email_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("night", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("email_hash", "kind", name=op.f("pk_unsubscribe_preferences")),
    )
    op.create_index("ix_stg_customers_email_lower", "stg_customers", [sa.text("lower(email)")])
    op.create_index("ix_outbox_email_lower", "outbox", [sa.text("lower(email)")])


def downgrade() -> None:
    op.drop_index("ix_outbox_email_lower", table_name="outbox")
    op.drop_index("ix_stg_customers_email_lower", table_name="stg_customers")
    op.drop_table("unsubscribe_preferences")
