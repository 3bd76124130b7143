"""The tables of the national figures: daily and monthly rollups and the population snapshot."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Date,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from ..platform.database import UTCDateTime, db, utcnow


class StatDay(db.Model):
    """One closed local day (``[stats] timezone``), computed exactly from auth_events by
    ``idp stats rollup``: logins, unique citizens, and citizens who became unique adults."""

    __tablename__ = "stat_days"

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    logins: Mapped[int] = mapped_column(BigInteger)
    unique_citizens: Mapped[int] = mapped_column(BigInteger)
    new_adults: Mapped[int] = mapped_column(BigInteger)
    computed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class StatDayClient(db.Model):
    """One closed day for one agency client: logins, unique citizens, new adults (the client of
    the citizen's first authentication as an adult)."""

    __tablename__ = "stat_day_clients"

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    logins: Mapped[int] = mapped_column(BigInteger)
    unique_citizens: Mapped[int] = mapped_column(BigInteger)
    new_adults: Mapped[int] = mapped_column(BigInteger)


class StatMonth(db.Model):
    """Unique citizens of a month (``calendar`` g = Gregorian, j = Jalali; ``month`` = the
    Gregorian date of its first day). Open months grow as their days are rolled up (from
    stat_month_citizens); ``closed_at`` is set once the month is over and final."""

    __tablename__ = "stat_months"

    calendar: Mapped[str] = mapped_column(String(1), primary_key=True)
    month: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    unique_citizens: Mapped[int] = mapped_column(BigInteger, default=0)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class StatMonthClient(db.Model):
    """Unique citizens of a closed month for one agency client (computed when the month closes)."""

    __tablename__ = "stat_month_clients"

    calendar: Mapped[str] = mapped_column(String(1), primary_key=True)
    month: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    unique_citizens: Mapped[int] = mapped_column(BigInteger)


class StatMonthCitizen(db.Model):
    """The set of citizens seen in an open month (so that its unique count is exact and grows
    idempotently, day by day); emptied when the month closes."""

    __tablename__ = "stat_month_citizens"

    calendar: Mapped[str] = mapped_column(String(1), primary_key=True)
    month: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    citizen_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)


class StatBirthDate(db.Model):
    """Citizens per birth date, a snapshot of the registry taken by ``idp stats rollup``: the
    adult population on any day is a sum over at most ~40,000 rows (plus citizens added since)."""

    __tablename__ = "stat_birth_dates"

    birth_date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    citizens: Mapped[int] = mapped_column(BigInteger)
