"""Refresh tokens (rotation families), consents, and the back-channel logout queue.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade():
    op.create_table(
        "refresh_tokens",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("family_id", sa.String(32), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("citizen_id", BigId, sa.ForeignKey("citizens.id"), nullable=False),
        sa.Column("sid", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(500), nullable=False),
        sa.Column("auth_time", sa.BigInteger(), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("rotated_at", TS),
        sa.Column("revoked_at", TS),
    )
    op.create_index("ix_refresh_tokens_family", "refresh_tokens", ["family_id"])
    op.create_index("ix_refresh_tokens_sid", "refresh_tokens", ["sid"])
    op.create_index("ix_refresh_tokens_citizen", "refresh_tokens", ["citizen_id"])
    op.create_index("ix_refresh_tokens_expires", "refresh_tokens", ["expires_at"])
    op.create_table(
        "consents",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("citizen_id", BigId, sa.ForeignKey("citizens.id"), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(500), nullable=False),
        sa.Column("granted_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("citizen_id", "client_id", name="uq_consents_citizen_client"),
    )
    op.create_table(
        "logout_deliveries",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("uri", sa.String(2000), nullable=False),
        sa.Column("sub", sa.String(128), nullable=False),
        sa.Column("sid", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("delivered_at", TS),
        sa.Column("given_up_at", TS),
        sa.Column("last_error", sa.String(200)),
    )
    op.create_index("ix_logout_deliveries_due", "logout_deliveries", ["delivered_at", "next_attempt_at"])


def downgrade():
    op.drop_table("logout_deliveries")
    op.drop_table("consents")
    op.drop_table("refresh_tokens")
