"""Benchmark the national figures (`idp stats`) at scale on PostgreSQL, with real Redis.

    python bench/stats_scale.py [--citizens 10000000] [--events 1000000] [--day-events 3000000]
                                [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]
                                [--redis redis://127.0.0.1:6379/0] [--keep]

In a fresh database (`idp db upgrade`): COPY N synthetic citizens with valid national IDs
(make_national_id), COPY the auth events of the last 30 days (today included) and, separately,
one closed day with --day-events events; set each citizen's first adult authentication and
the unique-adult counter from them, as the logins would have; feed today's events into the
store's live counters. Then time, warm, the median of several runs:

  * totals: unique adults (one row), adult population (registry), coverage   target < 100 ms
  * today's figures from the live counters (and from auth_events after a flush) target < 100 ms
  * this month's exact unique citizens; the whole default report (30 days)
  * `idp stats rollup` of every closed day; one day of --day-events events     target < 60 s
  * the population snapshot; `idp stats prune` of the big day; the CLI end to end

The database and the benchmark's Redis keys are removed at the end (unless --keep).
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from idp.citizens.national_id import make_national_id  # noqa: E402

CHUNK = 200_000
AGENCIES = 500
BIRTH_FIRST = dt.date(1935, 1, 1).toordinal()
BIRTH_LAST = dt.date(2020, 12, 31).toordinal()


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{os.cpu_count()} CPUs, {model}{mem}, {platform.platform()}"


def say(msg: str) -> None:
    print(msg, flush=True)


def timed(fn, runs: int = 7) -> tuple[float, object]:
    """Median wall time in ms of several warm runs (after one warm-up), and the last result."""
    result = fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), result


def verdict(ms: float, target_ms: float) -> str:
    return "meets the target" if ms < target_ms else f"MISSES the target of {target_ms:,.0f} ms"


def copy_citizens(conn, n: int, rng: random.Random) -> list[int]:
    """COPY n citizens (ids 1..n); returns each one's birth date as an ordinal (index = id)."""
    births = [0] * (n + 1)
    a = 7_919_993  # coprime with 10**9: i -> (a*i + b) mod 10**9 is a permutation, so IDs are unique
    b = rng.randrange(10**9)
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    with conn.cursor() as cur, cur.copy("COPY citizens (id, national_id, mobile, birth_date, subject_key, "
                                        "created_at, updated_at) FROM STDIN") as copy:
        for start in range(1, n + 1, CHUNK):
            lines = []
            keys = base64.urlsafe_b64encode(os.urandom(33 * CHUNK)).decode()  # 44 characters per 33 bytes
            for k, i in enumerate(range(start, min(start + CHUNK, n + 1))):
                nine = f"{(a * i + b) % 10**9:09d}"
                nid = make_national_id(nine)
                if len(set(nid)) == 1:  # never issued; shift it
                    nid = make_national_id(f"{(int(nine) + 1) % 10**9:09d}")
                birth = rng.randint(BIRTH_FIRST, BIRTH_LAST)
                births[i] = birth
                lines.append(f"{i}\t{nid}\t+98912{i % 10**7:07d}\t{dt.date.fromordinal(birth).isoformat()}\t"
                             f"{keys[k * 44:k * 44 + 43]}\t{now}\t{now}\n")
            copy.write("".join(lines))
    return births


def copy_events(conn, births: list[int], rows: list[tuple[dt.datetime, int, int]], adult_age: int,
                tz) -> None:
    """COPY auth events (time, citizen, agency index)."""
    with conn.cursor() as cur, cur.copy("COPY auth_events (occurred_at, citizen_id, client_id, method, sso, adult) "
                                        "FROM STDIN") as copy:
        for start in range(0, len(rows), CHUNK):
            lines = []
            for at, cid, agency in rows[start:start + CHUNK]:
                birth = dt.date.fromordinal(births[cid])
                day = at.astimezone(tz).date()
                years = day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))
                lines.append(f"{at.isoformat()}\t{cid}\tagency-{agency:03d}\t{'sms' if cid % 5 else 'totp'}\t"
                             f"{'t' if cid % 3 == 0 else 'f'}\t{'t' if years >= adult_age else 'f'}\n")
            copy.write("".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--citizens", type=int, default=10_000_000)
    ap.add_argument("--events", type=int, default=1_000_000, help="auth events over the last 30 days")
    ap.add_argument("--day-events", type=int, default=3_000_000, help="auth events of the one big closed day")
    ap.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--keep", action="store_true", help="keep the database and Redis keys")
    args = ap.parse_args()

    import psycopg

    rng = random.Random(5)
    name = f"idp_bench_stats_{uuid.uuid4().hex[:8]}"
    base = args.admin_url.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    prefix = f"idpbench:{uuid.uuid4().hex[:8]}:"
    with psycopg.connect(args.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        pg_version = conn.execute("SHOW server_version").fetchone()[0]
    say(f"machine: {machine()}; PostgreSQL {pg_version}")
    say(f"database {name}; {args.citizens:,} citizens, {args.events:,} events over 30 days, "
        f"{args.day_events:,} events on one day")
    env = {**os.environ, "IDP_DATABASE_URL": url, "IDP_STORE_URL": args.redis, "IDP_STORE_PREFIX": prefix,
           "IDP_SERVER_SECRET_KEY": "bench-" + "x" * 40}
    os.environ.update(env)
    try:
        run(args, url, rng, env)
    finally:
        if not args.keep:
            import redis

            r = redis.Redis.from_url(args.redis)
            keys = list(r.scan_iter(match=prefix + "*", count=1000))
            if keys:
                r.delete(*keys)
            with psycopg.connect(args.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(args, url: str, rng: random.Random, env: dict) -> None:
    import psycopg

    from idp import create_app
    from idp.platform.database import upgrade_database
    from idp.platform.settings import load_settings

    settings = load_settings(None)
    app = create_app(settings, require_keys=False)
    upgrade_database(app)
    tz = __import__("zoneinfo").ZoneInfo(settings.stats.timezone)
    results: list[str] = []

    # ---- load -------------------------------------------------------------------------------
    with psycopg.connect(url) as conn:
        indexes = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('citizens', "
                               "'auth_events') AND indexname NOT LIKE '%pkey'").fetchall()
        for index, _ in indexes:
            conn.execute(f'ALTER TABLE citizens DROP CONSTRAINT IF EXISTS "{index}"')
            conn.execute(f'DROP INDEX IF EXISTS "{index}"')
        # A bulk load checks the foreign key once at the end, not row by row.
        fks = conn.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                           "WHERE conrelid = 'auth_events'::regclass AND contype = 'f'").fetchall()
        for fk, _ in fks:
            conn.execute(f'ALTER TABLE auth_events DROP CONSTRAINT "{fk}"')
        conn.commit()
        t0 = time.perf_counter()
        births = copy_citizens(conn, args.citizens, rng)
        conn.commit()
        load_citizens = time.perf_counter() - t0
        conn.execute("SELECT setval('citizens_id_seq', %s)", (args.citizens,))
        conn.commit()
        results.append(f"citizens: COPY {args.citizens:,} rows in {load_citizens:.1f} s "
            f"({args.citizens / load_citizens:,.0f} rows/s)")
        say(results[-1])

        now = dt.datetime.now(dt.timezone.utc)
        today = now.astimezone(tz).date()
        day_start = dt.datetime.combine(today, dt.time(0), tzinfo=tz)
        window_start = day_start - dt.timedelta(days=29)
        span = (now - window_start).total_seconds()
        events = sorted(((window_start + dt.timedelta(seconds=rng.random() * span)).astimezone(dt.timezone.utc),
                         rng.randint(1, args.citizens), rng.randrange(AGENCIES)) for _ in range(args.events))
        big_day = today - dt.timedelta(days=45)
        big_start = dt.datetime.combine(big_day, dt.time(0), tzinfo=tz)
        big = [((big_start + dt.timedelta(seconds=rng.random() * 86400)).astimezone(dt.timezone.utc),
                rng.randint(1, args.citizens), int(rng.paretovariate(1.2)) % AGENCIES) for _ in range(args.day_events)]
        t0 = time.perf_counter()
        copy_events(conn, births, events, settings.stats.adult_age, tz)
        copy_events(conn, births, big, settings.stats.adult_age, tz)
        conn.commit()
        load_events = time.perf_counter() - t0
        n_events = len(events) + len(big)
        results.append(f"auth events: COPY {n_events:,} rows in {load_events:.1f} s ({n_events / load_events:,.0f} rows/s)")
        say(results[-1])

        # What the logins would have written: first (adult) authentication times and the counter
        # (before the indexes are rebuilt, as a bulk load would).
        t0 = time.perf_counter()
        conn.execute("""UPDATE citizens c SET first_authenticated_at = f.first_at, last_authenticated_at = f.last_at,
                               first_adult_authenticated_at = f.first_adult_at
                        FROM (SELECT citizen_id, min(occurred_at) AS first_at, max(occurred_at) AS last_at,
                                     min(occurred_at) FILTER (WHERE adult) AS first_adult_at
                              FROM auth_events GROUP BY citizen_id) f WHERE c.id = f.citizen_id""")
        conn.execute("UPDATE stat_counters SET value = (SELECT count(*) FROM citizens "
                     "WHERE first_adult_authenticated_at IS NOT NULL) WHERE name = 'unique_adults'")
        clients = [(f"agency-{i:03d}", f"Agency {i}", "{}", False, now) for i in range(AGENCIES)]
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO clients (client_id, name, client_metadata, trusted, created_at) "
                            "VALUES (%s, %s, %s, %s, %s)", clients)
        conn.commit()
        say(f"first adult authentications and the counter set in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        for index, ddl in indexes:
            conn.execute(ddl)
        for fk, ddl in fks:
            conn.execute(f'ALTER TABLE auth_events ADD CONSTRAINT "{fk}" {ddl}')
        conn.commit()
        results.append(f"indexes rebuilt and the foreign key checked in {time.perf_counter() - t0:.1f} s")
        say(results[-1])

    with psycopg.connect(url, autocommit=True) as conn:
        t0 = time.perf_counter()
        conn.execute("VACUUM ANALYZE citizens")
        conn.execute("VACUUM ANALYZE auth_events")
        say(f"VACUUM ANALYZE in {time.perf_counter() - t0:.1f} s")
        heap, total = conn.execute("SELECT pg_relation_size('auth_events'), pg_total_relation_size('auth_events')"
                                   ).fetchone()
        results.append(f"auth_events on disk: {heap / n_events:.0f} bytes a row, {total / n_events:.0f} with its "
                       f"indexes ({total * 3_000_000 / n_events / 2**30:.2f} GiB a day at 3 million logins)")
        say(results[-1])

    # ---- the live counters, as the logins of today would have fed them ------------------------
    from idp.platform.store import store
    from idp.stats.calendars import GREGORIAN, day_bounds, month_start
    from idp.stats.figures import live_figures, month_uniques, raw_figures, totals
    from idp.stats.report import report
    from idp.stats.rollups import prune, refresh_population_snapshot, rollup, rollup_day

    with app.app_context():
        day = today.isoformat()
        todays = [e for e in events if e[0] >= day_start]
        store.redis.set(store._k("live", "since", day), f"{day_start.timestamp():.3f}", ex=3 * 86400)
        t0 = time.perf_counter()
        pipe = store.redis.pipeline(transaction=False)
        for i, (_, cid, agency) in enumerate(todays):
            client = f"agency-{agency:03d}"
            pipe.pfadd(store._k("hll", "day", day), str(cid))
            pipe.pfadd(store._k("hll", "day", day, client), str(cid))
            pipe.hincrby(store._k("live", "logins", day), client, 1)
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()
        say(f"live counters fed with today's {len(todays):,} events in {time.perf_counter() - t0:.1f} s")

        # ---- timings -----------------------------------------------------------------------------
        say("")
        ms, tot = timed(totals)
        results.append(f"totals (unique adults {tot['unique_adults']:,}, adult population "
                       f"{tot['adult_population']:,} from the registry, no snapshot): {ms:,.1f} ms, "
                       f"{verdict(ms, 100)}")
        say(results[-1])
        ms, live = timed(live_figures)
        exact = raw_figures(*day_bounds(today))
        err = 100.0 * (live.unique_citizens - exact.unique_citizens) / max(exact.unique_citizens, 1)
        results.append(f"today's figures, live ({live.unique_citizens:,} unique citizens, exact "
                       f"{exact.unique_citizens:,}, error {err:+.2f}%; {live.logins:,} logins; "
                       f"{len(live.clients)} agencies): {ms:,.1f} ms, {verdict(ms, 100)}")
        say(results[-1])
        ms, month = timed(lambda: month_uniques(GREGORIAN, month_start(today, GREGORIAN)), runs=3)
        results.append(f"this month's exact unique citizens before any rollup ({month[0]:,}): {ms:,.1f} ms")
        say(results[-1])
        ms, _ = timed(lambda: report(), runs=3)
        results.append(f"whole default report (30 days) before any rollup: {ms:,.0f} ms")
        say(results[-1])

        t0 = time.perf_counter()
        one = rollup_day(big_day, force=True)
        secs = time.perf_counter() - t0
        results.append(f"rollup of one day of {one['logins']:,} events ({one['unique_citizens']:,} unique citizens, "
                       f"{one['clients']} agencies, {one['new_adults']:,} new adults), the day's citizens added to "
                       f"its Gregorian and Jalali months: {secs:.1f} s, {verdict(secs * 1000, 60_000)}")
        say(results[-1])
        t0 = time.perf_counter()
        again = rollup_day(big_day, force=True)
        secs = time.perf_counter() - t0
        assert again["month_gained"] == {"g": 0, "j": 0}, again
        results.append(f"the same day recomputed (idempotent: the months gain nothing): {secs:.1f} s")
        say(results[-1])
        t0 = time.perf_counter()
        out = rollup(population=False)
        secs = time.perf_counter() - t0
        results.append(f"rollup of the other {len(out['days'])} closed days "
                       f"({sum(d.get('logins', 0) for d in out['days']):,} events) and {len(out['months'])} month "
                       f"closes: {secs:.1f} s")
        say(results[-1])
        t0 = time.perf_counter()
        pop = refresh_population_snapshot()
        results.append(f"population snapshot of {pop['citizens']:,} citizens: {time.perf_counter() - t0:.1f} s")
        say(results[-1])
        ms, tot = timed(totals)
        results.append(f"totals with the snapshot (adult population {tot['adult_population']:,}): {ms:,.1f} ms, "
                       f"{verdict(ms, 100)}")
        say(results[-1])
        ms, month = timed(lambda: month_uniques(GREGORIAN, month_start(today, GREGORIAN)), runs=3)
        results.append(f"this month's exact unique citizens after the rollup ({month[0]:,}): {ms:,.1f} ms")
        say(results[-1])
        ms, _ = timed(lambda: report(), runs=3)
        results.append(f"whole default report (30 days) after the rollup: {ms:,.0f} ms")
        say(results[-1])
        ms, _ = timed(lambda: report(by="month", calendar="jalali"), runs=3)
        results.append(f"report by Jalali month (12 months) after the rollup: {ms:,.0f} ms")
        say(results[-1])

        # the store flushed: today's figures from auth_events
        keys = list(store.redis.scan_iter(match=store.prefix + "*", count=1000))
        store.redis.delete(*keys)
        ms, flushed = timed(live_figures, runs=3)
        results.append(f"today's figures after the store was flushed (from auth_events, exact "
                       f"{flushed.unique_citizens:,}): {ms:,.1f} ms, {verdict(ms, 100)}")
        say(results[-1])

        t0 = time.perf_counter()
        pruned = prune(big_day + dt.timedelta(days=1))
        results.append(f"prune of the big day ({pruned['deleted']:,} raw events, batches of 50,000): "
                       f"{time.perf_counter() - t0:.1f} s")
        say(results[-1])

    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "idp.cli", "stats", "--json"], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    results.append(f"`idp stats --json` end to end (a new Python process): {time.perf_counter() - t0:.2f} s")
    say(results[-1])
    say("\nsummary\n" + "\n".join(f"  {r}" for r in results))


if __name__ == "__main__":
    main()
