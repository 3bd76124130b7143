"""Counting: adulthood, and recording each successful authentication.

The unique-adult counter (DESIGN §7) is kept in the same transaction that sets a citizen's
``first_adult_authenticated_at``: the conditional UPDATE lets exactly one of any number of
concurrent first logins see a row change, and only that one increments the counter.
"""
from __future__ import annotations

import datetime as dt
import zoneinfo

from sqlalchemy import bindparam, func, insert, update

from ..platform.database import db, execute, utcnow
from ..platform.settings import settings
from ..platform.store import store
from .directory import Citizen
from .models import AuthEvent, CitizenRow, StatCounter

UNIQUE_ADULTS = "unique_adults"

# The statements of every login, built once as Core statements on the tables: the ORM's bulk
# UPDATE/INSERT path (identity-map synchronisation) and building a statement per call cost more
# CPU than the round trips themselves.
_citizens = CitizenRow.__table__
_at = bindparam("p_at", type_=_citizens.c.last_authenticated_at.type)
_SEEN = (update(_citizens).where(_citizens.c.id == bindparam("p_cid"))
         .values(last_authenticated_at=_at, first_authenticated_at=func.coalesce(_citizens.c.first_authenticated_at, _at)))
_FIRST_ADULT = (update(_citizens)
                .where(_citizens.c.id == bindparam("p_cid"), _citizens.c.first_adult_authenticated_at.is_(None))
                .values(first_adult_authenticated_at=_at))
_EVENT = insert(AuthEvent.__table__)
_COUNT_ADULT = (update(StatCounter.__table__).where(StatCounter.__table__.c.name == UNIQUE_ADULTS)
                .values(value=StatCounter.__table__.c.value + 1))


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
                          at: dt.datetime | None = None) -> bool:
    """Record one successful authentication, durably; returns True if it made a new unique adult.

    One transaction: the auth event, the citizen's timestamps, and (for a first authentication
    as an adult) the unique-adult counter. Then the live daily counters in the store. A citizen
    already counted when it was read (``adult_counted``) costs no conditional UPDATE.
    """
    at = at or utcnow()
    day = local_date(at)
    adult = is_adult(citizen, day)
    cid = citizen.id
    new_adult = False
    try:
        execute(_SEEN, {"p_cid": cid, "p_at": at})
        if adult and not citizen.adult_counted:
            new_adult = execute(_FIRST_ADULT, {"p_cid": cid, "p_at": at}).rowcount == 1
        execute(_EVENT, {"occurred_at": at, "citizen_id": cid, "client_id": client_id, "method": method,
                                    "sso": sso, "adult": adult})
        if new_adult:
            # The counter's row is the one every first login shares: its lock is held from this
            # UPDATE to the end of the commit, so the other writes go first and it comes last.
            execute(_COUNT_ADULT)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    store.count_daily_user(day.isoformat(), client_id, str(cid), ttl=3 * 86400)
    return new_adult


def unique_adults() -> int:
    """The exact all-time number of unique adults who have authenticated (one row read)."""
    value = db.session.execute(db.select(StatCounter.value).filter_by(name=UNIQUE_ADULTS)).scalar_one_or_none()
    return int(value or 0)
