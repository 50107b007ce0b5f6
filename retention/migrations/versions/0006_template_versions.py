"""Templates saved from the Retention page, and the version each message was rendered from

Revision ID: 0006
Revises: 0005

``template_versions`` keeps every template saved in the Retention page's editor (issue #13):
one row per save, never updated, so the page can show the history and restore any version.
The newest row of an (occasion, language) is what every render uses, on the api-server and on
every worker alike, because all of them read the warehouse; the files in ``templates/`` are
the shipped defaults. ``outbox.template_version_id`` records the version a message was
rendered from (NULL: the shipped file).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "template_versions",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("occasion", sa.String(length=32), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("saved_by", sa.String(length=250), nullable=False),
        sa.Column("saved_at", sa.DateTime(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("version_id", name=op.f("pk_template_versions")),
    )
    op.create_index("ix_template_versions_pair", "template_versions", ["occasion", "language", "version_id"])
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("template_version_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("template_version_id")
    op.drop_index("ix_template_versions_pair", table_name="template_versions")
    op.drop_table("template_versions")
