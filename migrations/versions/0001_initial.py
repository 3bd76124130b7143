"""Citizens, clients, auth and audit events, and the unique-adult counter.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade():
    op.create_table(
        "citizens",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("national_id", sa.String(10), nullable=False, unique=True),
        sa.Column("mobile", sa.String(16), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=False),
        sa.Column("given_name", sa.String(100)),
        sa.Column("family_name", sa.String(100)),
        sa.Column("given_name_latin", sa.String(100)),
        sa.Column("family_name_latin", sa.String(100)),
        sa.Column("subject_key", sa.String(43), nullable=False, unique=True),
        sa.Column("totp_secret", sa.Text()),
        sa.Column("totp_last_step", sa.BigInteger()),
        sa.Column("first_authenticated_at", TS),
        sa.Column("first_adult_authenticated_at", TS),
        sa.Column("last_authenticated_at", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_citizens_mobile", "citizens", ["mobile"])
    op.create_table(
        "clients",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("client_id", sa.String(64), nullable=False, unique=True),
        sa.Column("client_secret_hash", sa.String(128)),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("name_fa", sa.String(200)),
        sa.Column("client_metadata", sa.JSON(), nullable=False),
        sa.Column("trusted", sa.Boolean(), nullable=False),
        sa.Column("disabled_at", TS),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "auth_events",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("citizen_id", BigId, sa.ForeignKey("citizens.id"), nullable=False),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("sso", sa.Boolean(), nullable=False),
        sa.Column("adult", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_auth_events_occurred_at", "auth_events", ["occurred_at"])
    op.create_index("ix_auth_events_client_occurred", "auth_events", ["client_id", "occurred_at"])
    op.create_index("ix_auth_events_citizen", "auth_events", ["citizen_id"])
    op.create_table(
        "audit_events",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("event", sa.String(48), nullable=False),
        sa.Column("subject_fp", sa.String(64)),
        sa.Column("ip_fp", sa.String(64)),
        sa.Column("client_id", sa.String(64)),
        sa.Column("details", sa.JSON(), nullable=False),
    )
    op.create_index("ix_audit_events_occurred_at", "audit_events", ["occurred_at"])
    counters = op.create_table(
        "stat_counters",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(counters, [{"name": "unique_adults", "value": 0}])


def downgrade():
    for table in ("stat_counters", "audit_events", "auth_events", "clients", "citizens"):
        op.drop_table(table)
