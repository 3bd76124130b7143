"""Finding a citizen: the one ``Citizen`` type the protocol and the login use, the lookups that
make it, and where the registry facts behind them come from.

Lookups go through a :class:`CitizenDirectory`: today the imported table, later a live
registry service, whose answer is then written to the local row first (see :func:`find`), so a
login always sees the registry's current mobile number.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from flask import current_app
from sqlalchemy import bindparam, select

from ..platform.database import db, read_row, utcnow
from .models import CitizenRow
from .records import FIELDS, clean_values, insert_params, latest_birth_date, upsert_statement, wait_for_import

DIRECTORY_KEY = "idp.citizen_directory"


@dataclass(frozen=True, slots=True)
class Citizen:
    """What the protocol and the login know of a citizen: every token names them by a `sub`
    derived from ``subject_key``, and each authentication is counted by ``birth_date``
    (``adult_counted``: they were already counted as a unique adult when this was read).
    Citizens are never deleted and a subject key never changes, so a copy may be kept (in an
    SSO session, in a code) for as long as the thing that holds it."""

    id: int
    subject_key: str
    birth_date: dt.date
    adult_counted: bool = False


@dataclass(frozen=True, slots=True)
class Registered:
    """A national ID's entry as the login needs it: the citizen, the mobile registered to them,
    and whether they have an authenticator app."""

    citizen: Citizen
    mobile: str
    has_app: bool


@dataclass(frozen=True, slots=True)
class Profile:
    """The registry facts a citizen's claims are made of (userinfo, the consent page)."""

    id: int
    subject_key: str
    national_id: str
    mobile: str
    birth_date: dt.date
    given_name: str | None
    family_name: str | None


_c = CitizenRow.__table__.c
_CITIZEN = (_c.id, _c.subject_key, _c.birth_date, _c.first_adult_authenticated_at.isnot(None))
_BY_NATIONAL_ID = select(*_CITIZEN, _c.mobile, _c.totp_secret.isnot(None)).where(
    _c.national_id == bindparam("p_nid"))
_BY_ID = select(*_CITIZEN).where(_c.id == bindparam("p_cid"))
_PROFILE = select(_c.id, _c.subject_key, _c.national_id, _c.mobile, _c.birth_date, _c.given_name,
                  _c.family_name).where(_c.id == bindparam("p_cid"))


def citizen_columns(citizen_id, prefix: str = "c_") -> dict:
    """What a ``Citizen`` needs besides its id, as labelled scalar subqueries on ``citizen_id``
    (a column of another table), for a statement of that table's owner to return along with
    its own row (``RETURNING``): ``{prefix}subject_key``, ``{prefix}birth_date``."""
    return {prefix + name: select(column).where(_c.id == citizen_id).scalar_subquery().label(prefix + name)
            for name, column in (("subject_key", _c.subject_key), ("birth_date", _c.birth_date))}


def find(national_id: str, directory: CitizenDirectory | None = None) -> Registered | None:
    """The citizen registered under a validated national ID, or None: one row read on a
    connection of its own. With a directory other than the table, the registry's answer is
    written (and committed) to the local row first."""
    source = directory if directory is not None else current_directory()
    if not isinstance(source, SqlCitizenDirectory):
        record = source.find(national_id)
        if record is None:
            return None
        _provision(record)
    row = read_row(_BY_NATIONAL_ID, {"p_nid": national_id})
    if row is None:
        return None
    return Registered(Citizen(*row[:4]), mobile=row[4], has_app=bool(row[5]))


def get(citizen_id: int) -> Citizen | None:
    """The citizen with this id, or None: one row read on a connection of its own."""
    row = read_row(_BY_ID, {"p_cid": citizen_id})
    return None if row is None else Citizen(*row)


def profile(citizen_id: int) -> Profile | None:
    """The citizen's claim columns, or None: one row read on a connection of its own."""
    row = read_row(_PROFILE, {"p_cid": citizen_id})
    return None if row is None else Profile(*row)


@dataclass(frozen=True, slots=True)
class CitizenRecord:
    """What the national registry says about a person."""

    national_id: str
    mobile: str
    birth_date: dt.date
    given_name: str | None = None
    family_name: str | None = None
    given_name_latin: str | None = None
    family_name_latin: str | None = None


@runtime_checkable
class CitizenDirectory(Protocol):
    """Where the registry facts come from: today the imported table, later a live registry service."""

    def find(self, national_id: str) -> CitizenRecord | None:
        """The person with this (already validated) national ID, or None."""


class SqlCitizenDirectory:
    """The registry as loaded into the citizens table by ``idp citizens import``."""

    def find(self, national_id: str) -> CitizenRecord | None:
        row = db.session.execute(db.select(CitizenRow).filter_by(national_id=national_id)).scalar_one_or_none()
        return None if row is None else CitizenRecord(*(getattr(row, name) for name in FIELDS))


def current_directory() -> CitizenDirectory:
    """The app's directory (``app.extensions["idp.citizen_directory"]``), by default the table."""
    return current_app.extensions.get(DIRECTORY_KEY) or SqlCitizenDirectory()


def _provision(record: CitizenRecord) -> None:
    """Insert or refresh one citizen row from a registry record; committed."""
    clean = clean_values([getattr(record, name) if name != "birth_date" else record.birth_date.isoformat()
                          for name in FIELDS], latest_birth_date())
    try:
        wait_for_import()
        db.session.execute(upsert_statement(db.engine.dialect.name), insert_params(clean, utcnow()))
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
