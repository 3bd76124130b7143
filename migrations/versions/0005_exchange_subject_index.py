"""The citizen's own record: the token exchanges made for a citizen, found by fingerprint.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

EXCHANGES = sa.text("event = 'token_exchanged'")


def upgrade():
    op.create_index("ix_audit_events_exchange_subject", "audit_events", ["subject_fp", "id"],
                    postgresql_where=EXCHANGES, sqlite_where=EXCHANGES)


def downgrade():
    op.drop_index("ix_audit_events_exchange_subject", table_name="audit_events")
