"""A citizen's registry facts and their rules: the fields, each one validated and made
canonical (digits in any script, mobiles to E.164, Jalali birth dates to Gregorian), and adding
one citizen (``idp citizens add``).

The import of whole files (importer.py) and the live lookups (directory.py) use the same rules.
"""
from __future__ import annotations

import datetime as dt
import re
import secrets

from sqlalchemy import or_
from sqlalchemy.dialects import postgresql, sqlite

from ..platform.database import db
from ..platform.dates import JALALI_BEFORE, from_ymd
from ..platform.digits import ascii_digits
from .models import CitizenRow
from .national_id import InvalidMobile, InvalidNationalId, parse_mobile, parse_national_id

FIELDS = ("national_id", "mobile", "birth_date", "given_name", "family_name", "given_name_latin",
          "family_name_latin")
REQUIRED = FIELDS[:3]
NAME_FIELDS = FIELDS[3:]
#: The registry facts an import sets; everything else in a citizen row belongs to the IdP.
UPDATED = FIELDS[1:]
#: Bit i of a staged row's ``present`` mask: the row holds UPDATED[i].
BIT = {name: 1 << i for i, name in enumerate(UPDATED)}
#: What a row must hold to add a new citizen (national_id aside, which every row holds).
NEW_NEEDS = BIT["mobile"] | BIT["birth_date"]
MAX_NAME = 100
EARLIEST_BIRTH = dt.date(1900, 1, 1)
BATCH = 2000  # SQLite executemany batch
COPY_CHUNK = 2000  # rows per COPY write on PostgreSQL
KEEP_REJECTIONS = 1000  # rejections kept in memory (all of them go to the report file)
JSON_SUFFIXES = (".jsonl", ".ndjson")

#: A birth date as written: YYYY-MM-DD, or YYYY/MM/DD (as Jalali dates often are).
_YMD = re.compile(r"[0-9]{4}([-/])[0-9]{2}\1[0-9]{2}")
_FIRST_GREGORIAN = str(JALALI_BEFORE)  # 4 digits: compared as text, "1985" >= "1700"

# C0/C1 control characters (a NUL or newline in a name is a broken export, and would break
# COPY), and lone surrogates: bytes of the file that are not UTF-8 (read with surrogateescape).
_BAD_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


#: The lock an import holds, and that single writers of new citizens wait for (PostgreSQL).
IMPORT_LOCK = "SELECT {}(hashtext('idp.citizens.import'))"


class InvalidCitizen(ValueError):
    """A registry row or file is not acceptable; the message names the field or the file."""


class _Absent:
    """The value of a column that a row does not hold (not the same as an empty value)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()


# ---- validation --------------------------------------------------------------------------------

def _national_id(raw) -> str:
    """Canonical national ID. A fast path for the usual 10 ASCII digits; anything else (or a
    failure) goes to :func:`parse_national_id`, whose messages are the reasons reported."""
    if isinstance(raw, str) and len(raw) == 10 and raw.isascii() and raw.isdigit() and raw != raw[0] * 10:
        b = raw.encode("ascii")
        r = (b[0] * 10 + b[1] * 9 + b[2] * 8 + b[3] * 7 + b[4] * 6 + b[5] * 5 + b[6] * 4 + b[7] * 3
             + b[8] * 2 - 48 * 54) % 11
        if (r if r < 2 else 11 - r) == b[9] - 48:
            return raw
    if raw is None or raw is ABSENT or (isinstance(raw, str) and not raw.strip()):
        raise InvalidCitizen("national_id: missing")
    if not isinstance(raw, str):
        raise InvalidCitizen("national_id: must be text")
    try:
        return parse_national_id(raw.strip())
    except InvalidNationalId as exc:
        raise InvalidCitizen(f"national_id: {exc}") from None


def _mobile(raw) -> str:
    """Canonical E.164 mobile; fast paths for 09xxxxxxxxx and +989xxxxxxxxx, else parse_mobile."""
    if isinstance(raw, str) and raw.isascii():
        if len(raw) == 11 and raw.startswith("09") and raw.isdigit():
            return "+98" + raw[1:]
        if len(raw) == 13 and raw.startswith("+989") and raw[1:].isdigit():
            return raw
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise InvalidCitizen("mobile: missing")
    if not isinstance(raw, str):
        raise InvalidCitizen("mobile: must be text")
    try:
        return parse_mobile(raw.strip())
    except InvalidMobile as exc:
        raise InvalidCitizen(f"mobile: {exc}") from None


def _birth_date(raw, latest: dt.date) -> str:
    """The birth date as Gregorian YYYY-MM-DD: a real calendar date from 1900 up to today. A
    year before 1700 is Jalali (1370-01-01 is 1991-03-21), as in ``idp stats``: the one rule of
    idp.platform.dates, under which no birth date is ambiguous."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise InvalidCitizen("birth_date: missing")
    if not isinstance(raw, str):
        raise InvalidCitizen("birth_date: must be YYYY-MM-DD")
    text = raw.strip()
    if not text.isascii():
        text = ascii_digits(text)
    # the usual Gregorian YYYY-MM-DD is read at C speed; anything else is checked for its form first
    usual = len(text) == 10 and text[4] == "-" == text[7] and text[:4] >= _FIRST_GREGORIAN and text.isascii()
    if not usual and (len(text) != 10 or not _YMD.match(text)):
        raise InvalidCitizen("birth_date: must be YYYY-MM-DD")
    try:
        day, jalali = ((dt.date.fromisoformat(text), False) if usual
                       else from_ymd(int(text[:4]), int(text[5:7]), int(text[8:])))
    except ValueError:
        raise InvalidCitizen("birth_date: not a calendar date" if usual or text[:4] >= _FIRST_GREGORIAN else
                             "birth_date: not a Jalali calendar date (a year before 1700 is Jalali)") from None
    read = f" ({text} is Jalali: {day.isoformat()})" if jalali else ""
    if day > latest:
        raise InvalidCitizen(f"birth_date: in the future{read}")
    if day < EARLIEST_BIRTH:
        raise InvalidCitizen(f"birth_date: before 1900{read}")
    return text if not jalali and text[4] == "-" else day.isoformat()


def _name(field_name: str, raw) -> str | None:
    """A name, or None for an empty (or absent) one."""
    if raw is None or raw is ABSENT:
        return None
    if not isinstance(raw, str):
        raise InvalidCitizen(f"{field_name}: must be text")
    value = raw.strip()
    if not value:
        return None
    if len(value) > MAX_NAME:
        raise InvalidCitizen(f"{field_name}: longer than {MAX_NAME} characters")
    if bad := _BAD_CHARS.search(value):
        if "\ud800" <= bad.group() <= "\udfff":
            raise InvalidCitizen(f"{field_name}: not UTF-8 text")
        raise InvalidCitizen(f"{field_name}: contains control characters")
    return value


def latest_birth_date() -> dt.date:
    """Today where the date is furthest ahead (UTC+14): a baby born today anywhere is not "future"."""
    return dt.datetime.now(dt.timezone(dt.timedelta(hours=14))).date()


def clean_values(values, latest: dt.date) -> tuple:
    """Raw values in FIELDS order, ABSENT where the row lacks the column -> (national_id, mobile,
    birth_date ISO, 4 names, present) with None for absent values and the BIT of each UPDATED
    column the row holds in ``present``; or InvalidCitizen. An absent value is not validated."""
    nid, mobile, birth, g, f, gl, fl = values
    present = ((mobile is not ABSENT) | (birth is not ABSENT) << 1 | (g is not ABSENT) << 2
               | (f is not ABSENT) << 3 | (gl is not ABSENT) << 4 | (fl is not ABSENT) << 5)
    return (_national_id(nid), None if mobile is ABSENT else _mobile(mobile),
            None if birth is ABSENT else _birth_date(birth, latest), _name("given_name", g),
            _name("family_name", f), _name("given_name_latin", gl), _name("family_name_latin", fl), present)


def validate_row(row: dict, today: dt.date | None = None) -> dict:
    """A clean citizen record from raw text (a missing key counts as empty), or InvalidCitizen
    naming what is wrong."""
    clean = dict(zip(FIELDS, clean_values([row.get(name) for name in FIELDS], today or latest_birth_date())))
    clean["birth_date"] = dt.date.fromisoformat(clean["birth_date"])
    return clean


def add_citizen(**values) -> CitizenRow:
    """Add one citizen (``idp citizens add``); the national ID must be new."""
    clean = validate_row({k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in values.items()})
    try:
        wait_for_import()
        if db.session.execute(db.select(CitizenRow.id).filter_by(national_id=clean["national_id"])).first():
            raise InvalidCitizen("national_id: already registered")
        citizen = CitizenRow(**clean)
        db.session.add(citizen)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return citizen


def wait_for_import() -> None:
    """On PostgreSQL, wait until no import runs (its INSERT relies on no other writer adding
    national IDs meanwhile); the shared lock is held until this transaction ends."""
    if db.engine.dialect.name == "postgresql":
        db.session.execute(db.text(IMPORT_LOCK.format("pg_advisory_xact_lock_shared")))


# ---- single rows (a live registry's answers) ---------------------------------------------------

def upsert_statement(dialect: str):
    """INSERT ... ON CONFLICT (national_id) DO UPDATE the registry facts, only when they differ."""
    table = CitizenRow.__table__
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    return stmt.on_conflict_do_update(
        index_elements=["national_id"],
        set_={name: stmt.excluded[name] for name in (*UPDATED, "updated_at")},
        where=or_(*(table.c[name].is_distinct_from(stmt.excluded[name]) for name in UPDATED)),
    )


def insert_params(clean: tuple, now: dt.datetime) -> dict:
    values = dict(zip(FIELDS, clean))
    values["birth_date"] = dt.date.fromisoformat(values["birth_date"])
    values.update(subject_key=secrets.token_urlsafe(32), created_at=now, updated_at=now)
    return values


