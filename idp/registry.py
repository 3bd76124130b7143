"""Loading the national registry into the citizens table: one by one or from a file.

The registry is the source of truth for who owns which mobile number: importing a known
national ID again updates its mobile and names. Every row is validated; bad rows are
reported with their line number and reason, never half-loaded.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from sqlalchemy.dialects import postgresql, sqlite

from .extensions import db
from .models import Citizen, utcnow
from .national_id import InvalidMobile, InvalidNationalId, parse_mobile, parse_national_id

FIELDS = ("national_id", "mobile", "birth_date", "given_name", "family_name", "given_name_latin",
          "family_name_latin")
BATCH = 2000  # x 12 columns stays under SQLite's 32,766 bound parameters


class InvalidCitizen(ValueError):
    """A registry row is not acceptable; the message names the field."""


@dataclass
class ImportReport:
    """What an import did."""

    loaded: int = 0
    rejected: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"loaded": self.loaded, "rejected": len(self.rejected), "rejections": self.rejected[:1000]}


def validate_row(row: dict[str, str | None], today: dt.date | None = None) -> dict:
    """A clean citizen record from raw text, or InvalidCitizen naming what is wrong."""
    today = today or dt.date.today()
    try:
        national_id = parse_national_id((row.get("national_id") or "").strip())
    except InvalidNationalId as exc:
        raise InvalidCitizen(f"national_id: {exc}") from None
    try:
        mobile = parse_mobile((row.get("mobile") or "").strip())
    except InvalidMobile as exc:
        raise InvalidCitizen(f"mobile: {exc}") from None
    try:
        birth = dt.date.fromisoformat((row.get("birth_date") or "").strip())
    except ValueError:
        raise InvalidCitizen("birth_date: must be YYYY-MM-DD") from None
    if birth > today or birth.year < 1900:
        raise InvalidCitizen("birth_date: out of range")
    clean = {"national_id": national_id, "mobile": mobile, "birth_date": birth}
    for name in FIELDS[3:]:
        value = (row.get(name) or "").strip()
        if len(value) > 100:
            raise InvalidCitizen(f"{name}: longer than 100 characters")
        clean[name] = value or None
    return clean


def add_citizen(**values) -> Citizen:
    """Add one citizen (``idp citizens add``); the national ID must be new."""
    clean = validate_row({k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in values.items()})
    if db.session.execute(db.select(Citizen.id).filter_by(national_id=clean["national_id"])).first():
        raise InvalidCitizen("national_id: already registered")
    citizen = Citizen(**clean)
    db.session.add(citizen)
    db.session.commit()
    return citizen


def _rows(path: Path) -> Iterator[tuple[int, dict]]:
    """Rows of a CSV (with a header) or JSON-lines file, with their line numbers."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                yield number, {"__error__": "not valid JSON"}
                continue
            yield number, obj if isinstance(obj, dict) else {"__error__": "not a JSON object"}
        return
    reader = csv.DictReader(io.StringIO(text))
    missing = {"national_id", "mobile", "birth_date"} - set(reader.fieldnames or [])
    if missing:
        raise InvalidCitizen(f"header: missing column(s) {', '.join(sorted(missing))}")
    for number, row in enumerate(reader, 2):
        yield number, row


def _upsert(records: list[dict]) -> None:
    """Insert new citizens; for known national IDs update mobile and names (the registry wins)."""
    dialect = db.engine.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    now = utcnow()
    for r in records:
        r.update(subject_key=secrets.token_urlsafe(32), created_at=now, updated_at=now)
    stmt = insert(Citizen.__table__).values(records)
    stmt = stmt.on_conflict_do_update(
        index_elements=["national_id"],
        set_={name: stmt.excluded[name] for name in ("mobile", "birth_date", *FIELDS[3:], "updated_at")},
    )
    db.session.execute(stmt)


def import_file(path: str | Path) -> ImportReport:
    """Load a CSV or JSON-lines file; valid rows are loaded, invalid ones reported."""
    path = Path(path)
    if not path.is_file():
        raise InvalidCitizen(f"{path}: no such file")
    report, batch, seen = ImportReport(), [], set()
    for number, row in _rows(path):
        if "__error__" in row:
            report.rejected.append({"line": number, "reason": row["__error__"]})
            continue
        try:
            clean = validate_row(row)
        except InvalidCitizen as exc:
            report.rejected.append({"line": number, "reason": str(exc)})
            continue
        if clean["national_id"] in seen:
            report.rejected.append({"line": number, "reason": "national_id: duplicate in this file"})
            continue
        seen.add(clean["national_id"])
        batch.append(clean)
        if len(batch) >= BATCH:
            _upsert(batch)
            report.loaded += len(batch)
            batch = []
    if batch:
        _upsert(batch)
        report.loaded += len(batch)
    db.session.commit()
    return report
