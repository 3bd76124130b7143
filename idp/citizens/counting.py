"""Citizens: lookup, adulthood, and recording each successful authentication.

The unique-adult counter (DESIGN §7) is kept in the same transaction that sets a citizen's
``first_adult_authenticated_at``: the conditional UPDATE lets exactly one of any number of
concurrent first logins see a row change, and only that one increments the counter.
"""
from __future__ import annotations

import datetime as dt
import zoneinfo

from sqlalchemy import bindparam, func, insert, inspect, select, update

from ..platform.database import db, read_row, utcnow
from ..platform.settings import settings
from ..platform.store import store
from .models import AuthEvent, Citizen, StatCounter

UNIQUE_ADULTS = "unique_adults"

# The statements of every login, built once as Core statements on the tables: the ORM's bulk
# UPDATE/INSERT path (identity-map synchronisation) and building a statement per call cost more
# CPU than the round trips themselves.
_citizens = Citizen.__table__
_at = bindparam("p_at", type_=_citizens.c.last_authenticated_at.type)
_SEEN = (update(_citizens).where(_citizens.c.id == bindparam("p_cid"))
         .values(last_authenticated_at=_at, first_authenticated_at=func.coalesce(_citizens.c.first_authenticated_at, _at)))
_FIRST_ADULT = (update(_citizens)
                .where(_citizens.c.id == bindparam("p_cid"), _citizens.c.first_adult_authenticated_at.is_(None))
                .values(first_adult_authenticated_at=_at))
_EVENT = insert(AuthEvent.__table__)
_COUNT_ADULT = (update(StatCounter.__table__).where(StatCounter.__table__.c.name == UNIQUE_ADULTS)
                .values(value=StatCounter.__table__.c.value + 1))


def find_by_national_id(national_id: str) -> Citizen | None:
    """The citizen with this (already validated) national ID, or None: the citizens table, or a
    live registry service when one is configured (registry.CitizenDirectory)."""
    from .registry import find_citizen

    return find_citizen(national_id)


#: The columns claims are made of (userinfo reads these and nothing else).
CLAIM_COLUMNS = (Citizen.id, Citizen.subject_key, Citizen.given_name, Citizen.family_name, Citizen.birth_date,
                 Citizen.mobile, Citizen.national_id)
_CLAIMS_OF = select(*CLAIM_COLUMNS).where(Citizen.id == bindparam("p_cid"))
_SUBJECT_KEY_OF = select(Citizen.subject_key).where(Citizen.id == bindparam("p_cid"))


def claims_row(citizen_id: int):
    """The citizen's claim columns as a row (attribute access, no ORM object), or None; read on
    a connection of its own (``read_row``), outside the request's session."""
    return read_row(_CLAIMS_OF, {"p_cid": citizen_id})


def detached(citizen_id: int) -> Citizen | None:
    """What tokens need of a citizen (id and subject key) in an object attached to no session,
    or None: one column read, and a commit in the request cannot expire it."""
    row = read_row(_SUBJECT_KEY_OF, {"p_cid": citizen_id})
    return None if row is None else Citizen(id=citizen_id, subject_key=row[0])


def local_date(at: dt.datetime) -> dt.date:
    """The calendar date of an instant in the configured time zone (days end at local midnight)."""
    return at.astimezone(zoneinfo.ZoneInfo(settings.stats.timezone)).date()


def age_on(birth_date: dt.date, day: dt.date) -> int:
    """Age in full years on a day (someone born on 29 February turns a year older on 1 March)."""
    years = day.year - birth_date.year
    if (day.month, day.day) < (birth_date.month, birth_date.day):
        years -= 1
    return years


def is_adult(citizen: Citizen, on: dt.date) -> bool:
    """Whether the citizen is of the configured adult age on that day."""
    return age_on(citizen.birth_date, on) >= settings.stats.adult_age


def record_authentication(citizen: Citizen, client_id: str, method: str, sso: bool = False,
                          at: dt.datetime | None = None, counted: bool = False) -> bool:
    """Record one successful authentication, durably; returns True if it made a new unique adult.

    One transaction: the auth event, the citizen's timestamps, and (for a first authentication
    as an adult) the unique-adult counter. Then the live daily counters in the store.
    ``citizen`` may be a row of this session or a detached copy (id, subject_key, birth_date)
    made from the SSO session; ``counted`` says the citizen was already known to be counted.
    """
    at = at or utcnow()
    day = local_date(at)
    adult = is_adult(citizen, day)
    cid = citizen.id
    new_adult = False
    try:
        db.session.execute(_SEEN, {"p_cid": cid, "p_at": at})
        # Once set, first_adult_authenticated_at never changes: when the row this request loaded
        # already has it, the conditional UPDATE below cannot match (one round trip saved).
        counted = counted or ("first_adult_authenticated_at" not in inspect(citizen).unloaded
                               and citizen.first_adult_authenticated_at is not None)
        if adult and not counted:
            new_adult = db.session.execute(_FIRST_ADULT, {"p_cid": cid, "p_at": at}).rowcount == 1
        db.session.execute(_EVENT, {"occurred_at": at, "citizen_id": cid, "client_id": client_id, "method": method,
                                    "sso": sso, "adult": adult})
        if new_adult:
            # The counter's row is the one every first login shares: its lock is held from this
            # UPDATE to the end of the commit, so the other writes go first and it comes last.
            db.session.execute(_COUNT_ADULT)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    if citizen in db.session:
        db.session.expire(citizen)
    store.count_daily_user(day.isoformat(), client_id, str(cid), ttl=3 * 86400)
    return new_adult


def unique_adults() -> int:
    """The exact all-time number of unique adults who have authenticated (one row read)."""
    value = db.session.execute(db.select(StatCounter.value).filter_by(name=UNIQUE_ADULTS)).scalar_one_or_none()
    return int(value or 0)
