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

"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import operator
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from sqlalchemy.exc import DBAPIError

from ..platform import audit
from ..platform.database import db
from . import guardians, staging
from .import_report import ImportReport, Rejections, Seen
from .records import (
    ABSENT,
    BIT,
    FIELDS,
    JSON_SUFFIXES,
    REQUIRED,
    UPDATED,
    InvalidCitizen,
    clean_values,
    latest_birth_date,
)

# ---- reading files -----------------------------------------------------------------------------

class _Rejection(Exception):
    """A row that is not even a row (bad JSON, unknown keys, a CSV record of the wrong width)."""


class _Columns:
    """The UPDATED columns (as BIT masks) that the valid rows hold: in some row, in every row."""

    def __init__(self):
        self.any, self.every = 0, sum(BIT.values())
        self.guardians = False  # the file has a guardian_national_id column (or key)

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
    """(line number, (values in FIELDS order, guardians) or a _Rejection) for each non-blank
    line. Each line holds the keys it sets (ABSENT for the others); a key we do not know rejects
    its line."""
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
        if unknown := obj.keys() - known - {guardians.COLUMN}:
            yield number, _Rejection(f"unknown keys: {_quoted(sorted(unknown))}")
            continue
        yield number, ([obj.get(name, ABSENT) for name in FIELDS], obj.get(guardians.COLUMN, ABSENT))


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(json.dumps(name, ensure_ascii=False) for name in names)


def _csv_header(path: Path, header: list[str], columns: _Columns) -> list[str]:
    """The header's column names; refuses one that lacks national_id, has nothing else, repeats
    or does not know a column (a misspelt column must not be ignored)."""
    names = [h.strip().lower() for h in header]
    if "national_id" not in names:
        raise InvalidCitizen(f"{path}: the CSV header lacks national_id")
    if unknown := [n for n in names if n not in FIELDS and n != guardians.COLUMN]:
        raise InvalidCitizen(f"{path}: the CSV header has unknown columns {_quoted(unknown)} "
                             f"(known: {', '.join(FIELDS)}, {guardians.COLUMN})")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidCitizen(f"{path}: the CSV header repeats {', '.join(repeated)}")
    if len(names) == 1:
        raise InvalidCitizen(f"{path}: the CSV header has no column besides national_id")
    columns.any |= sum(BIT[n] for n in names if n in BIT)
    columns.guardians = guardians.COLUMN in names
    return names


def _csv_rows(path: Path, fh, columns: _Columns) -> Iterator[tuple[int, object]]:
    """(first line number of the row, (values in FIELDS order, guardians) or a _Rejection) per
    CSV record; the columns the header lacks are ABSENT."""
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
        guardian_at = names.index(guardians.COLUMN) if guardians.COLUMN in names else width
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
            yield number, (pick(row), row[guardian_at])
    except csv.Error as exc:
        # A broken quote or the like: the file's structure is lost from here on, so the whole
        # file is refused rather than guessing where the following rows begin.
        raise InvalidCitizen(f"{path}: line {start}: not readable as CSV ({exc})") from None


# ---- the import --------------------------------------------------------------------------------

def _valid_rows(path: Path, fh, rejections: Rejections, report: ImportReport,
                columns: _Columns, links: list[guardians.RowLinks]) -> Iterator[tuple[int, tuple]]:
    """Every row of the file validated; yields (line, clean tuple), records the rejected ones, the
    columns the valid rows hold, and the guardians of the rows that name them (``links``)."""
    rows = _json_rows(fh) if _is_json_lines(path, fh) else _csv_rows(path, fh, columns)
    latest = latest_birth_date()
    seen = Seen()
    try:
        for number, values in rows:
            report.rows += 1
            if isinstance(values, _Rejection):
                rejections.add(number, str(values))
                continue
            values, named = values
            try:
                clean = clean_values(values, latest)
                row_links = None if named is ABSENT else guardians.row_links(number, clean[0], clean[2], named)
            except InvalidCitizen as exc:
                rejections.add(number, str(exc))
                continue
            if not seen.add(clean[0]):
                rejections.add(number, "national_id: duplicate of an earlier row in this file")
                continue
            if row_links is not None:
                columns.guardians = True
                links.append(row_links)
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
    rejections = Rejections(report)
    columns = _Columns()
    links: list[guardians.RowLinks] = []
    try:
        with fh, _database_errors():
            (staging.stage_postgres if db.engine.dialect.name == "postgresql" else staging.stage_sqlite)(
                _valid_rows(path, fh, rejections, report, columns, links))
            if links:  # before the merge: a row whose guardians are refused loads nothing
                staging.drop_lines(guardians.check_rows(links, staging.STAGE, rejections))
            report.inserted, report.updated = staging.merge(columns, rejections)
            if links:
                report.guardian_links = guardians.apply_rows(links)
            elif columns.guardians:
                report.guardian_links = 0
        report.loaded = report.rows - report.rejected
        report.unchanged = report.loaded - report.inserted - report.updated
        report.columns, report.sha256 = columns.names, raw.sha256.hexdigest()
        if columns.guardians:
            report.columns.append(guardians.COLUMN)
        rejections.finish()
        if report_path is not None or report.rejected:
            destination = Path(report_path) if report_path is not None else path.with_name(path.name + ".rejected.csv")
            rejections.write(destination)
            report.report_path = str(destination)
        linked = {"guardian_links": report.guardian_links} if columns.guardians else {}
        audit.record("registry_imported", commit=False, file=os.path.abspath(path), bytes=raw.hashed,
                     sha256=report.sha256, columns=report.columns, rows=report.rows, inserted=report.inserted,
                     updated=report.updated, unchanged=report.unchanged, rejected=report.rejected,
                     **linked, **audit.operator())
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


