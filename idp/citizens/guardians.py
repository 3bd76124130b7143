"""Guardians and the minors they may act for: the registry's links (``idp citizens
link-guardian``, an import's ``guardian_national_id`` column) and the one rule of who may act
for whom today.

A link says nothing about age by itself: whether a guardian may act for a minor is decided at
each use by :func:`minors_of` and :func:`may_act`, which require the minor to be under
``MAJORITY`` on the day (in ``[stats] timezone``). So it ends by itself on the 18th birthday,
with nothing to remove and no clock job to run.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from ..platform.database import db, read_row, utcnow
from .counting import age_on, local_date
from .directory import Citizen
from .models import CitizenRow, GuardianLink
from .national_id import InvalidNationalId, mask_national_id, parse_national_id
from .records import NEW_NEEDS, InvalidCitizen

#: The age at which a guardian no longer acts for a person (their 18th birthday).
MAJORITY = 18
#: An import's column that names a row's guardians (national IDs separated by spaces or ";").
COLUMN = "guardian_national_id"
#: The most guardians one import row may name.
MAX_PER_ROW = 4


class GuardianError(InvalidCitizen):
    """A link that cannot be made or removed; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class Minor:
    """A minor a guardian may act for today, as the chooser shows them (never the full national ID)."""

    citizen: Citizen
    given_name: str | None
    national_id_masked: str


def is_minor(birth_date: dt.date, day: dt.date) -> bool:
    """Under MAJORITY on that day (the 18th birthday is the first day of majority)."""
    return age_on(birth_date, day) < MAJORITY


def majority_day(birth_date: dt.date) -> dt.date:
    """The first day on which someone born on ``birth_date`` is of age (1 March for 29 February)."""
    try:
        return birth_date.replace(year=birth_date.year + MAJORITY)
    except ValueError:
        return dt.date(birth_date.year + MAJORITY, 3, 1)


def today() -> dt.date:
    return local_date(utcnow())


# ---- the links, for operators ------------------------------------------------------------------

def _row(field: str, raw: str) -> CitizenRow:
    try:
        national_id = parse_national_id(str(raw).strip())
    except InvalidNationalId as exc:
        raise GuardianError(f"--{field}: {exc}") from None
    row = db.session.execute(db.select(CitizenRow).filter_by(national_id=national_id)).scalar_one_or_none()
    if row is None:
        raise GuardianError(f"--{field}: no citizen is registered with national ID {national_id}")
    return row


def _pair(guardian: str, minor: str) -> tuple[CitizenRow, CitizenRow]:
    g, m = _row("guardian", guardian), _row("minor", minor)
    if g.id == m.id:
        raise GuardianError("--guardian and --minor name the same citizen: nobody is their own guardian")
    return g, m


def link(guardian: str, minor: str) -> tuple[CitizenRow, CitizenRow, bool]:
    """Link a guardian to a minor (both by national ID); (guardian, minor, created). Refused for
    unknown national IDs, one citizen named twice, and a "minor" who is 18 or older today."""
    g, m = _pair(guardian, minor)
    if not is_minor(m.birth_date, today()):
        raise GuardianError(f"--minor: {m.national_id} is {MAJORITY} or older (born {m.birth_date.isoformat()}); "
                            "a guardian acts only for a minor")
    exists = db.session.execute(db.select(GuardianLink.id).filter_by(guardian_id=g.id, minor_id=m.id)).first()
    if exists:
        return g, m, False
    db.session.add(GuardianLink(guardian_id=g.id, minor_id=m.id, created_at=utcnow()))
    try:
        db.session.commit()
    except IntegrityError:  # the same link made at the same moment by another command
        db.session.rollback()
        return g, m, False
    return g, m, True


def unlink(guardian: str, minor: str) -> tuple[CitizenRow, CitizenRow, bool]:
    """Remove a link; (guardian, minor, removed). Unknown national IDs are refused; a link that
    is not there is no error (``removed`` is False)."""
    g, m = _pair(guardian, minor)
    removed = db.session.execute(db.delete(GuardianLink).where(GuardianLink.guardian_id == g.id,
                                                              GuardianLink.minor_id == m.id)).rowcount
    db.session.commit()
    return g, m, bool(removed)


# ---- who may act for whom, at a login ----------------------------------------------------------

_c = CitizenRow.__table__.c
_l = GuardianLink.__table__.c
_MINORS = (select(_c.id, _c.subject_key, _c.birth_date, _c.first_adult_authenticated_at.isnot(None), _c.given_name,
                  _c.national_id)
           .join_from(GuardianLink.__table__, CitizenRow.__table__, _l.minor_id == _c.id)
           .where(_l.guardian_id == bindparam("p_gid"), _c.birth_date > bindparam("p_born_after"))
           .order_by(_c.birth_date, _c.id))
_MAY_ACT = (select(_c.id, _c.subject_key, _c.birth_date, _c.first_adult_authenticated_at.isnot(None))
            .join_from(GuardianLink.__table__, CitizenRow.__table__, _l.minor_id == _c.id)
            .where(_l.guardian_id == bindparam("p_gid"), _l.minor_id == bindparam("p_mid")))


def _born_after(day: dt.date) -> dt.date:
    """The latest birth date of someone who is MAJORITY or older on ``day`` (a 29 February birth
    date turns a year older on 1 March, as counting.age_on says): a cheap SQL bound, re-checked
    exactly in Python."""
    try:
        return day.replace(year=day.year - MAJORITY)
    except ValueError:  # 29 February
        return day.replace(year=day.year - MAJORITY, day=28)


def minors_of(guardian_id: int, day: dt.date | None = None) -> list[Minor]:
    """The linked minors a guardian may act for on ``day`` (today), the youngest last."""
    day = day or today()
    with db.engine.connect() as conn:
        rows = conn.execute(_MINORS, {"p_gid": guardian_id, "p_born_after": _born_after(day) - dt.timedelta(days=1)})
        return [Minor(Citizen(*row[:4]), row[4], mask_national_id(row[5])) for row in rows
                if is_minor(row[2], day)]


def may_act(guardian_id: int, minor_id: int, day: dt.date | None = None) -> Citizen | None:
    """The minor, when the guardian is linked to them and they are under MAJORITY on ``day``."""
    row = read_row(_MAY_ACT, {"p_gid": guardian_id, "p_mid": minor_id})
    if row is None or not is_minor(row[2], day or today()):
        return None
    return Citizen(*row)


# ---- an import's guardian_national_id column ---------------------------------------------------

@dataclass
class RowLinks:
    """One import row's guardians: where the column is present it is the minor's whole list (an
    empty one removes their links)."""

    line: int
    minor: str  # national ID
    birth_date: str | None  # as the row gives it (None: the row does not hold it)
    guardians: tuple[str, ...]
    rejected: bool = False


_SEPARATORS = re.compile(r"[\s;]+")


def row_links(line: int, minor: str, birth_date: str | None, raw) -> RowLinks:
    """The row's guardians read and checked on their own (InvalidCitizen names what is wrong)."""
    if raw is None:
        raw = ""
    if not isinstance(raw, str):
        raise InvalidCitizen(f"{COLUMN}: must be text (national IDs separated by spaces or ;)")
    named = []
    for part in _SEPARATORS.split(raw.strip()):
        if not part:
            continue
        try:
            named.append(parse_national_id(part))
        except InvalidNationalId as exc:
            raise InvalidCitizen(f"{COLUMN}: {exc}") from None
    named = list(dict.fromkeys(named))
    if len(named) > MAX_PER_ROW:
        raise InvalidCitizen(f"{COLUMN}: more than {MAX_PER_ROW} guardians")
    if minor in named:
        raise InvalidCitizen(f"{COLUMN}: names the row's own citizen (nobody is their own guardian)")
    if named and birth_date is not None and not is_minor(dt.date.fromisoformat(birth_date), today()):
        raise InvalidCitizen(f"{COLUMN}: the citizen is {MAJORITY} or older (a guardian acts only for a minor)")
    return RowLinks(line, minor, birth_date, tuple(named))


def _chunks(values: list, size: int = 500):
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _registered(national_ids: set[str]) -> dict[str, tuple[int, dt.date]]:
    """national ID -> (citizen id, birth date) of those registered."""
    found = {}
    for chunk in _chunks(sorted(national_ids)):
        rows = db.session.execute(select(_c.national_id, _c.id, _c.birth_date).where(_c.national_id.in_(chunk)))
        found.update({nid: (cid, born) for nid, cid, born in rows})
    return found


def check_rows(links: list[RowLinks], stage: str, rejections) -> list[int]:
    """Reject (``rejections``, in line order) the rows whose guardians are neither registered nor
    added by this import, or whose citizen, without a birth date in the row, is registered as 18
    or older; returns their lines. Runs on the staged rows, before the merge, so a rejected row
    loads nothing at all (and a guardian whose own row is rejected is unknown in turn)."""
    named = {g for row in links for g in row.guardians}
    registered = _registered(named | {row.minor for row in links if row.guardians and row.birth_date is None})
    staged: set[str] = set()
    for chunk in _chunks(sorted(named - registered.keys())):
        query = db.text(f"SELECT national_id FROM {stage} WHERE national_id IN :ids AND (present & {NEW_NEEDS}) = "
                        f"{NEW_NEEDS}").bindparams(bindparam("ids", expanding=True))
        staged.update(nid for (nid,) in db.session.execute(query, {"ids": chunk}))
    day = today()
    reasons: dict[int, str] = {}
    for row in links:
        if row.guardians and row.birth_date is None and row.minor in registered \
                and not is_minor(registered[row.minor][1], day):
            reasons[row.line] = f"{COLUMN}: the citizen is {MAJORITY} or older (a guardian acts only for a minor)"
    changed = True
    while changed:  # a guardian whose own row is rejected is not added by this import
        changed = False
        dropped = {row.minor for row in links if row.line in reasons}
        for row in links:
            if row.line in reasons:
                continue
            unknown = [g for g in row.guardians if g not in registered and (g not in staged or g in dropped)]
            if unknown:
                reasons[row.line] = f"{COLUMN}: no citizen is registered with national ID {unknown[0]}"
                changed = True
    if reasons:
        rejections.new_run()
        for line in sorted(reasons):
            rejections.add(line, reasons[line])
    for row in links:
        row.rejected = row.line in reasons
    return sorted(reasons)


def apply_rows(links: list[RowLinks]) -> int:
    """Write the accepted rows' links (after the merge, in the import's transaction): each such
    minor's links become exactly the ones the row names; returns how many links were written."""
    rows = [row for row in links if not row.rejected]
    ids = _registered({row.minor for row in rows} | {g for row in rows for g in row.guardians})
    minors = [ids[row.minor][0] for row in rows if row.minor in ids]
    for chunk in _chunks(minors):
        db.session.execute(db.delete(GuardianLink).where(GuardianLink.minor_id.in_(chunk)))
    now = utcnow()
    new = [{"guardian_id": ids[g][0], "minor_id": ids[row.minor][0], "created_at": now}
           for row in rows if row.minor in ids for g in row.guardians if g in ids]
    for chunk in _chunks(new):
        db.session.execute(GuardianLink.__table__.insert(), chunk)
    return len(new)
