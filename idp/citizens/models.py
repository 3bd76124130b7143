"""The tables the citizens package owns: citizens, authentication events, the unique-adult
counter, the guardians linked to minors. Only modules of this package run SQL on them."""
from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ..platform.database import BigId, UTCDateTime, db, utcnow


class CitizenRow(db.Model):
    """A person in the national registry. Never created by a login: the registry loads them."""

    __tablename__ = "citizens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    national_id: Mapped[str] = mapped_column(String(10), unique=True)
    mobile: Mapped[str] = mapped_column(String(16), index=True)
    birth_date: Mapped[dt.date] = mapped_column(Date)
    given_name: Mapped[str | None] = mapped_column(String(100))
    family_name: Mapped[str | None] = mapped_column(String(100))
    given_name_latin: Mapped[str | None] = mapped_column(String(100))
    family_name_latin: Mapped[str | None] = mapped_column(String(100))
    # A random, stable, internal identifier. Every `sub` an agency sees is derived from it,
    # never from the national ID.
    subject_key: Mapped[str] = mapped_column(String(43), unique=True,
                                             default=lambda: secrets.token_urlsafe(32))
    totp_secret: Mapped[bytes | None] = mapped_column(Text)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    first_authenticated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    first_adult_authenticated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_authenticated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def get_user_id(self) -> str:
        """Authlib's hook; the real `sub` is computed per client in oauth.py."""
        return self.subject_key


class AuthEvent(db.Model):
    """One successful authentication of a citizen for an agency (append-only)."""

    __tablename__ = "auth_events"
    __table_args__ = (
        Index("ix_auth_events_occurred_at", "occurred_at"),
        Index("ix_auth_events_client_occurred", "client_id", "occurred_at"),
        Index("ix_auth_events_citizen", "citizen_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    citizen_id: Mapped[int] = mapped_column(BigId, ForeignKey("citizens.id"))
    client_id: Mapped[str] = mapped_column(String(64))
    # sms | totp: the factor proved; sso marks a code issued from an existing session.
    method: Mapped[str] = mapped_column(String(16))
    sso: Mapped[bool] = mapped_column(Boolean, default=False)
    adult: Mapped[bool] = mapped_column(Boolean)


class StatCounter(db.Model):
    """An exact counter kept in the same transaction as the fact it counts (e.g. unique adults)."""

    __tablename__ = "stat_counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class GuardianLink(db.Model):
    """The registry's word that ``guardian_id`` is a guardian of ``minor_id`` (``idp citizens
    link-guardian`` or an import's ``guardian_national_id`` column). The guardian may act for the
    minor at agencies that accept it while the minor is under 18; the link needs no removal on
    the 18th birthday (citizens.guardians checks the age at every use)."""

    __tablename__ = "guardian_links"
    __table_args__ = (UniqueConstraint("guardian_id", "minor_id", name="uq_guardian_links_pair"),
                      Index("ix_guardian_links_minor", "minor_id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    guardian_id: Mapped[int] = mapped_column(BigId, ForeignKey("citizens.id"))
    minor_id: Mapped[int] = mapped_column(BigId, ForeignKey("citizens.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


# ---- statistics rollups (issue 5): exact figures of closed days and months --------------------


# New adults per day (the national figures, idp.stats): only citizens who have authenticated as adults are in it. (The adult
# population needs no index on birth_date: it is read from stat_birth_dates.)
Index("ix_citizens_first_adult_at", CitizenRow.first_adult_authenticated_at,
      postgresql_where=CitizenRow.first_adult_authenticated_at.isnot(None),
      sqlite_where=CitizenRow.first_adult_authenticated_at.isnot(None))
