"""Loading the national registry into the citizens table: one by one or from a file.

The registry is the source of truth for who owns which mobile number: importing a known
national ID again updates its mobile, names and birth date (never its ``subject_key``, from
which every pairwise ``sub`` is derived). Every row is validated; bad rows are reported with
their line number and reason.

An import writes only the columns its file holds. A column absent from a CSV header, or a key
absent from one JSON line (per row: each line says what it sets), is never written for a known
citizen; a present column is authoritative, so an empty optional name in it clears that name,
while an empty required value (mobile, birth date) rejects the row. A new citizen needs
national_id, mobile and birth_date; a new one without them is a rejected row. An unknown CSV
column refuses the file, an unknown JSON key rejects its row: nothing is ignored silently.

Atomicity: one import is one transaction. Valid rows are streamed into a staging table (a
TEMP table filled by COPY on PostgreSQL, by executemany on SQLite) while the file is read; the
citizens table is changed only after the whole file was read, by the same set statements on
both databases, and committed once together with one ``registry_imported`` audit event (the
counts, the file's SHA-256, its columns, who ran it). Any failure before the commit (an
unreadable file, a malformed CSV structure, a database error, the report that cannot be
written, an interrupt) rolls everything back: an import never half-loads, and a refused file
leaves no audit event. The report of rejected rows is written just before the commit. Rows
whose values did not change are not written at all, so re-importing the same file is cheap and
locks nothing a login needs. Two imports never run at once (an advisory lock on PostgreSQL,
the write lock on SQLite).

Lookups go through :class:`CitizenDirectory`, so a live registry service can replace the
table later (see :func:`find_citizen`).
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import heapq
import io
import itertools
import json
import operator
import os
import re
import secrets
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator, Protocol, runtime_checkable

from sqlalchemy import or_
from sqlalchemy.exc import DBAPIError

from ..platform import audit
from ..platform.database import UTCDateTime, db, utcnow
from .models import Citizen
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
DIRECTORY_KEY = "idp.citizen_directory"

_DIGITS = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩", "01234567890123456789")
# C0/C1 control characters (a NUL or newline in a name is a broken export, and would break
# COPY), and lone surrogates: bytes of the file that are not UTF-8 (read with surrogateescape).
_BAD_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


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


def _latest_birth_date() -> dt.date:
    """Today where the date is furthest ahead (UTC+14): a baby born today anywhere is not "future"."""
    return dt.datetime.now(dt.timezone(dt.timedelta(hours=14))).date()


def _clean(values, latest: dt.date) -> tuple:
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
    """A row that is not even a row (bad JSON, unknown keys, a CSV record of the wrong width)."""


class _Columns:
    """The UPDATED columns (as BIT masks) that the valid rows hold: in some row, in every row."""

    def __init__(self):
        self.any, self.every = 0, sum(BIT.values())

    @property
    def names(self) -> list[str]:
        return ["national_id", *(name for name in UPDATED if self.any & BIT[name])]


class _HashingReader(io.RawIOBase):
    """A binary file whose bytes are hashed (SHA-256) once each as they are read, so the audit
    event names exactly the bytes that were imported (every import reads to the end), even if
    the file changes meanwhile. Reading again after a seek back (the format sniffing) hashes
    nothing twice."""

    def __init__(self, raw):
        self.raw, self.sha256, self.position, self.hashed = raw, hashlib.sha256(), 0, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        end = self.position + n
        if end > self.hashed:
            self.sha256.update(memoryview(buffer)[self.hashed - self.position:n])
            self.hashed = end
        self.position = end
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.position = self.raw.seek(offset, whence)
        if self.position > self.hashed:
            raise io.UnsupportedOperation("seeking past the bytes read would leave them unhashed")
        return self.position

    def tell(self) -> int:
        return self.position

    def close(self) -> None:
        self.raw.close()
        super().close()


def _open(path: Path) -> tuple[io.TextIOWrapper, _HashingReader]:
    """The file as text, and the hashing reader beneath it."""
    try:
        raw = _HashingReader(open(path, "rb"))
    except FileNotFoundError:
        raise InvalidCitizen(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidCitizen(f"{path}: is a directory") from None
    except OSError as exc:
        raise InvalidCitizen(f"{path}: cannot read ({exc.strerror or exc})") from None
    # surrogateescape: a stray non-UTF-8 byte rejects its row, not the whole file.
    text = io.TextIOWrapper(io.BufferedReader(raw, 1 << 20), encoding="utf-8-sig", errors="surrogateescape",
                            newline="")
    return text, raw


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
    """(line number, values in FIELDS order or a _Rejection) for each non-blank line. Each line
    holds the keys it sets (ABSENT for the others); a key we do not know rejects its line."""
    known = frozenset(FIELDS)
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
        if unknown := obj.keys() - known:
            yield number, _Rejection(f"unknown keys: {_quoted(sorted(unknown))}")
            continue
        yield number, [obj.get(name, ABSENT) for name in FIELDS]


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(json.dumps(name, ensure_ascii=False) for name in names)


def _csv_header(path: Path, header: list[str], columns: _Columns) -> list[str]:
    """The header's column names; refuses one that lacks national_id, has nothing else, repeats
    or does not know a column (a misspelt column must not be ignored)."""
    names = [h.strip().lower() for h in header]
    if "national_id" not in names:
        raise InvalidCitizen(f"{path}: the CSV header lacks national_id")
    if unknown := [n for n in names if n not in FIELDS]:
        raise InvalidCitizen(f"{path}: the CSV header has unknown columns {_quoted(unknown)} "
                             f"(known: {', '.join(FIELDS)})")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidCitizen(f"{path}: the CSV header repeats {', '.join(repeated)}")
    if len(names) == 1:
        raise InvalidCitizen(f"{path}: the CSV header has no column besides national_id")
    columns.any |= sum(BIT[n] for n in names if n in BIT)
    return names


def _csv_rows(path: Path, fh, columns: _Columns) -> Iterator[tuple[int, object]]:
    """(first line number of the row, values in FIELDS order or a _Rejection) per CSV record;
    the columns the header lacks are ABSENT."""
    reader = csv.reader(fh, strict=True)
    start = 1  # where the record being read begins
    try:
        header = None
        for header in reader:
            if header:
                break
        if not header:
            raise InvalidCitizen(f"{path}: empty file (a CSV header is needed: {','.join(REQUIRED)})")
        names = _csv_header(path, header, columns)
        width = len(names)
        # Absent columns read the ABSENT appended at index `width`.
        pick = operator.itemgetter(*(names.index(n) if n in names else width for n in FIELDS))
        start = reader.line_num + 1
        for row in reader:
            number, start = start, reader.line_num + 1
            n = len(row)
            if n == width:
                row.append(ABSENT)
            elif n == 0:
                continue
            else:
                # Too few fields would be read as empty values, which clear names: refused too.
                yield number, _Rejection(f"{n} fields, the header has {width}")
                continue
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
    columns: list[str] = field(default_factory=list)  # the columns the file holds
    sha256: str | None = None  # of the file's bytes as read

    @property
    def rows_per_second(self) -> float:
        return round(self.rows / self.seconds, 1) if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {"rows": self.rows, "loaded": self.loaded, "inserted": self.inserted, "updated": self.updated,
                "unchanged": self.unchanged, "rejected": self.rejected, "seconds": round(self.seconds, 3),
                "rows_per_second": self.rows_per_second, "report": self.report_path, "columns": self.columns,
                "sha256": self.sha256, "rejections": self.rejections}


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
    """Rejected rows: counted, the first few kept, all spooled to temporary files. Rows come in
    runs, each in line order (the rows as read; then the new citizens that lacked a column,
    found only once the file was staged); the report merges the runs by line."""

    def __init__(self, report: ImportReport):
        self.report = report
        self.runs: list[tuple[list[dict], IO[str]]] = []
        self.new_run()

    def new_run(self) -> None:
        """Start a run of rejections whose lines come after none of its own, in order."""
        self.kept: list[dict] = []
        self.spool = tempfile.TemporaryFile("w+", encoding="utf-8", newline="")
        self.writer = csv.writer(self.spool)
        self.runs.append((self.kept, self.spool))

    def add(self, line: int, reason: str) -> None:
        self.report.rejected += 1
        if len(self.kept) < KEEP_REJECTIONS:
            self.kept.append({"line": line, "reason": reason})
        self.writer.writerow((line, reason))

    def finish(self) -> None:
        """The report's first KEEP_REJECTIONS rejections, in line order."""
        kept = heapq.merge(*(run for run, _ in self.runs), key=operator.itemgetter("line"))
        self.report.rejections = list(itertools.islice(kept, KEEP_REJECTIONS))

    def write(self, destination: Path) -> None:
        """The report file, CSV (line,reason) or JSON lines (by extension), replaced atomically."""
        for _, spool in self.runs:
            spool.seek(0)
        rows = heapq.merge(*(csv.reader(spool) for _, spool in self.runs), key=lambda row: int(row[0]))
        as_json = destination.suffix.lower() in (*JSON_SUFFIXES, ".json")
        tmp = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8", newline="") as out:
                writer = None if as_json else csv.writer(out)
                if writer:
                    writer.writerow(("line", "reason"))
                for line, reason in rows:
                    if writer:
                        writer.writerow((line, reason))
                    else:
                        out.write(json.dumps({"line": int(line), "reason": reason}, ensure_ascii=False) + "\n")
            os.replace(tmp, destination)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise InvalidCitizen(f"{destination}: cannot write the report ({exc.strerror or exc})") from None

    def close(self) -> None:
        for _, spool in self.runs:
            spool.close()


def _valid_rows(path: Path, fh, rejections: _Rejections, report: ImportReport,
                columns: _Columns) -> Iterator[tuple[int, tuple]]:
    """Every row of the file validated; yields (line, clean tuple), records the rejected ones and
    the columns the valid rows hold."""
    rows = _json_rows(fh) if _is_json_lines(path, fh) else _csv_rows(path, fh, columns)
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
            columns.any |= clean[7]
            columns.every &= clean[7]
            yield number, clean
    except OSError as exc:
        raise InvalidCitizen(f"{path}: cannot read ({exc.strerror or exc})") from None


def import_file(path: str | Path, report_path: str | Path | None = None) -> ImportReport:
    """Load a CSV or JSON-lines file in one transaction; valid rows are loaded, invalid ones reported.

    The rejected rows go to ``report_path`` (CSV, or JSON lines for .jsonl/.ndjson/.json), by
    default ``<path>.rejected.csv`` when anything was rejected. One ``registry_imported`` audit
    event is committed with the rows. Raises InvalidCitizen, with nothing loaded and nothing
    written, when the file cannot be read as a whole.
    """
    started = time.perf_counter()
    path = Path(path)
    report = ImportReport()
    fh, raw = _open(path)
    rejections = _Rejections(report)
    columns = _Columns()
    try:
        with fh, _database_errors():
            (_stage_postgres if db.engine.dialect.name == "postgresql" else _stage_sqlite)(
                _valid_rows(path, fh, rejections, report, columns))
            report.inserted, report.updated = _merge(columns, rejections)
        report.loaded = report.rows - report.rejected
        report.unchanged = report.loaded - report.inserted - report.updated
        report.columns, report.sha256 = columns.names, raw.sha256.hexdigest()
        rejections.finish()
        if report_path is not None or report.rejected:
            destination = Path(report_path) if report_path is not None else path.with_name(path.name + ".rejected.csv")
            rejections.write(destination)
            report.report_path = str(destination)
        audit.record("registry_imported", commit=False, file=os.path.abspath(path), bytes=raw.hashed,
                     sha256=report.sha256, columns=report.columns, rows=report.rows, inserted=report.inserted,
                     updated=report.updated, unchanged=report.unchanged, rejected=report.rejected,
                     **audit.operator())
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    finally:
        rejections.close()
    report.seconds = time.perf_counter() - started
    return report


@contextmanager
def _database_errors() -> Iterator[None]:
    """A database error as one line, without its DETAIL (it may quote a national ID)."""
    try:
        yield
    except (DBAPIError, db.engine.dialect.loaded_dbapi.Error) as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        text = str(cause).strip()
        first = text.splitlines()[0] if text else type(cause).__name__
        raise InvalidCitizen(f"database: {first} (nothing was loaded)") from None


# ---- the merge, the same on both databases -----------------------------------------------------

_STAGE = "citizens_import"
# Absent values are NULL here and their bit is clear in `present`; `line` is the row's line in
# the file, for the rejections found only here.
_STAGE_COLUMNS = """
    national_id varchar(10) NOT NULL, mobile varchar(16), birth_date date, given_name varchar(100),
    family_name varchar(100), given_name_latin varchar(100), family_name_latin varchar(100),
    present smallint NOT NULL, line integer NOT NULL, subject_key varchar(43) NOT NULL"""
_IS_NEW = "NOT EXISTS (SELECT 1 FROM citizens AS c WHERE c.national_id = s.national_id)"
# Only new national IDs are left. No ON CONFLICT (it would double the cost of the insert on
# PostgreSQL): the other writers of new citizens (`citizens add`) wait for the import's lock,
# so none can appear.
_INSERT = f"""
INSERT INTO citizens ({', '.join(FIELDS)}, subject_key, created_at, updated_at)
SELECT {', '.join(f's.{n}' for n in FIELDS)}, s.subject_key, :now, :now
FROM {_STAGE} AS s
WHERE {_IS_NEW}{{complete}}
ORDER BY s.national_id"""
_COMPLETE = f" AND (s.present & {NEW_NEEDS}) = {NEW_NEEDS}"
_INCOMPLETE_NEW = f"""
SELECT s.line, s.present FROM {_STAGE} AS s
WHERE (s.present & {NEW_NEEDS}) <> {NEW_NEEDS} AND {_IS_NEW}
ORDER BY s.line"""


def _update_sql(columns: _Columns) -> str | None:
    """The UPDATE of known citizens: each column some row holds is set, from the staged value
    where the row holds it (a CASE only when not every row does), and only rows whose values
    differ are written. None when the rows hold no column to update."""
    values = {}
    for name, bit in BIT.items():
        if columns.any & bit:
            values[name] = (f"s.{name}" if columns.every & bit
                            else f"CASE WHEN (s.present & {bit}) <> 0 THEN s.{name} ELSE c.{name} END")
    if not values:
        return None
    # SQLite's IS NOT compares row values as PostgreSQL's IS DISTINCT FROM (which SQLite has only
    # since 3.39).
    differ = "IS DISTINCT FROM" if db.engine.dialect.name == "postgresql" else "IS NOT"
    return f"""
UPDATE citizens AS c SET {', '.join(f'{n} = {v}' for n, v in values.items())}, updated_at = :now
FROM {_STAGE} AS s
WHERE c.national_id = s.national_id
  AND ({', '.join(f'c.{n}' for n in values)}) {differ} ({', '.join(values.values())})"""


def _merge(columns: _Columns, rejections: _Rejections) -> tuple[int, int]:
    """The staged rows into citizens, in the session's transaction; (inserted, updated).

    One UPDATE of the known citizens, then the new citizens whose rows lack mobile or birth date
    are rejected, then one INSERT of the other new ones; the staging table is dropped.
    """
    session = db.session
    now = {"now": utcnow()}
    timed = db.bindparam("now", type_=UTCDateTime())
    updated = 0
    if update := _update_sql(columns):
        updated = session.execute(db.text(update).bindparams(timed), now).rowcount
    complete = ""
    if columns.every & NEW_NEEDS != NEW_NEEDS:
        complete = _COMPLETE
        rejections.new_run()
        for line, present in session.execute(db.text(_INCOMPLETE_NEW), execution_options={"yield_per": 10_000}):
            missing = " and ".join(n for n in REQUIRED[1:] if not present & BIT[n])
            rejections.add(line, f"national_id: not registered, and a new citizen needs {missing}")
    inserted = session.execute(db.text(_INSERT.format(complete=complete)).bindparams(timed), now).rowcount
    session.execute(db.text(f"DROP TABLE {_STAGE}"))
    return inserted, updated


# ---- staging: PostgreSQL -----------------------------------------------------------------------

_LOCK = "SELECT {}(hashtext('idp.citizens.import'))"
# In national-ID order, the UPDATE walks the citizens table and its national_id index in order
# instead of at random: twice as fast for a file that changes every row.
_PG_SORT = f"""
CREATE TEMP TABLE {_STAGE} ON COMMIT DROP AS SELECT * FROM {_STAGE}_raw ORDER BY national_id;
DROP TABLE {_STAGE}_raw;
ANALYZE {_STAGE}"""
_COPY_NULL = "\\N"


def _copy_text(value: str | None) -> str:
    if value is None:
        return _COPY_NULL
    return value.replace("\\", "\\\\") if "\\" in value else value


def _stage_postgres(rows: Iterable[tuple[int, tuple]]) -> None:
    """COPY the valid rows into a TEMP table (dropped at commit), sorted by national ID; in the
    session's transaction, once no other import runs."""
    token = secrets.token_urlsafe
    with db.session.connection().connection.driver_connection.cursor() as cur:
        cur.execute(_LOCK.format("pg_try_advisory_xact_lock"))
        if not cur.fetchone()[0]:
            raise InvalidCitizen("another citizens import is running; try again when it ends")
        cur.execute("SET LOCAL statement_timeout = 0")
        cur.execute("SET LOCAL work_mem = '256MB'")
        cur.execute(f"CREATE TEMP TABLE {_STAGE}_raw ({_STAGE_COLUMNS}) ON COMMIT DROP")
        with cur.copy(f"COPY {_STAGE}_raw FROM STDIN") as copy:
            buffer: list[str] = []
            for line, (nid, mobile, birth, g, f, gl, fl, present) in rows:
                # mobile and birth date are None or canonical (never a backslash)
                buffer.append(f"{nid}\t{mobile or _COPY_NULL}\t{birth or _COPY_NULL}\t{_copy_text(g)}\t"
                              f"{_copy_text(f)}\t{_copy_text(gl)}\t{_copy_text(fl)}\t{present}\t{line}\t{token(32)}\n")
                if len(buffer) >= COPY_CHUNK:
                    copy.write("".join(buffer))
                    buffer.clear()
            if buffer:
                copy.write("".join(buffer))
        cur.execute(_PG_SORT)


# ---- staging: SQLite ---------------------------------------------------------------------------

def _stage_sqlite(rows: Iterable[tuple[int, tuple]]) -> None:
    """Batched executemany of the valid rows into a TEMP table, in the session's transaction
    after taking the write lock (so no other writer changes citizens until the commit)."""
    session = db.session
    session.execute(Citizen.__table__.delete().where(db.false()))
    cur = session.connection().connection.driver_connection.cursor()
    try:
        cur.execute(f"DROP TABLE IF EXISTS temp.{_STAGE}")
        cur.execute(f"CREATE TEMP TABLE {_STAGE} ({_STAGE_COLUMNS})")
        insert, token, batch = f"INSERT INTO temp.{_STAGE} VALUES ({', '.join('?' * 10)})", secrets.token_urlsafe, []
        for line, clean in rows:
            batch.append((*clean, line, token(32)))
            if len(batch) >= BATCH:
                cur.executemany(insert, batch)
                batch.clear()
        if batch:
            cur.executemany(insert, batch)
    finally:
        cur.close()


# ---- single rows (a live registry's answers) ---------------------------------------------------

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
