"""Token exchange between agencies: the delegations operators allow, and their daily counts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    op.create_table(
        "delegations",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("from_client_id", sa.String(64), nullable=False),
        sa.Column("to_client_id", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(500), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("from_client_id", "to_client_id", name="uq_delegations_pair"),
    )
    op.create_table(
        "exchange_days",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("from_client_id", sa.String(64), primary_key=True),
        sa.Column("to_client_id", sa.String(64), primary_key=True),
        sa.Column("issued", sa.BigInteger(), nullable=False),
        sa.Column("refused", sa.BigInteger(), nullable=False),
    )


def downgrade():
    op.drop_table("exchange_days")
    op.drop_table("delegations")
