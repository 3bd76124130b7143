"""The national figures (DESIGN §7): unique adults, coverage, daily and monthly unique citizens.

Where each figure comes from:

* **unique adults, ever**: one row of ``stat_counters``, kept in the login's own transaction
  (citizens.record_authentication): exact, constant time.
* **adult population**: ``[stats] adult_population`` when set; otherwise the registry: the
  birth-date snapshot (``stat_birth_dates``, one row per birth date, refreshed once a day by
  ``idp stats rollup``) summed up to today's cut-off, plus the citizens registered since the
  snapshot (``id`` above the snapshot's highest): exact for additions, a few milliseconds at
  any size. With no snapshot yet (before the first rollup), a count of the citizens table.
* **closed days**: ``stat_days`` / ``stat_day_clients``, computed exactly from ``auth_events``
  by ``idp stats rollup`` (idempotent; serialized across nodes by a row lock, so cron may run
  it on every node at once). A closed day that is not rolled up yet is computed from
  ``auth_events`` on the fly, with the same queries.
* **today**: the live counters in the store (HyperLogLog of unique citizens, about 0.8 %
  standard error; exact login counts). When the store lost them (flushed, restarted,
  unreachable) the figures come from ``auth_events`` instead, exactly: the store remembers
  when a day's live counters began, and any auth event of that day from before then means
  they are incomplete.
* **months** (Gregorian and Jalali alike): an open month's unique citizens are kept exact by
  the set ``stat_month_citizens``, to which every rolled-up day adds its citizens (an insert
  that ignores those already there; the number inserted is what the month grows by, so a day
  rolled up twice adds nothing), plus, for days not rolled up yet (today), the citizens of
  their auth events not in the set. When a month is over and all its days are rolled up, the
  month is closed: its count (and its per-agency counts, from ``auth_events``) become final in
  ``stat_months`` / ``stat_month_clients`` and the set is emptied.
* **new adults per day**: citizens whose ``first_adult_authenticated_at`` falls on the day
  (a partial index); per agency, the client of that first adult authentication.

Raw ``auth_events`` are kept until their days are rolled up and their months (in both
calendars) closed; ``idp stats prune --before DATE`` then deletes them in batches.
"""
from __future__ import annotations

import datetime as dt
import time
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

import jdatetime
from sqlalchemy import BigInteger, Column, MetaData, Table, and_, case, delete, func, literal, or_, select, text, update

from ..citizens.counting import local_date, unique_adults
from ..citizens.models import AuthEvent, Citizen, StatCounter
from ..platform.database import db, utcnow
from ..platform.digits import ascii_digits, persian_digits
from ..platform.settings import settings
from ..platform.store import store
from ..protocol.models import Client
from .models import StatBirthDate, StatDay, StatDayClient, StatMonth, StatMonthCitizen, StatMonthClient

GREGORIAN, JALALI = "g", "j"
CALENDARS = {"gregorian": GREGORIAN, "jalali": JALALI}
#: A day is closed for ``idp stats rollup`` (without --day) this long after local midnight, so
#: that logins committing across midnight are in.
CLOSE_GRACE = dt.timedelta(minutes=10)
#: Slack between an auth event's time and the store noting the live counters began.
LIVE_GRACE = 5.0
POPULATION_MAX_ID = "population_snapshot_max_id"
POPULATION_AT = "population_snapshot_at"
LOCK_ROLLUP = "lock:stats_rollup"
ROLLUP_WORK_MEM = "256MB"
#: Above this many new adults in a day, their clients are found by a join rather than one by one.
NEW_ADULTS_JOIN = 50_000


class StatsError(Exception):
    """A request the figures cannot answer (a day not closed, a bad range); one line."""


# ---- days, months and calendars ------------------------------------------------------------

def zone() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(settings.stats.timezone)


def today() -> dt.date:
    """Today in the configured time zone."""
    return local_date(utcnow())


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a local day, as UTC instants (days end at local midnight)."""
    tz = zone()
    start = dt.datetime.combine(day, dt.time(0), tzinfo=tz).astimezone(dt.timezone.utc)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=tz).astimezone(dt.timezone.utc)
    return start, end


def days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def month_start(day: dt.date, cal: str) -> dt.date:
    """The (Gregorian) date on which the month containing ``day`` begins, in a calendar."""
    if cal == JALALI:
        j = jdatetime.date.fromgregorian(date=day)
        return jdatetime.date(j.year, j.month, 1).togregorian()
    return day.replace(day=1)


def next_month(start: dt.date, cal: str) -> dt.date:
    """The first day of the month after the one beginning on ``start``."""
    if cal == JALALI:
        j = jdatetime.date.fromgregorian(date=start)
        y, m = (j.year + 1, 1) if j.month == 12 else (j.year, j.month + 1)
        return jdatetime.date(y, m, 1).togregorian()
    return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def month_key(start: dt.date, cal: str) -> str:
    if cal == JALALI:
        j = jdatetime.date.fromgregorian(date=start)
        return f"{j.year:04d}-{j.month:02d}"
    return f"{start.year:04d}-{start.month:02d}"




def day_labels(day: dt.date, cal: str) -> tuple[str, str]:
    """(label, Persian label) of a day: 1405-09-07 / ۷ آذر ۱۴۰۵, or 2026-11-28 / 28 November 2026."""
    if cal == JALALI:
        j = jdatetime.date.fromgregorian(date=day)
        return (f"{j.year:04d}-{j.month:02d}-{j.day:02d}",
                persian_digits(f"{j.day} {jdatetime.date.j_months_fa[j.month - 1]} {j.year}"))
    return day.isoformat(), day.strftime("%-d %B %Y")


def month_labels(start: dt.date, cal: str) -> tuple[str, str]:
    """(label, Persian label) of a month: Azar 1405 / آذر ۱۴۰۵, or November 2026."""
    if cal == JALALI:
        j = jdatetime.date.fromgregorian(date=start)
        return (f"{jdatetime.date.j_months_en[j.month - 1]} {j.year}",
                persian_digits(f"{jdatetime.date.j_months_fa[j.month - 1]} {j.year}"))
    return start.strftime("%B %Y"), start.strftime("%B %Y")


def parse_day(text: str) -> dt.date:
    """YYYY-MM-DD, Gregorian, or Jalali when the year is before 1700 (1405-09-07); Persian digits too."""
    value = ascii_digits(text.strip()).replace("/", "-")
    try:
        y, m, d = (int(x) for x in value.split("-"))
        if y < 1700:
            return jdatetime.date(y, m, d).togregorian()
        return dt.date(y, m, d)
    except (ValueError, TypeError):
        raise StatsError(f"not a date: {text!r} (YYYY-MM-DD, Gregorian or Jalali)") from None


# ---- the adult population -------------------------------------------------------------------

def adult_cutoff(today: dt.date, age: int) -> dt.date:
    """The latest birth date of someone who is ``age`` or older on ``today``."""
    try:
        return today.replace(year=today.year - age)
    except ValueError:  # 29 February in a year that has none
        return today.replace(year=today.year - age, day=28)


def _counter(name: str) -> int | None:
    value = db.session.execute(select(StatCounter.value).where(StatCounter.name == name)).scalar_one_or_none()
    return None if value is None else int(value)


def population_info(on: dt.date | None = None) -> dict:
    """{"adult_population", "source", "snapshot_at"}: configured, registry snapshot, or registry."""
    if settings.stats.adult_population:
        return {"adult_population": settings.stats.adult_population, "source": "configured", "snapshot_at": None}
    cutoff = adult_cutoff(on or today(), settings.stats.adult_age)
    max_id = _counter(POPULATION_MAX_ID)
    if max_id is None:
        n = db.session.execute(select(func.count()).select_from(Citizen).where(Citizen.birth_date <= cutoff)).scalar_one()
        return {"adult_population": int(n), "source": "registry", "snapshot_at": None}
    base = db.session.execute(select(func.coalesce(func.sum(StatBirthDate.citizens), 0))
                              .where(StatBirthDate.birth_date <= cutoff)).scalar_one()
    since = db.session.execute(select(func.count()).select_from(Citizen)
                               .where(Citizen.id > max_id, Citizen.birth_date <= cutoff)).scalar_one()
    at = dt.datetime.fromtimestamp(_counter(POPULATION_AT) or 0, dt.timezone.utc)
    return {"adult_population": int(base) + int(since), "source": "registry snapshot + registered since",
            "snapshot_at": at.isoformat(timespec="seconds")}


def adult_population(today: dt.date | None = None) -> int:
    """Adults in the registry today, or the configured figure when one is set."""
    return population_info(today)["adult_population"]


def totals() -> dict:
    """unique_adults (exact, one row read), adult_population and coverage_percent."""
    adults = unique_adults()
    pop = population_info()
    population = pop["adult_population"]
    coverage = round(100.0 * adults / population, 4) if population else 0.0
    return {"unique_adults": adults, "adult_population": population, "coverage_percent": coverage,
            "adult_population_source": pop["source"], "adult_population_snapshot_at": pop["snapshot_at"],
            "adult_age": settings.stats.adult_age, "as_of": utcnow().isoformat(timespec="seconds")}


# ---- figures of one day -------------------------------------------------------------------------

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


def _in(start: dt.datetime, end: dt.datetime):
    return and_(AuthEvent.occurred_at >= start, AuthEvent.occurred_at < end)


def _new_adults(start: dt.datetime, end: dt.datetime) -> tuple[int, dict[str, int]]:
    """Citizens first authenticated as adults in [start, end), overall and by the client of that
    authentication (the auth event written in the same transaction, at the same instant)."""
    total = db.session.execute(select(func.count()).select_from(Citizen).where(
        Citizen.first_adult_authenticated_at >= start, Citizen.first_adult_authenticated_at < end)).scalar_one()
    if not total:
        return 0, {}
    if total > NEW_ADULTS_JOIN:
        # Many (a launch day): one join with the day's events. A citizen with two events at the very
        # same microsecond as their first adult login would count for both clients.
        rows = db.session.execute(
            select(AuthEvent.client_id, func.count(Citizen.id.distinct()))
            .join(Citizen, and_(AuthEvent.citizen_id == Citizen.id,
                                AuthEvent.occurred_at == Citizen.first_adult_authenticated_at))
            .where(_in(start, end), Citizen.first_adult_authenticated_at >= start,
                   Citizen.first_adult_authenticated_at < end).group_by(AuthEvent.client_id)).all()
        return int(total), {c: int(n) for c, n in rows}
    # The client of each one's first adult authentication: a correlated lookup per new adult (an
    # index probe each; a plan that hashes auth_events would cost the whole table).
    client = (select(AuthEvent.client_id)
              .where(AuthEvent.citizen_id == Citizen.id, AuthEvent.occurred_at == Citizen.first_adult_authenticated_at)
              .order_by(AuthEvent.id).limit(1).scalar_subquery().label("client_id"))
    firsts = (select(client).where(Citizen.first_adult_authenticated_at >= start,
                                   Citizen.first_adult_authenticated_at < end).subquery())
    rows = db.session.execute(select(firsts.c.client_id, func.count()).group_by(firsts.c.client_id)).all()
    return int(total), {c: int(n) for c, n in rows if c is not None}


def raw_figures(start: dt.datetime, end: dt.datetime) -> Figures:
    """Exact figures of [start, end) from auth_events."""
    logins, uniques = db.session.execute(select(func.count(), func.count(AuthEvent.citizen_id.distinct()))
                                         .where(_in(start, end))).one()
    clients: dict[str, dict[str, int]] = {}
    for client_id, n, u in db.session.execute(
            select(AuthEvent.client_id, func.count(), func.count(AuthEvent.citizen_id.distinct()))
            .where(_in(start, end)).group_by(AuthEvent.client_id)):
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


# ---- serialized writers -----------------------------------------------------------------------

def _insert(model):
    """INSERT with ON CONFLICT support for the session's dialect."""
    if db.engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(model)


def _serialize(name: str) -> None:
    """Begin a transaction that holds a lock across every node and process until it commits.

    An UPDATE of one counter row: a row lock on PostgreSQL, the database write lock on SQLite
    (so the transaction's reads that follow see what the previous holder committed)."""
    db.session.execute(_insert(StatCounter).values(name=name, value=0).on_conflict_do_nothing())
    db.session.commit()
    db.session.execute(update(StatCounter).where(StatCounter.name == name).values(value=StatCounter.value + 1))
    if db.engine.dialect.name == "postgresql":
        # count(DISTINCT) over a day's millions of events sorts in memory rather than on disk.
        db.session.execute(text(f"SET LOCAL work_mem = '{ROLLUP_WORK_MEM}'"))


def _month_row(cal: str, month: dt.date):
    """(unique_citizens, closed_at) of a month's row, or None."""
    return db.session.execute(select(StatMonth.unique_citizens, StatMonth.closed_at)
                              .where(StatMonth.calendar == cal, StatMonth.month == month)).first()


def _set_counter(name: str, value: int) -> None:
    stmt = _insert(StatCounter).values(name=name, value=value)
    db.session.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"value": value}))


# ---- rollups ----------------------------------------------------------------------------------

def closed_through(now: dt.datetime | None = None) -> dt.date:
    """The last day that is closed for the rollup (local midnight plus a grace has passed)."""
    now = now or utcnow()
    return local_date(now - CLOSE_GRACE) - dt.timedelta(days=1)


def first_event_day() -> dt.date | None:
    first = db.session.execute(select(func.min(AuthEvent.occurred_at))).scalar_one_or_none()
    if first is None:
        return None
    if first.tzinfo is None:
        first = first.replace(tzinfo=dt.timezone.utc)
    return local_date(first)


def rollup_day(day: dt.date, force: bool = True) -> dict:
    """Compute one closed day exactly from auth_events and store it (replacing what was there).

    Idempotent, and safe when several nodes run it at once: the work is serialized, a day done
    meanwhile by another is skipped unless ``force``, and the month sets only ever gain citizens
    not already in them."""
    if day > closed_through(utcnow() + CLOSE_GRACE):
        raise StatsError(f"{day.isoformat()} is not over yet in {settings.stats.timezone}")
    t0 = time.perf_counter()
    try:
        _serialize(LOCK_ROLLUP)
        if not force and db.session.execute(select(StatDay.day).where(StatDay.day == day)).first() is not None:
            db.session.commit()
            return {"day": day.isoformat(), "skipped": "already rolled up"}
        start, end = day_bounds(day)
        figures = raw_figures(start, end)
        db.session.execute(delete(StatDayClient).where(StatDayClient.day == day))
        db.session.execute(delete(StatDay).where(StatDay.day == day))
        now = utcnow()
        db.session.execute(_insert(StatDay).values(day=day, logins=figures.logins, new_adults=figures.new_adults,
                                                   unique_citizens=figures.unique_citizens, computed_at=now))
        if figures.clients:
            db.session.execute(_insert(StatDayClient), [
                {"day": day, "client_id": c, **v} for c, v in figures.clients.items()])
        months = {}
        _load_day_citizens(start, end)
        for cal in (GREGORIAN, JALALI):
            months[cal] = _add_to_month(cal, month_start(day, cal), start, end, now)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return {"day": day.isoformat(), "logins": figures.logins, "unique_citizens": figures.unique_citizens,
            "new_adults": figures.new_adults, "clients": len(figures.clients), "month_gained": months,
            "seconds": round(time.perf_counter() - t0, 3)}


_DAY_CITIZENS = Table("stat_tmp_day_citizens", MetaData(), Column("citizen_id", BigInteger))


def _load_day_citizens(start: dt.datetime, end: dt.datetime) -> None:
    """The day's distinct citizens, once, into a temporary table that both months read."""
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text("CREATE TEMP TABLE stat_tmp_day_citizens (citizen_id BIGINT) ON COMMIT DROP"))
    else:
        db.session.execute(text("CREATE TEMP TABLE IF NOT EXISTS stat_tmp_day_citizens (citizen_id BIGINT)"))
        db.session.execute(text("DELETE FROM stat_tmp_day_citizens"))
    db.session.execute(_DAY_CITIZENS.insert().from_select(
        ["citizen_id"], select(AuthEvent.citizen_id).where(_in(start, end)).distinct().order_by(AuthEvent.citizen_id)))
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text("ANALYZE stat_tmp_day_citizens"))


def _add_to_month(cal: str, month: dt.date, start: dt.datetime, end: dt.datetime, now: dt.datetime) -> int | None:
    """Add a day's citizens to its open month's set; the month grows by those new to it."""
    row = _month_row(cal, month)
    if row is not None and row.closed_at is not None:
        return None  # final; the day's own figures were still recomputed
    # Only the day's citizens not yet in the set are inserted (an anti-join, much cheaper than a
    # conflict per row); ON CONFLICT stays as the guarantee.
    t = _DAY_CITIZENS.c
    known = select(literal(1)).where(StatMonthCitizen.calendar == cal, StatMonthCitizen.month == month,
                                     StatMonthCitizen.citizen_id == t.citizen_id).exists()
    cits = select(literal(cal), literal(month), t.citizen_id).where(~known)
    ins = _insert(StatMonthCitizen).from_select(["calendar", "month", "citizen_id"], cits).on_conflict_do_nothing()
    gained = db.session.execute(ins, execution_options={"preserve_rowcount": True}).rowcount
    if gained is None or gained < 0:
        raise RuntimeError("the database driver did not report how many citizens were new to the month")
    up = _insert(StatMonth).values(calendar=cal, month=month, unique_citizens=gained, updated_at=now)
    db.session.execute(up.on_conflict_do_update(
        index_elements=["calendar", "month"],
        set_={"unique_citizens": StatMonth.unique_citizens + gained, "updated_at": now}))
    return gained


def close_month(cal: str, month: dt.date) -> dict | None:
    """Make a month's counts final once it is over and all its days are rolled up (else None)."""
    end_day = next_month(month, cal)
    last = end_day - dt.timedelta(days=1)
    if last > closed_through():
        return None
    first = first_event_day()
    try:
        _serialize(LOCK_ROLLUP)
        row = _month_row(cal, month)
        if row is not None and row.closed_at is not None:
            db.session.commit()
            return None
        begin = max(month, first) if first else month
        if begin <= last:
            done = db.session.execute(select(func.count()).select_from(StatDay)
                                      .where(StatDay.day >= begin, StatDay.day <= last)).scalar_one()
            if done < (last - begin).days + 1:
                db.session.commit()
                return None
        start, end = day_bounds(month)[0], day_bounds(last)[1]
        per_client = db.session.execute(select(AuthEvent.client_id, func.count(AuthEvent.citizen_id.distinct()))
                                        .where(_in(start, end)).group_by(AuthEvent.client_id)).all()
        db.session.execute(delete(StatMonthClient).where(StatMonthClient.calendar == cal, StatMonthClient.month == month))
        if per_client:
            db.session.execute(_insert(StatMonthClient), [
                {"calendar": cal, "month": month, "client_id": c, "unique_citizens": int(n)} for c, n in per_client])
        total = db.session.execute(select(func.count()).select_from(StatMonthCitizen).where(
            StatMonthCitizen.calendar == cal, StatMonthCitizen.month == month)).scalar_one()
        now = utcnow()
        up = _insert(StatMonth).values(calendar=cal, month=month, unique_citizens=total, closed_at=now, updated_at=now)
        db.session.execute(up.on_conflict_do_update(index_elements=["calendar", "month"],
                                                    set_={"unique_citizens": total, "closed_at": now, "updated_at": now}))
        db.session.execute(delete(StatMonthCitizen).where(StatMonthCitizen.calendar == cal,
                                                          StatMonthCitizen.month == month))
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return {"calendar": cal, "month": month_key(month, cal), "unique_citizens": int(total),
            "clients": len(per_client)}


def refresh_population_snapshot() -> dict:
    """Citizens per birth date, in one statement (one consistent snapshot), and the highest
    citizen id it saw: later registrations are counted on top, one by one."""
    t0 = time.perf_counter()
    try:
        _serialize(LOCK_ROLLUP)
        rows = db.session.execute(select(Citizen.birth_date, func.count(), func.max(Citizen.id))
                                  .group_by(Citizen.birth_date)).all()
        db.session.execute(delete(StatBirthDate))
        if rows:
            db.session.execute(_insert(StatBirthDate), [{"birth_date": b, "citizens": int(n)} for b, n, _ in rows])
        _set_counter(POPULATION_MAX_ID, max((int(m) for _, _, m in rows), default=0))
        _set_counter(POPULATION_AT, int(time.time()))
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return {"birth_dates": len(rows), "citizens": sum(int(n) for _, n, _ in rows),
            "seconds": round(time.perf_counter() - t0, 3)}


def rollup(day: dt.date | None = None, population: bool | None = None) -> dict:
    """``idp stats rollup``: one day (recomputed), or every closed day not rolled up yet; then
    close the months that are over; then refresh the population snapshot once a day."""
    out: dict = {"days": [], "months": [], "population": None}
    if day is not None:
        out["days"].append(rollup_day(day, force=True))
    else:
        first, last = first_event_day(), closed_through()
        if first is not None and first <= last:
            have = set(db.session.execute(select(StatDay.day).where(StatDay.day >= first, StatDay.day <= last)).scalars())
            for d in days(first, last):
                if d not in have:
                    out["days"].append(rollup_day(d, force=False))
    first = first_event_day()
    if first is not None:
        for cal in (GREGORIAN, JALALI):
            open_months = set(db.session.execute(select(StatMonth.month).where(
                StatMonth.calendar == cal, StatMonth.closed_at.is_(None))).scalars())
            m = month_start(first, cal)
            while m <= closed_through():
                open_months.add(m)
                m = next_month(m, cal)
            closed = set(db.session.execute(select(StatMonth.month).where(
                StatMonth.calendar == cal, StatMonth.closed_at.isnot(None))).scalars())
            for m in sorted(open_months - closed):
                done = close_month(cal, m)
                if done:
                    out["months"].append(done)
    if population is None:
        at = _counter(POPULATION_AT)
        population = at is None or local_date(dt.datetime.fromtimestamp(at, dt.timezone.utc)) < today()
    if population and not settings.stats.adult_population:
        out["population"] = refresh_population_snapshot()
    return out


def prune(before: dt.date, batch: int = 50_000) -> dict:
    """Delete raw auth events of days before ``before`` that are rolled up and whose months are
    closed in both calendars, in batches of ``batch`` rows (one transaction each)."""
    first = first_event_day()
    boundary = before
    reason = None
    if first is not None and first < before:
        rolled = set(db.session.execute(select(StatDay.day).where(StatDay.day >= first, StatDay.day < before)).scalars())
        closed = {(c, m) for c, m in db.session.execute(select(StatMonth.calendar, StatMonth.month)
                                                         .where(StatMonth.closed_at.isnot(None)))}
        for d in days(first, before - dt.timedelta(days=1)):
            if d not in rolled:
                boundary, reason = d, f"{d.isoformat()} is not rolled up"
                break
            open_cal = [c for c in (GREGORIAN, JALALI) if (c, month_start(d, c)) not in closed]
            if open_cal:
                boundary = d
                reason = f"the {'Jalali' if open_cal[0] == JALALI else 'Gregorian'} month of {d.isoformat()} is not closed"
                break
    cutoff = day_bounds(boundary)[0]
    deleted = 0
    while True:
        ids = select(AuthEvent.id).where(AuthEvent.occurred_at < cutoff).order_by(AuthEvent.occurred_at).limit(batch)
        n = db.session.execute(delete(AuthEvent).where(AuthEvent.id.in_(ids.scalar_subquery()))).rowcount or 0
        db.session.commit()
        deleted += n
        if n < batch:
            break
    return {"requested_before": before.isoformat(), "pruned_before": boundary.isoformat(), "deleted": deleted,
            "held_back": reason}


# ---- the report ----------------------------------------------------------------------------------

def _client_names() -> dict[str, tuple[str, str | None]]:
    return {c: (n, fa) for c, n, fa in db.session.execute(select(Client.client_id, Client.name, Client.name_fa))}


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
    row = _month_row(cal, month)
    if row is not None and row.closed_at is not None:
        if client_id is None:
            return int(row.unique_citizens), "rollup"
        n = db.session.execute(select(StatMonthClient.unique_citizens).where(
            StatMonthClient.calendar == cal, StatMonthClient.month == month,
            StatMonthClient.client_id == client_id)).scalar_one_or_none()
        return int(n or 0), "rollup"
    if client_id is not None:
        n = db.session.execute(select(func.count(AuthEvent.citizen_id.distinct())).where(
            _in(start, end), AuthEvent.client_id == client_id)).scalar_one()
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
        or_(*[_in(s, e) for s, e in _ranges(pending)]))).scalar_one()
    return base + int(extra), "rollup + auth_events"


def month_client_uniques(cal: str, month: dt.date) -> dict[str, int]:
    """Exact unique citizens per client of a month so far."""
    row = _month_row(cal, month)
    if row is not None and row.closed_at is not None:
        return {c: int(n) for c, n in db.session.execute(select(StatMonthClient.client_id, StatMonthClient.unique_citizens)
                                                          .where(StatMonthClient.calendar == cal,
                                                                 StatMonthClient.month == month))}
    end_day = min(next_month(month, cal) - dt.timedelta(days=1), today())
    start, end = day_bounds(month)[0], day_bounds(end_day)[1]
    return {c: int(n) for c, n in db.session.execute(select(AuthEvent.client_id, func.count(AuthEvent.citizen_id.distinct()))
                                                      .where(_in(start, end)).group_by(AuthEvent.client_id))}


def _seen_client(client_id: str) -> bool:
    """A client_id with figures, though no longer registered."""
    return any(db.session.execute(select(col).where(col == client_id).limit(1)).first() is not None
               for col in (AuthEvent.client_id, StatDayClient.client_id))


def _agency_rows(clients: dict[str, dict[str, int]], names, only: str | None) -> list[dict]:
    rows = []
    for c, v in clients.items():
        if only and c != only:
            continue
        name, name_fa = names.get(c, (c, None))
        rows.append({"client_id": c, "name": name, "name_fa": name_fa, **v})
    return sorted(rows, key=lambda r: (-r["logins"], r["client_id"]))


def report(first: dt.date | None = None, last: dt.date | None = None, by: str = "day",
           calendar: str = "gregorian", agency: str | None = None) -> dict:
    """Everything ``idp stats`` prints: totals, today, this month, and one row per day or month."""
    cal = CALENDARS[calendar]
    now_day = today()
    last = min(last or now_day, now_day)
    if first is None:
        first = last - dt.timedelta(days=29) if by == "day" else month_start(last, cal)
        if by == "month":
            for _ in range(11):
                first = month_start(first - dt.timedelta(days=1), cal)
    if first > last:
        raise StatsError("--from is after --to")
    if by == "month":
        first = month_start(first, cal)
    names = _client_names()
    if agency and agency not in names and not _seen_client(agency):
        raise StatsError(f"no client {agency!r} (and no figures for one)")
    out = totals()
    out.update({"timezone": settings.stats.timezone, "calendar": calendar, "by": by, "agency": agency})

    # today and this month
    live = live_figures(now_day)
    label, label_fa = day_labels(now_day, cal)
    t = {"date": now_day.isoformat(), "label": label, "label_fa": label_fa, "source": live.source,
         "approximate": live.approximate}
    t.update(live.client(agency) if agency else
             {"logins": live.logins, "unique_citizens": live.unique_citizens, "new_adults": live.new_adults})
    t["agencies"] = _agency_rows(live.clients, names, agency)
    out["today"] = t
    m0 = month_start(now_day, cal)
    uniques, source = month_uniques(cal, m0, agency)
    mlabel, mlabel_fa = month_labels(m0, cal)
    out["this_month"] = {"month": month_key(m0, cal), "label": mlabel, "label_fa": mlabel_fa,
                         "unique_citizens": uniques, "exact": True, "source": source}

    # the series, and the cumulative unique-adult curve (counted back from the exact total)
    series = daily_series(first, last)
    cumulative = {}
    if series:
        end_of_range = day_bounds(max(series))[1]
        later = db.session.execute(select(func.count()).select_from(Citizen).where(
            Citizen.first_adult_authenticated_at >= end_of_range)).scalar_one()
        running = out["unique_adults"] - int(later)
        for d in sorted(series, reverse=True):
            cumulative[d] = running
            running -= series[d].new_adults
    rows = []
    if by == "day":
        for d, f in series.items():
            label, label_fa = day_labels(d, cal)
            base = f.client(agency) if agency else {"logins": f.logins, "unique_citizens": f.unique_citizens,
                                                    "new_adults": f.new_adults}
            rows.append({"period": d.isoformat(), "label": label, "label_fa": label_fa, **base,
                         "cumulative_unique_adults": cumulative[d], "source": f.source, "approximate": f.approximate,
                         "agencies": _agency_rows(f.clients, names, agency)})
    else:
        m = first
        while m <= last:
            nxt = next_month(m, cal)
            ds = [d for d in series if m <= d < nxt]
            if ds:
                logins: dict[str, int] = defaultdict(int)
                new: dict[str, int] = defaultdict(int)
                for d in ds:
                    for c, v in series[d].clients.items():
                        logins[c] += v["logins"]
                        new[c] += v["new_adults"]
                per_client = month_client_uniques(cal, m) if not agency else \
                    {agency: month_uniques(cal, m, agency)[0]}
                clients = {c: {"logins": logins[c], "unique_citizens": per_client.get(c, 0), "new_adults": new[c]}
                           for c in set(logins) | set(per_client)}
                uniq, source = month_uniques(cal, m, agency)
                label, label_fa = month_labels(m, cal)
                row = {"period": month_key(m, cal), "label": label, "label_fa": label_fa,
                       "logins": logins[agency] if agency else sum(series[d].logins for d in ds),
                       "unique_citizens": uniq,
                       "new_adults": new[agency] if agency else sum(series[d].new_adults for d in ds),
                       "cumulative_unique_adults": cumulative[max(ds)], "source": source, "approximate": False,
                       "from": min(ds).isoformat(), "to": max(ds).isoformat(),
                       "agencies": _agency_rows(clients, names, agency)}
                rows.append(row)
            m = nxt
    out["from"], out["to"] = first.isoformat(), last.isoformat()
    out["rows"] = rows
    out["_series"] = {d: (f.unique_citizens, cumulative[d], d == now_day) for d, f in series.items()}
    return out


# ---- output ----------------------------------------------------------------------------------------

def as_text(r: dict) -> str:
    lines = [f"unique adults who have authenticated: {r['unique_adults']:,}",
             f"adult population: {r['adult_population']:,}  ({r['adult_population_source']}"
             + (f", snapshot {r['adult_population_snapshot_at']}" if r.get("adult_population_snapshot_at") else "")
             + f"; adults are {r['adult_age']} or older)",
             f"coverage: {r['coverage_percent']:.2f}%"]
    t, m = r["today"], r["this_month"]
    who = f" through {r['agency']}" if r["agency"] else ""
    lines.append(f"today ({t['label']}, {r['timezone']}){who}: {t['unique_citizens']:,} unique citizens"
                 f" ({'live, ~0.8% error' if t['approximate'] else 'exact, from auth events'}), "
                 f"{t['logins']:,} logins, {t['new_adults']:,} new adults")
    lines.append(f"this month ({m['label']}){who}: {m['unique_citizens']:,} unique citizens (exact)")
    if t["agencies"] and not r["agency"]:
        lines.append("")
        lines.append("today by agency:")
        lines += [f"  {a['client_id']:<24} {a['logins']:>10,} logins {a['unique_citizens']:>10,} unique  {a['name']}"
                  for a in t["agencies"]]
    lines.append("")
    lines.append(f"by {r['by']}, {r['from']} .. {r['to']}{who}:")
    lines.append(f"  {'period':<17} {'logins':>12} {'unique':>12} {'new adults':>11} {'unique adults':>14}")
    for row in r["rows"]:
        mark = " ~" if row["approximate"] else ""
        lines.append(f"  {row['label']:<17} {row['logins']:>12,} {row['unique_citizens']:>12,} "
                     f"{row['new_adults']:>11,} {row['cumulative_unique_adults']:>14,}{mark}")
    if any(row["approximate"] for row in r["rows"]):
        lines.append("  (~ today's unique count is a live estimate; closed days are exact)")
    return "\n".join(lines)


CSV_FIELDS = ["period", "label", "label_fa", "agency", "logins", "unique_citizens", "new_adults",
              "cumulative_unique_adults", "source"]


def as_csv(r: dict) -> str:
    """One line per period overall (agency empty), then one per period and agency."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in r["rows"]:
        if not r["agency"]:
            w.writerow({**row, "agency": ""})
        for a in row["agencies"]:
            w.writerow({"period": row["period"], "label": row["label"], "label_fa": row["label_fa"],
                        "agency": a["client_id"], "logins": a["logins"], "unique_citizens": a["unique_citizens"],
                        "new_adults": a["new_adults"], "cumulative_unique_adults": "", "source": row["source"]})
    return buf.getvalue()


def plot(r: dict, path: str) -> None:
    """PNG or SVG (by the file's extension): daily unique citizens and the cumulative unique adults."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    fmt = path.rsplit(".", 1)[-1].lower()
    if fmt not in ("png", "svg"):
        raise StatsError("--plot needs a .png or .svg file name")
    cal = CALENDARS[r["calendar"]]
    series = r["_series"]
    ds = sorted(series)
    fig = Figure(figsize=(10, 6.5), dpi=110, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    xs = [mdates.date2num(d) for d in ds]
    uniq = [series[d][0] for d in ds]
    colors = ["#9ecae1" if series[d][2] else "#1f77b4" for d in ds]
    top.bar(xs, uniq, width=0.8, color=colors)
    top.set_ylabel("unique citizens per day")
    top.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(v):,}"))
    top.yaxis.set_major_locator(MaxNLocator(integer=True))
    top.grid(axis="y", alpha=0.3)
    bottom.plot(xs, [series[d][1] for d in ds], color="#d62728", marker="o" if len(ds) <= 45 else None,
                markersize=3, linewidth=2)
    bottom.set_ylabel("unique adults, cumulative")
    bottom.set_ylim(bottom=0)
    bottom.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(v):,}"))
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True))  # people come in whole numbers
    bottom.grid(alpha=0.3)
    pop = r["adult_population"]
    title = (f"National sign-in: {r['unique_adults']:,} unique adults, {r['coverage_percent']:.2f}% of "
             f"{pop:,} adults")
    if r["agency"]:
        title += f"  (daily figures: {r['agency']})"
    fig.suptitle(title)

    def label(v, _):
        d = mdates.num2date(v).date()
        if cal == JALALI:
            j = jdatetime.date.fromgregorian(date=d)
            return f"{j.day} {jdatetime.date.j_months_en[j.month - 1]}\n{j.year}"
        return d.strftime("%-d %b\n%Y")

    if cal == JALALI and ds:  # ticks on Jalali days: month starts, or days of the month for short ranges
        from matplotlib.ticker import FixedLocator

        span = (ds[-1] - ds[0]).days
        marks = (range(1, 32, 2) if span <= 14 else (1, 8, 15, 22) if span <= 60 else (1, 16) if span <= 180
                 else (1,))
        ticks = [d for d in ds if jdatetime.date.fromgregorian(date=d).day in marks]
        if span > 400:
            ticks = [d for d in ticks if jdatetime.date.fromgregorian(date=d).month in (1, 4, 7, 10)]
        bottom.xaxis.set_major_locator(FixedLocator([mdates.date2num(d) for d in ticks]))
    else:
        bottom.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=4, maxticks=10))
    bottom.xaxis.set_major_formatter(FuncFormatter(label))
    zone_note = f"days in {r['timezone']}, {'Jalali' if cal == JALALI else 'Gregorian'} calendar"
    if any(series[d][2] for d in ds):
        zone_note += "; light bar = today so far"
    bottom.set_xlabel(zone_note)
    fig.savefig(path, format=fmt)
