"""The writers of the figures: ``idp stats rollup`` (closed days into ``stat_days`` /
``stat_day_clients``, days' citizens into their months' sets, finished months closed, the
registry's birth-date snapshot) and ``idp stats prune`` (raw auth events whose figures are final).

Every write is serialized across nodes by one row lock.
May import: idp.platform, idp.citizens, .calendars, .figures, .models.
"""
from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import BigInteger, Column, MetaData, Table, delete, func, literal, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..citizens.counting import local_date
from ..citizens.models import AuthEvent, CitizenRow, StatCounter
from ..platform.database import db, utcnow
from ..platform.settings import settings
from .calendars import (
    CLOSE_GRACE,
    GREGORIAN,
    JALALI,
    StatsError,
    closed_through,
    day_bounds,
    days,
    month_key,
    month_start,
    next_month,
    today,
)
from .figures import (
    POPULATION_AT,
    POPULATION_MAX_ID,
    counter_value,
    events_between,
    first_event_day,
    month_row,
    raw_figures,
)
from .models import StatBirthDate, StatDay, StatDayClient, StatMonth, StatMonthCitizen, StatMonthClient

LOCK_ROLLUP = "lock:stats_rollup"
ROLLUP_WORK_MEM = "256MB"


def _insert(model):
    """INSERT with ON CONFLICT support for the session's dialect."""
    return (pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert)(model)


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


def _set_counter(name: str, value: int) -> None:
    stmt = _insert(StatCounter).values(name=name, value=value)
    db.session.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"value": value}))


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
        ["citizen_id"], select(AuthEvent.citizen_id).where(events_between(start, end)).distinct().order_by(AuthEvent.citizen_id)))
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text("ANALYZE stat_tmp_day_citizens"))


def _add_to_month(cal: str, month: dt.date, start: dt.datetime, end: dt.datetime, now: dt.datetime) -> int | None:
    """Add a day's citizens to its open month's set; the month grows by those new to it."""
    row = month_row(cal, month)
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
        row = month_row(cal, month)
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
                                        .where(events_between(start, end)).group_by(AuthEvent.client_id)).all()
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
        rows = db.session.execute(select(CitizenRow.birth_date, func.count(), func.max(CitizenRow.id))
                                  .group_by(CitizenRow.birth_date)).all()
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
        at = counter_value(POPULATION_AT)
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
