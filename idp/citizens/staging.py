"""Staging an import and merging it into the citizens table, with the same set statements on
PostgreSQL (a TEMP table filled by COPY) and SQLite (executemany): one UPDATE of the known
citizens, only of the columns the file holds, then one INSERT of the new ones.
"""
from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Iterable

from ..platform.database import UTCDateTime, db, utcnow
from .models import CitizenRow
from .records import BATCH, BIT, COPY_CHUNK, FIELDS, IMPORT_LOCK, NEW_NEEDS, REQUIRED, InvalidCitizen

if TYPE_CHECKING:  # annotations only: the importer imports this module
    from .import_report import Rejections
    from .importer import _Columns

# ---- the merge, the same on both databases -----------------------------------------------------

STAGE = _STAGE = "citizens_import"
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


def merge(columns: _Columns, rejections: Rejections) -> tuple[int, int]:
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


def drop_lines(lines: list[int]) -> None:
    """Take rows rejected after staging (by their line) out of the staged rows, before the merge."""
    for start in range(0, len(lines), 500):
        chunk = lines[start:start + 500]
        db.session.execute(db.text(f"DELETE FROM {_STAGE} WHERE line IN ({', '.join(str(int(n)) for n in chunk)})"))


# ---- staging: PostgreSQL -----------------------------------------------------------------------

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


def stage_postgres(rows: Iterable[tuple[int, tuple]]) -> None:
    """COPY the valid rows into a TEMP table (dropped at commit), sorted by national ID; in the
    session's transaction, once no other import runs."""
    token = secrets.token_urlsafe
    with db.session.connection().connection.driver_connection.cursor() as cur:
        cur.execute(IMPORT_LOCK.format("pg_try_advisory_xact_lock"))
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

def stage_sqlite(rows: Iterable[tuple[int, tuple]]) -> None:
    """Batched executemany of the valid rows into a TEMP table, in the session's transaction
    after taking the write lock (so no other writer changes citizens until the commit)."""
    session = db.session
    session.execute(CitizenRow.__table__.delete().where(db.false()))
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


