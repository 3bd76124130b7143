"""The national figures (issue 5) on SQLite and PostgreSQL with real Redis: parallel first
logins counted once everywhere, a minor counted on their first adult login in the daily
figures, a flushed store losing no durable figure, days that follow the configured time zone,
rollups that are idempotent under concurrency, and the report's Jalali, CSV and chart output.

test_counting.py proves the unique-adult counter itself; these extend it to every figure that
is derived from the same logins.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import multiprocessing as mp
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import func, select

from idp.citizens.models import AuthEvent
from idp.platform.digits import persian_digits
from idp.stats.models import StatDay, StatDayClient

from .helpers import Clock, cli_env, idp

PROCESSES = 4
LOGINS_EACH = 3
CITIZENS = 3
UTC = dt.timezone.utc


def stats_json(provider, *args: str) -> dict:
    out = idp(provider, "stats", *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def new_client() -> str:
    return f"agency-{uuid.uuid4().hex[:10]}"


def login_at(provider, national_id: str, client_id: str, at: dt.datetime | None = None) -> bool:
    from idp.citizens.counting import record_authentication
    from idp.citizens.directory import find

    with provider.app.app_context():
        return record_authentication(find(national_id).citizen, client_id, "sms", at=at)


def past_day(days_ago: int) -> dt.date:
    with_app_today = dt.datetime.now(UTC).astimezone(dt.timezone(dt.timedelta(hours=3, minutes=30))).date()
    return with_app_today - dt.timedelta(days=days_ago)


def noon_utc(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(8, 0), tzinfo=UTC)  # 11:30 in Tehran, the same day


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_provider(request, tmp_path, redis_url):
    """A provider with a database and store of its own (today's live counters begin with it)."""
    import psycopg

    from .conftest import GENEROUS_IP_LIMITS, PG_ADMIN_URL, need, start_provider

    name = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'idp.sqlite3'}"
    else:
        name = f"idp_test_stats_{uuid.uuid4().hex[:10]}"
        try:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=2) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
        except psycopg.Error as exc:
            need("PostgreSQL", str(exc).strip())
        url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    live = start_provider(tmp_path, url, redis_url, limits=GENEROUS_IP_LIMITS)
    yield live
    live.stop()
    flush_store(live)
    with live.app.app_context():
        from idp.platform.database import db

        db.engine.dispose()
    if name:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def flush_store(provider) -> None:
    """What a Redis FLUSHALL does to this provider (other test sessions' keys are left alone)."""
    from idp.platform.store import store

    with provider.app.app_context():
        keys = list(store.redis.scan_iter(match=store.prefix + "*", count=1000))
        if keys:
            store.redis.delete(*keys)


# ---- many parallel first logins, across processes -------------------------------------------------

def _login_everyone(settings_values: dict, national_ids: list[str], client_id: str, barrier, results) -> None:
    """In a separate process: every citizen logs in LOGINS_EACH times, all processes at once."""
    import random

    from idp import create_app
    from idp.citizens.counting import record_authentication
    from idp.citizens.directory import find
    from idp.platform.settings import load_settings

    app = create_app(load_settings(None, env={}, overrides=settings_values))
    with app.app_context():
        people = [find(n).citizen for n in national_ids]
        order = [p for p in people for _ in range(LOGINS_EACH)]
        random.shuffle(order)
        barrier.wait(timeout=60)
        results.put(sum(record_authentication(p, client_id, "sms") for p in order))


def test_parallel_first_logins_count_once_in_every_figure(fresh_provider):
    from idp.citizens.counting import unique_adults
    from idp.stats.calendars import GREGORIAN, day_bounds, month_start, today
    from idp.stats.figures import live_figures, month_uniques, raw_figures

    provider = fresh_provider
    client = new_client()
    national_ids = [provider.add_citizen(birth_date="1975-03-03")[0] for _ in range(CITIZENS)]
    with provider.app.app_context():
        before = unique_adults()
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    values = provider.settings.as_dict(reveal_secrets=True)
    procs = [ctx.Process(target=_login_everyone, args=(values, national_ids, client, barrier, results))
             for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    assert sum(results.get(timeout=5) for _ in procs) == CITIZENS, "each citizen is a new adult exactly once"

    logins = PROCESSES * LOGINS_EACH * CITIZENS
    with provider.app.app_context():
        assert unique_adults() == before + CITIZENS
        live = live_figures()
        assert live.source == "live"
        assert live.client(client) == {"logins": logins, "unique_citizens": CITIZENS, "new_adults": CITIZENS}
        exact = raw_figures(*day_bounds(today()))
        assert exact.client(client) == {"logins": logins, "unique_citizens": CITIZENS, "new_adults": CITIZENS}
        month_before = month_uniques(GREGORIAN, month_start(today(), GREGORIAN))
        assert month_uniques(GREGORIAN, month_start(today(), GREGORIAN),
                                   client) == (CITIZENS, "auth_events")
    flush_store(provider)
    with provider.app.app_context():
        after = live_figures()
        assert after.source == "auth_events"
        assert after.client(client) == {"logins": logins, "unique_citizens": CITIZENS, "new_adults": CITIZENS}
        assert month_uniques(GREGORIAN, month_start(today(), GREGORIAN)) == month_before
        assert unique_adults() == before + CITIZENS


# ---- a minor becomes an adult ---------------------------------------------------------------------

def test_minor_is_a_new_adult_on_the_day_of_their_first_adult_login(provider):
    from idp.stats.figures import daily_series

    birthday = past_day(40)
    if (birthday.month, birthday.day) == (2, 29):
        birthday -= dt.timedelta(days=1)
    client = new_client()
    national_id, _ = provider.add_citizen(birth_date=birthday.replace(year=birthday.year - 18).isoformat())
    eve = birthday - dt.timedelta(days=1)
    assert login_at(provider, national_id, client, noon_utc(eve)) is False  # 17 years old
    # 21:00 UTC on the eve is 00:30 on the birthday in Tehran: 18 years old, a new adult.
    assert login_at(provider, national_id, client, dt.datetime.combine(eve, dt.time(21, 0), tzinfo=UTC)) is True
    assert login_at(provider, national_id, client, noon_utc(birthday)) is False
    out = idp(provider, "stats", "rollup", "--day", eve.isoformat())
    assert out.returncode == 0, out.stderr
    assert idp(provider, "stats", "rollup", "--day", birthday.isoformat()).returncode == 0
    with provider.app.app_context():
        from idp.platform.database import db

        rows = {d: (n, u, a) for d, n, u, a in db.session.execute(
            select(StatDayClient.day, StatDayClient.logins, StatDayClient.unique_citizens, StatDayClient.new_adults)
            .where(StatDayClient.client_id == client))}
        assert rows == {eve: (1, 1, 0), birthday: (2, 1, 1)}
        series = daily_series(eve, birthday)
        assert series[birthday].source == "rollup" and series[birthday].new_adults >= 1
    report = stats_json(provider, "--from", eve.isoformat(), "--to", birthday.isoformat(), "--agency", client)
    assert [(r["period"], r["logins"], r["new_adults"]) for r in report["rows"]] == [
        (eve.isoformat(), 1, 0), (birthday.isoformat(), 2, 1)]
    # the cumulative curve is the exact total counted back: it grows by the day's new adults
    assert report["rows"][1]["cumulative_unique_adults"] - report["rows"][0]["cumulative_unique_adults"] >= 1


# ---- the store flushed in the middle of the day -----------------------------------------------------

def test_flushing_the_store_mid_day_loses_no_durable_figure(fresh_provider, monkeypatch):
    from idp.citizens.counting import unique_adults
    from idp.stats.figures import LIVE_GRACE, live_figures

    provider = fresh_provider
    client = new_client()
    people = [provider.add_citizen(birth_date="1981-01-01")[0] for _ in range(3)]
    for nid in people:
        login_at(provider, nid, client)
    login_at(provider, people[0], client)
    with provider.app.app_context():
        live = live_figures()
        assert live.source == "live" and live.client(client)["logins"] == 4
        adults = unique_adults()
    report_before = stats_json(provider, "--agency", client)
    assert report_before["today"]["source"] == "live" and report_before["today"]["unique_citizens"] == 3

    # The store's own notion of "since" allows LIVE_GRACE seconds of slack: the counters that begin
    # after the flush begin that much (and a little) after the first logins, as a later hour would.
    from idp.platform.store import counters as store_counters

    Clock(monkeypatch, store_counters).advance(LIVE_GRACE + 0.5)
    flush_store(provider)  # Redis restarted without persistence, or FLUSHALL
    late = provider.add_citizen(birth_date="1990-02-02")[0]
    login_at(provider, late, client)
    with provider.app.app_context():
        figures = live_figures()
        assert figures.source == "auth_events", "the live counters began after the day's first logins"
        assert figures.client(client) == {"logins": 5, "unique_citizens": 4, "new_adults": 4}
        assert unique_adults() == adults + 1
    report = stats_json(provider, "--agency", client)
    assert report["today"]["source"] == "auth_events" and report["today"]["approximate"] is False
    assert (report["today"]["logins"], report["today"]["unique_citizens"]) == (5, 4)
    assert report["unique_adults"] == report_before["unique_adults"] + 1

    # Redis unreachable: the figures still answer, from auth_events.
    with provider.app.app_context():
        from idp.platform.store import store

        def down(*_a, **_k):
            raise ConnectionError("store down")

        monkeypatch.setattr(store._get_current_object(), "live_day", down)
        assert live_figures().client(client)["unique_citizens"] == 4


# ---- days follow the configured time zone -----------------------------------------------------------

def test_days_begin_at_local_midnight_in_the_configured_time_zone(provider):
    from idp.stats.calendars import day_bounds
    from idp.stats.figures import raw_figures
    from idp.stats.rollups import rollup_day

    day = past_day(20)
    client = new_client()
    a, b = provider.add_citizen()[0], provider.add_citizen()[0]
    login_at(provider, a, client, dt.datetime.combine(day, dt.time(20, 29), tzinfo=UTC))  # 23:59 in Tehran
    login_at(provider, b, client, dt.datetime.combine(day, dt.time(21, 0), tzinfo=UTC))   # 00:30 the next day
    with provider.app.app_context():
        assert day_bounds(day)[1] == dt.datetime.combine(day, dt.time(20, 30), tzinfo=UTC)
        assert raw_figures(*day_bounds(day)).client(client)["logins"] == 1
        nxt = day + dt.timedelta(days=1)
        assert raw_figures(*day_bounds(nxt)).client(client)["logins"] == 1
        rollup_day(day)
        rollup_day(nxt)
        from idp.platform.database import db

        got = dict(db.session.execute(select(StatDayClient.day, StatDayClient.logins)
                                      .where(StatDayClient.client_id == client)).all())
        assert got == {day: 1, nxt: 1}


def test_days_in_utc_when_so_configured(make_provider):
    from idp.stats.calendars import day_bounds
    from idp.stats.figures import raw_figures

    live = make_provider(stats={"timezone": "UTC"})
    day = past_day(10)
    client = new_client()
    nid = live.add_citizen()[0]
    login_at(live, nid, client, dt.datetime.combine(day, dt.time(20, 29), tzinfo=UTC))
    login_at(live, nid, client, dt.datetime.combine(day, dt.time(21, 0), tzinfo=UTC))
    with live.app.app_context():
        assert raw_figures(*day_bounds(day)).client(client) == {
            "logins": 2, "unique_citizens": 1, "new_adults": 1}


# ---- rollups: idempotent, and right when nodes run them at once ------------------------------------------

def test_rollup_is_idempotent_and_safe_to_run_at_once(provider):
    from idp.platform.database import db
    from idp.stats.calendars import GREGORIAN, JALALI, day_bounds, month_start, next_month, today
    from idp.stats.figures import month_uniques, raw_figures

    day = past_day(1)
    clients = [new_client() for _ in range(3)]
    people = [provider.add_citizen(birth_date="1970-07-07")[0] for _ in range(6)]
    for i, nid in enumerate(people):
        for j in range(i % 3 + 1):
            login_at(provider, nid, clients[j], noon_utc(day) + dt.timedelta(minutes=i))
    procs = [subprocess.Popen([sys.executable, "-m", "idp.cli", "stats", "rollup", "--day", day.isoformat(),
                               "--json"], env=cli_env(provider), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]

    def stored():
        with provider.app.app_context():
            days = db.session.execute(select(StatDay.day, StatDay.logins, StatDay.unique_citizens,
                                             StatDay.new_adults).order_by(StatDay.day)).all()
            per_client = db.session.execute(select(StatDayClient.client_id, StatDayClient.logins,
                                                   StatDayClient.unique_citizens, StatDayClient.new_adults)
                                            .where(StatDayClient.day == day).order_by(StatDayClient.client_id)).all()
            month = month_uniques(GREGORIAN, month_start(day, GREGORIAN))[0]
            jmonth = month_uniques(JALALI, month_start(day, JALALI))[0]
            return days, per_client, month, jmonth

    first = stored()
    with provider.app.app_context():
        exact = raw_figures(*day_bounds(day))
        for cal in (GREGORIAN, JALALI):
            m = month_start(day, cal)
            end = min(next_month(m, cal) - dt.timedelta(days=1), today())
            truth = db.session.execute(select(func.count(AuthEvent.citizen_id.distinct())).where(
                AuthEvent.occurred_at >= day_bounds(m)[0],
                AuthEvent.occurred_at < day_bounds(end)[1])).scalar_one()
            assert month_uniques(cal, m)[0] == truth, cal
    row = next(r for r in first[0] if r[0] == day)
    assert row[1:] == (exact.logins, exact.unique_citizens, exact.new_adults)
    assert [r[0] for r in first[1] if r[0] in clients] == sorted(clients)
    assert {r[0]: r[1:] for r in first[1] if r[0] in clients} == {
        clients[0]: (6, 6, 6), clients[1]: (4, 4, 0), clients[2]: (2, 2, 0)}
    for _ in range(2):
        assert idp(provider, "stats", "rollup", "--day", day.isoformat()).returncode == 0
    assert stored() == first
    # a day that is not over cannot be rolled up
    out = idp(provider, "stats", "rollup", "--day", past_day(0).isoformat())
    assert out.returncode == 1 and "not over" in out.stderr


# ---- the report: Jalali, CSV, the chart -------------------------------------------------------------------

def test_report_in_the_jalali_calendar(provider):
    import jdatetime

    day = past_day(3)
    client = new_client()
    login_at(provider, provider.add_citizen()[0], client, noon_utc(day))
    j = jdatetime.date.fromgregorian(date=day)
    report = stats_json(provider, "--calendar", "jalali", "--from", f"{j.year}-{j.month:02d}-{j.day:02d}",
                        "--to", day.isoformat(), "--agency", client)
    first = report["rows"][0]
    assert first["period"] == day.isoformat() and first["label"] == f"{j.year:04d}-{j.month:02d}-{j.day:02d}"
    assert jdatetime.date.j_months_fa[j.month - 1] in first["label_fa"] and first["logins"] == 1
    assert report["this_month"]["label"].split()[0] in jdatetime.date.j_months_en
    monthly = stats_json(provider, "--calendar", "jalali", "--by", "month", "--from", day.isoformat(),
                         "--agency", client)
    assert monthly["rows"][0]["period"] == f"{j.year:04d}-{j.month:02d}"
    assert monthly["rows"][0]["label"] == f"{jdatetime.date.j_months_en[j.month - 1]} {j.year}"
    assert monthly["rows"][0]["logins"] >= 1 and monthly["rows"][0]["unique_citizens"] >= 1
    text = idp(provider, "stats", "--calendar", "jalali", "--by", "month", "--from", day.isoformat(),
               "--to", day.isoformat())
    assert text.returncode == 0 and jdatetime.date.j_months_en[j.month - 1] in text.stdout
    # the header names the range in Jalali months and days first, then the Gregorian days
    month = f"{jdatetime.date.j_months_en[j.month - 1]} {j.year}"
    first = jdatetime.date(j.year, j.month, 1)
    header = (f"by month, {month} .. {month} ({first.year:04d}-{first.month:02d}-01 .. "
              f"{j.year:04d}-{j.month:02d}-{j.day:02d} Jalali, {first.togregorian().isoformat()} .. "
              f"{day.isoformat()}):")
    assert header in text.stdout.splitlines(), text.stdout
    daily = idp(provider, "stats", "--calendar", "jalali", "--from", day.isoformat(), "--to", day.isoformat())
    jday = f"{j.year:04d}-{j.month:02d}-{j.day:02d}"
    assert f"by day, {jday} .. {jday} Jalali ({day.isoformat()} .. {day.isoformat()}):" in daily.stdout.splitlines()
    assert "unique adults who have authenticated" in text.stdout and "coverage" in text.stdout
    for key in ("unique_adults", "adult_population", "coverage_percent"):
        assert key in report


def test_report_as_csv(provider):
    day = past_day(4)
    client = new_client()
    people = [provider.add_citizen()[0] for _ in range(2)]
    for nid in people + people[:1]:
        login_at(provider, nid, client, noon_utc(day))
    out = idp(provider, "stats", "--csv", "--from", day.isoformat(), "--to", (day + dt.timedelta(days=1)).isoformat())
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert list(rows[0]) == ["period", "label", "label_fa", "agency", "logins", "unique_citizens", "new_adults",
                             "cumulative_unique_adults", "source"]
    mine = [r for r in rows if r["agency"] == client]
    assert [(r["period"], r["logins"], r["unique_citizens"]) for r in mine] == [(day.isoformat(), "3", "2")]
    # label_fa is Persian in the Gregorian calendar too: Persian month names and digits
    months_fa = ["ژانویه", "فوریه", "مارس", "آوریل", "مه", "ژوئن", "ژوئیه", "اوت", "سپتامبر", "اکتبر", "نوامبر",
                 "دسامبر"]
    assert mine[0]["label_fa"] == persian_digits(f"{day.day} {months_fa[day.month - 1]} {day.year}")
    report = stats_json(provider, "--by", "month", "--from", day.isoformat(), "--to", day.isoformat())
    assert report["rows"][0]["label_fa"] == persian_digits(f"{months_fa[day.month - 1]} {day.year}")
    assert report["this_month"]["label_fa"].split()[0] in months_fa
    overall = [r for r in rows if r["agency"] == ""]
    assert [r["period"] for r in overall] == [day.isoformat(), (day + dt.timedelta(days=1)).isoformat()]
    assert int(overall[0]["logins"]) >= 3 and overall[0]["cumulative_unique_adults"].isdigit()


@pytest.mark.parametrize("suffix", ["png", "svg"])
def test_plot_file_is_drawn(provider, tmp_path, suffix):
    login_at(provider, provider.add_citizen()[0], new_client())
    path = tmp_path / f"figures.{suffix}"
    out = idp(provider, "stats", "--plot", str(path), "--calendar", "jalali")
    assert out.returncode == 0, out.stderr
    data = path.read_bytes()
    assert len(data) > 5000
    assert data.startswith(b"\x89PNG") if suffix == "png" else b"<svg" in data[:2000]
    bad = idp(provider, "stats", "--plot", str(tmp_path / "figures.gif"))
    assert bad.returncode == 1 and ".png or .svg" in bad.stderr


# ---- the adult population ---------------------------------------------------------------------------------

def test_adult_population_from_the_snapshot_plus_later_registrations(provider):
    from idp.citizens.models import CitizenRow
    from idp.platform.database import db
    from idp.stats.calendars import adult_cutoff, today
    from idp.stats.figures import population_info, totals
    from idp.stats.rollups import refresh_population_snapshot

    with provider.app.app_context():
        cutoff = adult_cutoff(today(), 18)
        live = db.session.execute(select(func.count()).select_from(CitizenRow)
                                  .where(CitizenRow.birth_date <= cutoff)).scalar_one()
        refresh_population_snapshot()
        assert population_info()["adult_population"] == live
    provider.add_citizen(birth_date="1960-01-01")
    provider.add_citizen(birth_date=stats_today_minus_years(5))
    with provider.app.app_context():
        info = population_info()
        assert info["adult_population"] == live + 1 and info["source"].startswith("registry snapshot")
    with provider.app.app_context():
        total = totals()
        assert total["adult_population"] == live + 1
        assert total["coverage_percent"] == round(100.0 * total["unique_adults"] / (live + 1), 4)


def stats_today_minus_years(years: int) -> str:
    today = past_day(0)
    return today.replace(year=today.year - years, day=min(today.day, 28)).isoformat()


# ---- retention: raw events of final days ------------------------------------------------------------------

def test_prune_deletes_only_raw_events_whose_figures_are_final(provider):
    from idp.platform.database import db
    from idp.stats.calendars import day_bounds, next_month
    from idp.stats.figures import raw_figures

    old = past_day(100)
    client = new_client()
    people = [provider.add_citizen()[0] for _ in range(3)]
    for nid in people:
        login_at(provider, nid, client, noon_utc(old))
    login_at(provider, people[0], client)  # today's event, which prune must keep (not left to other tests)
    # every node's cron at once: each closed day rolled up once, exactly, months closed once
    procs = [subprocess.Popen([sys.executable, "-m", "idp.cli", "stats", "rollup", "--json"], env=cli_env(provider),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    runs = [json.loads(o[0]) for o in outs]
    done = [d["day"] for r in runs for d in r["days"] if "skipped" not in d]
    assert len(done) == len(set(done)), "a day rolled up by one node is skipped by the other"
    assert len([m for r in runs for m in r["months"]]) == len({(m["calendar"], m["month"]) for r in runs
                                                                for m in r["months"]})
    with provider.app.app_context():
        from idp.stats.models import StatMonth

        for d, logins, uniques, new in db.session.execute(select(StatDay.day, StatDay.logins, StatDay.unique_citizens,
                                                                 StatDay.new_adults)):
            exact = raw_figures(*day_bounds(d))
            assert (logins, uniques, new) == (exact.logins, exact.unique_citizens, exact.new_adults), d
        closed = db.session.execute(select(StatMonth.calendar, StatMonth.month, StatMonth.unique_citizens)
                                    .where(StatMonth.closed_at.isnot(None))).all()
        assert closed, "the months before this one are over and closed"
        for cal, m, uniques in closed:
            start = day_bounds(m)[0]
            end = day_bounds(next_month(m, cal) - dt.timedelta(days=1))[1]
            truth = db.session.execute(select(func.count(AuthEvent.citizen_id.distinct())).where(
                AuthEvent.occurred_at >= start, AuthEvent.occurred_at < end)).scalar_one()
            assert uniques == truth, (cal, m)
    before = stats_json(provider, "--from", old.isoformat(), "--to", old.isoformat(), "--agency", client)["rows"]
    assert before[0]["logins"] == 3
    out = idp(provider, "stats", "prune", "--before", (old + dt.timedelta(days=1)).isoformat(), "--batch", "100",
              "--json")
    assert out.returncode == 0, out.stderr
    pruned = json.loads(out.stdout)
    assert pruned["deleted"] >= 3 and pruned["held_back"] is None
    with provider.app.app_context():
        left = db.session.execute(select(func.count()).select_from(AuthEvent)
                                  .where(AuthEvent.occurred_at < day_bounds(old)[1])).scalar_one()
        assert left == 0
    after = stats_json(provider, "--from", old.isoformat(), "--to", old.isoformat(), "--agency", client)["rows"]
    assert after == before
    # today's month is open: its raw events stay whatever --before says
    out = idp(provider, "stats", "prune", "--before", past_day(-1).isoformat(), "--json")
    assert out.returncode == 0, out.stderr
    held = json.loads(out.stdout)
    assert held["held_back"] and held["pruned_before"] <= past_day(0).isoformat()
    with provider.app.app_context():
        assert db.session.execute(select(func.count()).select_from(AuthEvent)
                                  .where(AuthEvent.occurred_at >= day_bounds(past_day(0))[0])).scalar_one() > 0
