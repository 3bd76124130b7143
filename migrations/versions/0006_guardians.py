"""Guardians acting for minors: the registry's guardian links, and the agencies that accept them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    op.create_table(
        "guardian_links",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("guardian_id", BigId, sa.ForeignKey("citizens.id"), nullable=False),
        sa.Column("minor_id", BigId, sa.ForeignKey("citizens.id"), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("guardian_id", "minor_id", name="uq_guardian_links_pair"),
    )
    op.create_index("ix_guardian_links_minor", "guardian_links", ["minor_id"])
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("accepts_guardians", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade():
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("accepts_guardians")
    op.drop_index("ix_guardian_links_minor", table_name="guardian_links")
    op.drop_table("guardian_links")
