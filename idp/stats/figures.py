"""The figures as they are read: the adult population and coverage, one period's logins,
unique citizens and new adults (from auth_events, the rollups or the store's live counters),
the daily series, and a month's exact unique citizens.

Reads the ``stat_*`` tables, never writes them (rollups.py does).
May import: idp.platform, idp.citizens, .calendars, .models.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Iterable

from sqlalchemy import and_, case, func, literal, or_, select

from ..citizens.counting import local_date, unique_adults
from ..citizens.models import AuthEvent, CitizenRow, StatCounter
from ..platform.database import db, utcnow
from ..platform.settings import settings
from ..platform.store import store
from .calendars import adult_cutoff, day_bounds, days, next_month, today
from .models import StatBirthDate, StatDay, StatDayClient, StatMonth, StatMonthCitizen, StatMonthClient

#: Slack between an auth event's time and the store noting the live counters began.
LIVE_GRACE = 5.0
POPULATION_MAX_ID = "population_snapshot_max_id"
POPULATION_AT = "population_snapshot_at"
#: Above this many new adults in a day, their clients are found by a join rather than one by one.
NEW_ADULTS_JOIN = 50_000


def counter_value(name: str) -> int | None:
    value = db.session.execute(select(StatCounter.value).where(StatCounter.name == name)).scalar_one_or_none()
    return None if value is None else int(value)


def population_info(on: dt.date | None = None) -> dict:
    """{"adult_population", "source", "snapshot_at"}: configured, registry snapshot, or registry."""
    if settings.stats.adult_population:
        return {"adult_population": settings.stats.adult_population, "source": "configured", "snapshot_at": None}
    cutoff = adult_cutoff(on or today(), settings.stats.adult_age)
    max_id = counter_value(POPULATION_MAX_ID)
    if max_id is None:
        n = db.session.execute(select(func.count()).select_from(CitizenRow).where(CitizenRow.birth_date <= cutoff)).scalar_one()
        return {"adult_population": int(n), "source": "registry", "snapshot_at": None}
    base = db.session.execute(select(func.coalesce(func.sum(StatBirthDate.citizens), 0))
                              .where(StatBirthDate.birth_date <= cutoff)).scalar_one()
    since = db.session.execute(select(func.count()).select_from(CitizenRow)
                               .where(CitizenRow.id > max_id, CitizenRow.birth_date <= cutoff)).scalar_one()
    at = dt.datetime.fromtimestamp(counter_value(POPULATION_AT) or 0, dt.timezone.utc)
    return {"adult_population": int(base) + int(since), "source": "registry snapshot + registered since",
            "snapshot_at": at.isoformat(timespec="seconds")}


def totals() -> dict:
    """unique_adults (exact, one row read), adult_population and coverage_percent."""
    adults = unique_adults()
    pop = population_info()
    population = pop["adult_population"]
    coverage = round(100.0 * adults / population, 4) if population else 0.0
    return {"unique_adults": adults, "adult_population": population, "coverage_percent": coverage,
            "adult_population_source": pop["source"], "adult_population_snapshot_at": pop["snapshot_at"],
            "adult_age": settings.stats.adult_age, "as_of": utcnow().isoformat(timespec="seconds")}


@dataclass
class Figures:
    """Logins, unique citizens and new adults of a period, overall and per client."""

    logins: int = 0
    unique_citizens: int = 0
    new_adults: int = 0
    source: str = "rollup"
    approximate: bool = False
    clients: dict[str, dict[str, int]] = field(default_factory=dict)

    def client(self, client_id: str) -> dict[str, int]:
        return self.clients.get(client_id, {"logins": 0, "unique_citizens": 0, "new_adults": 0})


def events_between(start: dt.datetime, end: dt.datetime):
    return and_(AuthEvent.occurred_at >= start, AuthEvent.occurred_at < end)


def _new_adults(start: dt.datetime, end: dt.datetime) -> tuple[int, dict[str, int]]:
    """Citizens first authenticated as adults in [start, end), overall and by the client of that
    authentication (the auth event written in the same transaction, at the same instant)."""
    total = db.session.execute(select(func.count()).select_from(CitizenRow).where(
        CitizenRow.first_adult_authenticated_at >= start, CitizenRow.first_adult_authenticated_at < end)).scalar_one()
    if not total:
        return 0, {}
    if total > NEW_ADULTS_JOIN:
        # Many (a launch day): one join with the day's events. A citizen with two events at the very
        # same microsecond as their first adult login would count for both clients.
        rows = db.session.execute(
            select(AuthEvent.client_id, func.count(CitizenRow.id.distinct()))
            .join(CitizenRow, and_(AuthEvent.citizen_id == CitizenRow.id,
                                AuthEvent.occurred_at == CitizenRow.first_adult_authenticated_at))
            .where(events_between(start, end), CitizenRow.first_adult_authenticated_at >= start,
                   CitizenRow.first_adult_authenticated_at < end).group_by(AuthEvent.client_id)).all()
        return int(total), {c: int(n) for c, n in rows}
    # The client of each one's first adult authentication: a correlated lookup per new adult (an
    # index probe each; a plan that hashes auth_events would cost the whole table).
    client = (select(AuthEvent.client_id)
              .where(AuthEvent.citizen_id == CitizenRow.id, AuthEvent.occurred_at == CitizenRow.first_adult_authenticated_at)
              .order_by(AuthEvent.id).limit(1).scalar_subquery().label("client_id"))
    firsts = (select(client).where(CitizenRow.first_adult_authenticated_at >= start,
                                   CitizenRow.first_adult_authenticated_at < end).subquery())
    rows = db.session.execute(select(firsts.c.client_id, func.count()).group_by(firsts.c.client_id)).all()
    return int(total), {c: int(n) for c, n in rows if c is not None}


def raw_figures(start: dt.datetime, end: dt.datetime) -> Figures:
    """Exact figures of [start, end) from auth_events."""
    logins, uniques = db.session.execute(select(func.count(), func.count(AuthEvent.citizen_id.distinct()))
                                         .where(events_between(start, end))).one()
    clients: dict[str, dict[str, int]] = {}
    for client_id, n, u in db.session.execute(
            select(AuthEvent.client_id, func.count(), func.count(AuthEvent.citizen_id.distinct()))
            .where(events_between(start, end)).group_by(AuthEvent.client_id)):
        clients[client_id] = {"logins": int(n), "unique_citizens": int(u), "new_adults": 0}
    new, by_client = _new_adults(start, end)
    for client_id, n in by_client.items():
        clients.setdefault(client_id, {"logins": 0, "unique_citizens": 0, "new_adults": 0})["new_adults"] = n
    return Figures(int(logins), int(uniques), new, "auth_events", False, clients)


def live_figures(day: dt.date | None = None) -> Figures:
    """Today's figures: the store's live counters, or auth_events when the store lost them."""
    day = day or today()
    start, end = day_bounds(day)
    try:
        since, logins, uniques, total = store.live_day(day.isoformat())
    except Exception:  # noqa: BLE001 - the store is down: the durable figures still answer
        since = None
    if since is not None:
        begun = dt.datetime.fromtimestamp(since - LIVE_GRACE, dt.timezone.utc)
        missed = db.session.execute(select(AuthEvent.id).where(AuthEvent.occurred_at >= start,
                                                               AuthEvent.occurred_at < begun).limit(1)).first()
        if missed is None:
            new, by_client = _new_adults(start, end)
            clients = {c: {"logins": logins[c], "unique_citizens": uniques.get(c, 0), "new_adults": by_client.get(c, 0)}
                       for c in logins}
            return Figures(sum(logins.values()), total, new, "live", True, clients)
    return raw_figures(start, end)


def month_row(cal: str, month: dt.date):
    """(unique_citizens, closed_at) of a month's row, or None."""
    return db.session.execute(select(StatMonth.unique_citizens, StatMonth.closed_at)
                              .where(StatMonth.calendar == cal, StatMonth.month == month)).first()


def first_event_day() -> dt.date | None:
    first = db.session.execute(select(func.min(AuthEvent.occurred_at))).scalar_one_or_none()
    if first is None:
        return None
    if first.tzinfo is None:
        first = first.replace(tzinfo=dt.timezone.utc)
    return local_date(first)


def daily_series(first: dt.date, last: dt.date) -> dict[dt.date, Figures]:
    """Figures of each day in [first, last] (days after today are left out): rollups where they
    exist, auth_events for closed days not rolled up yet, live counters for today."""
    now_day = today()
    last = min(last, now_day)
    if first > last:
        return {}
    out: dict[dt.date, Figures] = {}
    for d, logins, uniques, new in db.session.execute(
            select(StatDay.day, StatDay.logins, StatDay.unique_citizens, StatDay.new_adults)
            .where(StatDay.day >= first, StatDay.day <= last)):
        out[d] = Figures(logins, uniques, new, "rollup")
    for d, client_id, logins, uniques, new in db.session.execute(
            select(StatDayClient.day, StatDayClient.client_id, StatDayClient.logins, StatDayClient.unique_citizens,
                   StatDayClient.new_adults).where(StatDayClient.day >= first, StatDayClient.day <= last)):
        if d in out:
            out[d].clients[client_id] = {"logins": logins, "unique_citizens": uniques, "new_adults": new}
    earliest = first_event_day() or now_day
    for d in days(first, last):
        if d == now_day:
            out[d] = live_figures(d)
        elif d not in out:
            # before the first auth event kept, a day with no rollup had no logins
            out[d] = raw_figures(*day_bounds(d)) if d >= earliest else Figures(source="auth_events")
    return dict(sorted(out.items()))


def _ranges(ds: Iterable[dt.date]) -> list[tuple[dt.datetime, dt.datetime]]:
    """UTC ranges covering the given days, contiguous days merged."""
    out: list[tuple[dt.datetime, dt.datetime]] = []
    for d in sorted(ds):
        s, e = day_bounds(d)
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def month_uniques(cal: str, month: dt.date, client_id: str | None = None) -> tuple[int, str]:
    """Exact unique citizens of a month so far (overall or for one client), and where from."""
    end_day = min(next_month(month, cal) - dt.timedelta(days=1), today())
    start, end = day_bounds(month)[0], day_bounds(end_day)[1]
    row = month_row(cal, month)
    if row is not None and row.closed_at is not None:
        if client_id is None:
            return int(row.unique_citizens), "rollup"
        n = db.session.execute(select(StatMonthClient.unique_citizens).where(
            StatMonthClient.calendar == cal, StatMonthClient.month == month,
            StatMonthClient.client_id == client_id)).scalar_one_or_none()
        return int(n or 0), "rollup"
    if client_id is not None:
        n = db.session.execute(select(func.count(AuthEvent.citizen_id.distinct())).where(
            events_between(start, end), AuthEvent.client_id == client_id)).scalar_one()
        return int(n), "auth_events"
    base = int(row.unique_citizens) if row is not None else 0
    rolled = set(db.session.execute(select(StatDay.day).where(StatDay.day >= month, StatDay.day <= end_day)).scalars())
    pending = [d for d in days(month, end_day) if d not in rolled]
    if not pending:
        return base, "rollup"
    # Citizens of the pending days not in the month's set: an index probe per event (a plan that
    # hashes the whole set would cost the month, not the day).
    in_set = (select(literal(1)).where(StatMonthCitizen.calendar == cal, StatMonthCitizen.month == month,
                                       StatMonthCitizen.citizen_id == AuthEvent.citizen_id)
              .limit(1).scalar_subquery())
    new_to_month = case((in_set.is_(None), AuthEvent.citizen_id))
    extra = db.session.execute(select(func.count(new_to_month.distinct())).where(
        or_(*[events_between(s, e) for s, e in _ranges(pending)]))).scalar_one()
    return base + int(extra), "rollup + auth_events"


def month_client_uniques(cal: str, month: dt.date) -> dict[str, int]:
    """Exact unique citizens per client of a month so far."""
    row = month_row(cal, month)
    if row is not None and row.closed_at is not None:
        return {c: int(n) for c, n in db.session.execute(select(StatMonthClient.client_id, StatMonthClient.unique_citizens)
                                                          .where(StatMonthClient.calendar == cal,
                                                                 StatMonthClient.month == month))}
    end_day = min(next_month(month, cal) - dt.timedelta(days=1), today())
    start, end = day_bounds(month)[0], day_bounds(end_day)[1]
    return {c: int(n) for c, n in db.session.execute(select(AuthEvent.client_id, func.count(AuthEvent.citizen_id.distinct()))
                                                      .where(events_between(start, end)).group_by(AuthEvent.client_id))}
