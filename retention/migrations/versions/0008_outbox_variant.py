"""The variant of a message's wording

Revision ID: 0008
Revises: 0007

A template may have a second wording, ``<language>.b.jinja`` (issue #17): each customer gets
one variant by a stable hash, and ``outbox.variant`` records which ("a" or "b"; NULL for a
template without variants), so that the report can compare what the two wordings earn.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


# Plain ALTER TABLE, not batch mode: SQLite adds and (3.35+) drops a column in place, and
# batch mode would rebuild the outbox without its expression index on lower(email) (0007).


def upgrade() -> None:
    op.add_column("outbox", sa.Column("variant", sa.String(length=8), nullable=True))


def downgrade() -> None:
    op.drop_column("outbox", "variant")
