"""Loading the national registry into the citizens table: one by one or from a file.

The registry is the source of truth for who owns which mobile number: importing a known
national ID again updates its mobile, names and birth date (never its ``subject_key``, from
which every pairwise ``sub`` is derived). Every row is validated; bad rows are reported with
their line number and reason.

Atomicity: one import is one transaction. Valid rows are streamed into a staging table (a
TEMP table filled by COPY on PostgreSQL) while the file is read; the citizens table is changed
only after the whole file was read, by two set statements, and committed once. Any failure
before the commit (an unreadable file, a malformed CSV structure, a database error, the
report that cannot be written, an interrupt) rolls everything back: an import never
half-loads. The report of rejected rows is written just before the commit. Rows whose
values did not change are not written at all, so re-importing the same file is cheap and
locks nothing a login needs. Two imports never run at once (an advisory lock on PostgreSQL,
the write lock on SQLite).

Lookups go through :class:`CitizenDirectory`, so a live registry service can replace the
table later (see :func:`find_citizen`).
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import operator
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Protocol, runtime_checkable

from sqlalchemy import or_

from .extensions import db
from .models import Citizen, utcnow
from .national_id import InvalidMobile, InvalidNationalId, parse_mobile, parse_national_id

FIELDS = ("national_id", "mobile", "birth_date", "given_name", "family_name", "given_name_latin",
          "family_name_latin")
REQUIRED = FIELDS[:3]
NAME_FIELDS = FIELDS[3:]
#: The registry facts an import sets; everything else in a citizen row belongs to the IdP.
UPDATED = FIELDS[1:]
MAX_NAME = 100
EARLIEST_BIRTH = dt.date(1900, 1, 1)
BATCH = 2000  # SQLite executemany batch
COPY_CHUNK = 2000  # rows per COPY write on PostgreSQL
KEEP_REJECTIONS = 1000  # rejections kept in memory (all of them go to the report file)
JSON_SUFFIXES = (".jsonl", ".ndjson")
DIRECTORY_KEY = "idp.citizen_directory"

_DIGITS = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩", "01234567890123456789")
# C0/C1 control characters (a NUL or newline in a name is a broken export, and would break
# COPY), and lone surrogates: bytes of the file that are not UTF-8 (read with surrogateescape).
_BAD_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class InvalidCitizen(ValueError):
    """A registry row or file is not acceptable; the message names the field or the file."""


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
    if raw is None or (isinstance(raw, str) and not raw.strip()):
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
    """The birth date as YYYY-MM-DD: a real calendar date from 1900 up to today."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise InvalidCitizen("birth_date: missing")
    if not isinstance(raw, str):
        raise InvalidCitizen("birth_date: must be YYYY-MM-DD")
    text = raw.strip()
    if not text.isascii():
        text = text.translate(_DIGITS)
    if len(text) != 10 or text[4] != "-" or text[7] != "-" or not text.isascii():
        raise InvalidCitizen("birth_date: must be YYYY-MM-DD")
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidCitizen("birth_date: not a calendar date") from None
    if day > latest:
        raise InvalidCitizen("birth_date: in the future")
    if day < EARLIEST_BIRTH:
        raise InvalidCitizen("birth_date: before 1900")
    return text


def _name(field_name: str, raw) -> str | None:
    if raw is None:
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


def _latest_birth_date() -> dt.date:
    """Today where the date is furthest ahead (UTC+14): a baby born today anywhere is not "future"."""
    return dt.datetime.now(dt.timezone(dt.timedelta(hours=14))).date()


def _clean(values, latest: dt.date) -> tuple:
    """Raw values in FIELDS order -> (national_id, mobile, birth_date ISO, 4 names) or InvalidCitizen."""
    nid, mobile, birth, g, f, gl, fl = values
    return (_national_id(nid), _mobile(mobile), _birth_date(birth, latest), _name("given_name", g),
            _name("family_name", f), _name("given_name_latin", gl), _name("family_name_latin", fl))


def validate_row(row: dict, today: dt.date | None = None) -> dict:
    """A clean citizen record from raw text, or InvalidCitizen naming what is wrong."""
    clean = dict(zip(FIELDS, _clean([row.get(name) for name in FIELDS], today or _latest_birth_date())))
    clean["birth_date"] = dt.date.fromisoformat(clean["birth_date"])
    return clean


def add_citizen(**values) -> Citizen:
    """Add one citizen (``idp citizens add``); the national ID must be new."""
    clean = validate_row({k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in values.items()})
    try:
        _wait_for_import()
        if db.session.execute(db.select(Citizen.id).filter_by(national_id=clean["national_id"])).first():
            raise InvalidCitizen("national_id: already registered")
        citizen = Citizen(**clean)
        db.session.add(citizen)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return citizen


def _wait_for_import() -> None:
    """On PostgreSQL, wait until no import runs (its INSERT relies on no other writer adding
    national IDs meanwhile); the shared lock is held until this transaction ends."""
    if db.engine.dialect.name == "postgresql":
        db.session.execute(db.text(_LOCK.format("pg_advisory_xact_lock_shared")))


# ---- reading files -----------------------------------------------------------------------------

class _Rejection(Exception):
    """A row that is not even a row (bad JSON, too many CSV fields)."""


def _open(path: Path):
    try:
        # surrogateescape: a stray non-UTF-8 byte rejects its row, not the whole file.
        return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")
    except FileNotFoundError:
        raise InvalidCitizen(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidCitizen(f"{path}: is a directory") from None
    except OSError as exc:
        raise InvalidCitizen(f"{path}: cannot read ({exc.strerror or exc})") from None


def _is_json_lines(path: Path, fh) -> bool:
    """By extension (.jsonl, .ndjson), else by sniffing: JSON lines start with '{'."""
    if path.suffix.lower() in JSON_SUFFIXES:
        return True
    head = fh.read(4096)
    fh.seek(0)
    first = head.lstrip()[:1]
    if first == "[":
        raise InvalidCitizen(f"{path}: a JSON array; give one JSON object per line (JSON lines)")
    return first == "{"


def _json_rows(fh) -> Iterator[tuple[int, object]]:
    """(line number, values in FIELDS order or a _Rejection) for each non-blank line."""
    for number, line in enumerate(fh, 1):
        if not line or line.isspace():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            yield number, _Rejection("not valid JSON")
            continue
        if not isinstance(obj, dict):
            yield number, _Rejection("not a JSON object")
            continue
        yield number, [obj.get(name) for name in FIELDS]


def _csv_rows(path: Path, fh) -> Iterator[tuple[int, object]]:
    """(first line number of the row, values in FIELDS order or a _Rejection) per CSV record."""
    reader = csv.reader(fh, strict=True)
    start = 1  # where the record being read begins
    try:
        header = None
        for header in reader:
            if header:
                break
        if not header:
            raise InvalidCitizen(f"{path}: empty file (a CSV header is needed: {','.join(REQUIRED)})")
        names = [h.strip().lower() for h in header]
        missing = [name for name in REQUIRED if name not in names]
        if missing:
            raise InvalidCitizen(f"{path}: the CSV header lacks {', '.join(missing)}")
        repeated = sorted({n for n in names if n in FIELDS and names.count(n) > 1})
        if repeated:
            raise InvalidCitizen(f"{path}: the CSV header repeats {', '.join(repeated)}")
        width = len(names)
        # Absent optional columns read the None appended at index `width`.
        pick = operator.itemgetter(*(names.index(n) if n in names else width for n in FIELDS))
        start = reader.line_num + 1
        for row in reader:
            number, start = start, reader.line_num + 1
            n = len(row)
            if n == width:
                row.append(None)
            elif n == 0:
                continue
            elif n > width:
                yield number, _Rejection(f"{n} fields, the header has {width}")
                continue
            else:
                row.extend([None] * (width + 1 - n))
            yield number, pick(row)
    except csv.Error as exc:
        # A broken quote or the like: the file's structure is lost from here on, so the whole
        # file is refused rather than guessing where the following rows begin.
        raise InvalidCitizen(f"{path}: line {start}: not readable as CSV ({exc})") from None


# ---- the import --------------------------------------------------------------------------------

@dataclass
class ImportReport:
    """What an import did. ``loaded`` = inserted + updated + unchanged (every valid row)."""

    rows: int = 0
    loaded: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    rejections: list[dict] = field(default_factory=list)  # the first KEEP_REJECTIONS
    report_path: str | None = None
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return round(self.rows / self.seconds, 1) if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {"rows": self.rows, "loaded": self.loaded, "inserted": self.inserted, "updated": self.updated,
                "unchanged": self.unchanged, "rejected": self.rejected, "seconds": round(self.seconds, 3),
                "rows_per_second": self.rows_per_second, "report": self.report_path,
                "rejections": self.rejections}


class _Seen:
    """National IDs already read: a set, then (past a few million) a 125 MB bitmap of the first
    nine digits, so a national-scale file needs bounded memory."""

    SWITCH = 1 << 22

    def __init__(self):
        self.ids: set[int] | None = set()
        self.bits: bytearray | None = None

    def add(self, national_id: str) -> bool:
        """False if it was already there."""
        key = int(national_id[:9])
        if self.bits is None:
            ids = self.ids
            if key in ids:
                return False
            ids.add(key)
            if len(ids) > self.SWITCH:
                self.bits = bytearray(10**9 // 8 + 1)
                for k in ids:
                    self.bits[k >> 3] |= 1 << (k & 7)
                self.ids = None
            return True
        bits, i, mask = self.bits, key >> 3, 1 << (key & 7)
        if bits[i] & mask:
            return False
        bits[i] |= mask
        return True


class _Rejections:
    """Rejected rows: counted, the first few kept, all spooled to a temporary file."""

    def __init__(self, report: ImportReport):
        self.report = report
        self.spool = tempfile.TemporaryFile("w+", encoding="utf-8", newline="")
        self.writer = csv.writer(self.spool)

    def add(self, line: int, reason: str) -> None:
        self.report.rejected += 1
        if len(self.report.rejections) < KEEP_REJECTIONS:
            self.report.rejections.append({"line": line, "reason": reason})
        self.writer.writerow((line, reason))

    def write(self, destination: Path) -> None:
        """The report file, CSV (line,reason) or JSON lines (by extension), replaced atomically."""
        self.spool.seek(0)
        as_json = destination.suffix.lower() in (*JSON_SUFFIXES, ".json")
        tmp = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8", newline="") as out:
                writer = None if as_json else csv.writer(out)
                if writer:
                    writer.writerow(("line", "reason"))
                for line, reason in csv.reader(self.spool):
                    if writer:
                        writer.writerow((line, reason))
                    else:
                        out.write(json.dumps({"line": int(line), "reason": reason}, ensure_ascii=False) + "\n")
            os.replace(tmp, destination)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise InvalidCitizen(f"{destination}: cannot write the report ({exc.strerror or exc})") from None

    def close(self) -> None:
        self.spool.close()


def _valid_rows(path: Path, fh, rejections: _Rejections, report: ImportReport) -> Iterator[tuple]:
    """Every row of the file validated; yields clean tuples, records the rejected ones."""
    rows = _json_rows(fh) if _is_json_lines(path, fh) else _csv_rows(path, fh)
    latest = _latest_birth_date()
    seen = _Seen()
    try:
        for number, values in rows:
            report.rows += 1
            if isinstance(values, _Rejection):
                rejections.add(number, str(values))
                continue
            try:
                clean = _clean(values, latest)
            except InvalidCitizen as exc:
                rejections.add(number, str(exc))
                continue
            if not seen.add(clean[0]):
                rejections.add(number, "national_id: duplicate of an earlier row in this file")
                continue
            yield clean
    except OSError as exc:
        raise InvalidCitizen(f"{path}: cannot read ({exc.strerror or exc})") from None


def import_file(path: str | Path, report_path: str | Path | None = None) -> ImportReport:
    """Load a CSV or JSON-lines file in one transaction; valid rows are loaded, invalid ones reported.

    The rejected rows go to ``report_path`` (CSV, or JSON lines for .jsonl/.ndjson/.json), by
    default ``<path>.rejected.csv`` when anything was rejected. Raises InvalidCitizen, with
    nothing loaded and nothing written, when the file cannot be read as a whole.
    """
    started = time.perf_counter()
    path = Path(path)
    report = ImportReport()
    fh = _open(path)
    rejections = _Rejections(report)
    try:
        with fh:
            loader = _postgres_load if db.engine.dialect.name == "postgresql" else _sqlite_load
            report.inserted, report.updated = loader(_valid_rows(path, fh, rejections, report))
        report.loaded = report.rows - report.rejected
        report.unchanged = report.loaded - report.inserted - report.updated
        if report_path is not None or report.rejected:
            destination = Path(report_path) if report_path is not None else path.with_name(path.name + ".rejected.csv")
            rejections.write(destination)
            report.report_path = str(destination)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    finally:
        rejections.close()
    report.seconds = time.perf_counter() - started
    return report


# ---- loading: PostgreSQL -----------------------------------------------------------------------

_STAGE = "citizens_import"
_LOCK = "SELECT {}(hashtext('idp.citizens.import'))"
_PG_STAGE = f"""
CREATE TEMP TABLE {_STAGE}_raw (
    national_id varchar(10) NOT NULL, mobile varchar(16) NOT NULL, birth_date date NOT NULL,
    given_name varchar(100), family_name varchar(100), given_name_latin varchar(100),
    family_name_latin varchar(100), subject_key varchar(43) NOT NULL
) ON COMMIT DROP"""
# In national-ID order, the UPDATE walks the citizens table and its national_id index in order
# instead of at random: twice as fast for a file that changes every row.
_PG_SORT = f"""
CREATE TEMP TABLE {_STAGE} ON COMMIT DROP AS SELECT * FROM {_STAGE}_raw ORDER BY national_id;
DROP TABLE {_STAGE}_raw;
ANALYZE {_STAGE}"""
_PG_UPDATE = f"""
UPDATE citizens AS c SET {', '.join(f'{n} = s.{n}' for n in UPDATED)}, updated_at = %(now)s
FROM {_STAGE} AS s
WHERE c.national_id = s.national_id
  AND ({', '.join(f'c.{n}' for n in UPDATED)}) IS DISTINCT FROM ({', '.join(f's.{n}' for n in UPDATED)})"""
# Only new national IDs are left. No ON CONFLICT (it would double the cost of the insert): the
# other writers of new citizens (`citizens add`) wait for the import's lock, so none can appear.
_PG_INSERT = f"""
INSERT INTO citizens ({', '.join(FIELDS)}, subject_key, created_at, updated_at)
SELECT {', '.join(f's.{n}' for n in FIELDS)}, s.subject_key, %(now)s, %(now)s
FROM {_STAGE} AS s
WHERE NOT EXISTS (SELECT 1 FROM citizens AS c WHERE c.national_id = s.national_id)
ORDER BY s.national_id"""


def _copy_text(value: str | None) -> str:
    if value is None:
        return "\\N"
    return value.replace("\\", "\\\\") if "\\" in value else value


def _postgres_load(rows: Iterable[tuple]) -> tuple[int, int]:
    """COPY the valid rows into a TEMP table, then one UPDATE and one INSERT; (inserted, updated).

    Runs in the session's transaction; the caller commits or rolls back.
    """
    import psycopg

    raw = db.session.connection().connection.driver_connection
    try:
        with raw.cursor() as cur:
            return _postgres_merge(cur, rows)
    except psycopg.Error as exc:
        # One line, without the DETAIL (it may quote a national ID); the caller rolls back.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidCitizen(f"database: {first} (nothing was loaded)") from None


def _postgres_merge(cur, rows: Iterable[tuple]) -> tuple[int, int]:
    """The import proper, on a psycopg cursor inside the session's transaction."""
    now = utcnow()
    token = secrets.token_urlsafe
    cur.execute(_LOCK.format("pg_try_advisory_xact_lock"))
    if not cur.fetchone()[0]:
        raise InvalidCitizen("another citizens import is running; try again when it ends")
    cur.execute("SET LOCAL statement_timeout = 0")
    cur.execute("SET LOCAL work_mem = '256MB'")
    cur.execute(_PG_STAGE)
    with cur.copy(f"COPY {_STAGE}_raw FROM STDIN") as copy:
        buffer: list[str] = []
        for nid, mobile, birth, g, f, gl, fl in rows:
            buffer.append(f"{nid}\t{mobile}\t{birth}\t{_copy_text(g)}\t{_copy_text(f)}\t{_copy_text(gl)}\t"
                          f"{_copy_text(fl)}\t{token(32)}\n")
            if len(buffer) >= COPY_CHUNK:
                copy.write("".join(buffer))
                buffer.clear()
        if buffer:
            copy.write("".join(buffer))
    cur.execute(_PG_SORT)
    cur.execute(_PG_UPDATE, {"now": now})
    updated = cur.rowcount
    cur.execute(_PG_INSERT, {"now": now})
    inserted = cur.rowcount
    return inserted, updated


# ---- loading: SQLite (and single rows anywhere) ------------------------------------------------

def _upsert_statement(dialect: str):
    """INSERT ... ON CONFLICT (national_id) DO UPDATE the registry facts, only when they differ."""
    from sqlalchemy.dialects import postgresql, sqlite

    table = Citizen.__table__
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    return stmt.on_conflict_do_update(
        index_elements=["national_id"],
        set_={name: stmt.excluded[name] for name in (*UPDATED, "updated_at")},
        where=or_(*(table.c[name].is_distinct_from(stmt.excluded[name]) for name in UPDATED)),
    )


def _params(clean: tuple, now: dt.datetime) -> dict:
    values = dict(zip(FIELDS, clean))
    values["birth_date"] = dt.date.fromisoformat(values["birth_date"])
    values.update(subject_key=secrets.token_urlsafe(32), created_at=now, updated_at=now)
    return values


def _sqlite_load(rows: Iterable[tuple]) -> tuple[int, int]:
    """Batched executemany of the upsert, all in the session's transaction; (inserted, updated)."""
    session = db.session
    # Take the write lock first, so the counts below see no other writer.
    session.execute(Citizen.__table__.delete().where(db.false()))
    before = session.execute(db.select(db.func.count()).select_from(Citizen)).scalar_one()
    changes_before = session.execute(db.text("SELECT total_changes()")).scalar_one()
    stmt, now, batch = _upsert_statement("sqlite"), utcnow(), []
    for clean in rows:
        batch.append(_params(clean, now))
        if len(batch) >= BATCH:
            session.execute(stmt, batch)
            batch = []
    if batch:
        session.execute(stmt, batch)
    changed = session.execute(db.text("SELECT total_changes()")).scalar_one() - changes_before
    inserted = session.execute(db.select(db.func.count()).select_from(Citizen)).scalar_one() - before
    return inserted, changed - inserted


# ---- looking citizens up -----------------------------------------------------------------------

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

    def citizen(self, national_id: str) -> Citizen | None:
        return db.session.execute(db.select(Citizen).filter_by(national_id=national_id)).scalar_one_or_none()

    def find(self, national_id: str) -> CitizenRecord | None:
        row = self.citizen(national_id)
        return None if row is None else CitizenRecord(*(getattr(row, name) for name in FIELDS))


def current_directory() -> CitizenDirectory:
    """The app's directory (``app.extensions["idp.citizen_directory"]``), by default the table."""
    from flask import current_app

    return current_app.extensions.get(DIRECTORY_KEY) or SqlCitizenDirectory()


def find_citizen(national_id: str, directory: CitizenDirectory | None = None) -> Citizen | None:
    """The local citizen row for a validated national ID, as the directory knows it.

    With the SQL directory this is one SELECT. With any other directory the registry's answer
    is written to the local row first (created with a new subject_key, or its registry facts
    updated; the subject_key and the IdP's own columns are kept), so logins always see the
    registry's current mobile number.
    """
    source = directory if directory is not None else current_directory()
    if isinstance(source, SqlCitizenDirectory):
        return source.citizen(national_id)
    record = source.find(national_id)
    if record is None:
        return None
    return _provision(record)


def _provision(record: CitizenRecord) -> Citizen:
    """Insert or refresh one citizen row from a registry record; committed."""
    clean = _clean([getattr(record, name) if name != "birth_date" else record.birth_date.isoformat()
                    for name in FIELDS], _latest_birth_date())
    try:
        _wait_for_import()
        db.session.execute(_upsert_statement(db.engine.dialect.name), _params(clean, utcnow()))
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return SqlCitizenDirectory().citizen(clean[0])
