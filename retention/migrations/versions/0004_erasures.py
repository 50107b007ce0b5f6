"""Tombstones of forgotten people (GDPR art. 17) and the salt of their hashes

Revision ID: 0004
Revises: 0003

``retention forget`` removes a person from every warehouse table and leaves only a salted
hash of each of their identifiers (customer id, address) in ``erasures``; the extract skips
shop rows that match one. ``erasure_salt`` holds the one random salt of this warehouse,
made by the first erasure.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("identity_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("erased_on", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("identity_hash", name=op.f("pk_erasures")),
    )
    op.create_table(
        "erasure_salt",
        sa.Column("salt_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("salt_id", name=op.f("pk_erasure_salt")),
    )


def downgrade() -> None:
    # Dropping the tombstones lets the forgotten back in with the next extract: only for a
    # warehouse that is being taken apart.
    op.drop_table("erasure_salt")
    op.drop_table("erasures")
