"""Feedback that comes back: answers to the feedback message, and follow-ups of low ratings

Revision ID: 0009
Revises: 0008

``feedback`` holds one answer per (customer, order): the rating (1..5) from the message's
one-click links and the comment from the short form of the public app (``retention.feedback``,
``retention/web/unsubscribe_app.py``). A second click changes the row, never adds one (primary
key). ``answered_at`` and ``updated_at`` are indexed: the Retention page's weekly chart and
``held_back`` (suggestions held back after a low rating) read answers by time.

``feedback_followups`` is what a low rating (``RETENTION_FEEDBACK_LOW_RATING``) asks the shop to
do: one row per answer, open until the customer raises the rating, with ``mailed_at`` NULL until
``retention feedback mail-followups`` has told ``RETENTION_SERVICE_ADDRESS``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Ids as in 0002: BIGINT on PostgreSQL, INTEGER on SQLite.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("customer_id", _ID, nullable=False, autoincrement=False),
        sa.Column("order_id", _ID, nullable=False, autoincrement=False),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("answered_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "order_id", name=op.f("pk_feedback")),
    )
    op.create_index("ix_feedback_answered_at", "feedback", ["answered_at"])
    op.create_index("ix_feedback_updated_at", "feedback", ["updated_at"])
    op.create_table(
        "feedback_followups",
        sa.Column("followup_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", _ID, nullable=False),
        sa.Column("order_id", _ID, nullable=False),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("mailed_at", sa.DateTime(), nullable=True),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.PrimaryKeyConstraint("followup_id", name=op.f("pk_feedback_followups")),
        sa.UniqueConstraint("customer_id", "order_id", name="uq_feedback_followups_answer"),
    )
    op.create_index("ix_feedback_followups_status", "feedback_followups", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_feedback_followups_status", table_name="feedback_followups")
    op.drop_table("feedback_followups")
    op.drop_index("ix_feedback_updated_at", table_name="feedback")
    op.drop_index("ix_feedback_answered_at", table_name="feedback")
    op.drop_table("feedback")
