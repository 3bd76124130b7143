"""Statistics: daily and monthly rollups, the registry's birth-date snapshot, new adults' index.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade():
    op.create_table(
        "stat_days",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("logins", sa.BigInteger(), nullable=False),
        sa.Column("unique_citizens", sa.BigInteger(), nullable=False),
        sa.Column("new_adults", sa.BigInteger(), nullable=False),
        sa.Column("computed_at", TS, nullable=False),
    )
    op.create_table(
        "stat_day_clients",
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("logins", sa.BigInteger(), nullable=False),
        sa.Column("unique_citizens", sa.BigInteger(), nullable=False),
        sa.Column("new_adults", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "stat_months",
        sa.Column("calendar", sa.String(1), primary_key=True),
        sa.Column("month", sa.Date(), primary_key=True),
        sa.Column("unique_citizens", sa.BigInteger(), nullable=False),
        sa.Column("closed_at", TS),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "stat_month_clients",
        sa.Column("calendar", sa.String(1), primary_key=True),
        sa.Column("month", sa.Date(), primary_key=True),
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("unique_citizens", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "stat_month_citizens",
        sa.Column("calendar", sa.String(1), primary_key=True),
        sa.Column("month", sa.Date(), primary_key=True),
        sa.Column("citizen_id", sa.BigInteger(), primary_key=True, autoincrement=False),
    )
    op.create_table(
        "stat_birth_dates",
        sa.Column("birth_date", sa.Date(), primary_key=True),
        sa.Column("citizens", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_citizens_first_adult_at", "citizens", ["first_adult_authenticated_at"],
                    postgresql_where=sa.text("first_adult_authenticated_at IS NOT NULL"),
                    sqlite_where=sa.text("first_adult_authenticated_at IS NOT NULL"))


def downgrade():
    op.drop_index("ix_citizens_first_adult_at", table_name="citizens")
    for table in ("stat_birth_dates", "stat_month_citizens", "stat_month_clients", "stat_months",
                  "stat_day_clients", "stat_days"):
        op.drop_table(table)
