"""What one login costs, step by step, for one source tree: CPU of the thread that serves each
request, store round trips, SQL statements and commits, medians over many logins.

    python bench/login_cost.py .                       # this checkout, PostgreSQL and Redis
    git archive REV idp migrations | tar -x -C /tmp/rev && python bench/login_cost.py /tmp/rev
    python bench/login_cost.py . --logins 300 --limits on

In process, through Flask's test client (no HTTP server, no network, one request at a time), so
the figures are the app's own (db trips: SQL statements plus the BEGIN, COMMIT and ROLLBACK
round trips around them): steady from run to run, and comparable between two trees on the
same machine. The citizens are returning ones (each counted as an adult the day before), as in
the load benchmark. Not counted: PostgreSQL's and Redis's own CPU, and the SMS sender thread (the text
goes out after the answer, on a thread of its own). ``--limits off`` (the default) is the load
benchmark's setting (``[limits] enabled = false``): all its traffic comes from one address;
``--limits on`` is a deployment's, as tests/test_costs.py counts it.

Needs PostgreSQL (``$IDP_TEST_PG_ADMIN`` or postgresql://postgres@127.0.0.1:5432/postgres; a
database of its own, dropped at the end) and Redis on 127.0.0.1:6379 (a key prefix of its own).
"""
from __future__ import annotations

import argparse
import base64
import cProfile
import hashlib
import json
import logging
import os
import pstats
import re
import secrets
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

PG_ADMIN = os.environ.get("IDP_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("IDP_TEST_REDIS", "redis://127.0.0.1:6379/0")
ISSUER = "http://127.0.0.1:5000"
REDIRECT = "http://127.0.0.1:9/cb"
STEPS = ["GET /authorize", "POST /login", "GET /login/code", "POST /login/code", "POST /token (code)",
         "GET /userinfo", "POST /introspect", "GET /authorize (SSO)", "POST /token (refresh)"]
LOGIN = STEPS[:5]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tree", help="source tree holding idp/ and migrations/")
    ap.add_argument("--logins", type=int, default=200, help="full logins measured (default 200)")
    ap.add_argument("--limits", choices=["on", "off"], default="off")
    ap.add_argument("--json", dest="json_out", help="also write the medians here")
    ap.add_argument("--profile", metavar="DIR", help="also write a cProfile of each step (pstats files) and print "
                    "each step's self time by package")
    args = ap.parse_args()
    if not 1 <= args.logins <= 5000:
        ap.error("--logins: 1-5000")
    sys.path.insert(0, str(Path(args.tree).resolve()))

    import psycopg
    from redis.connection import AbstractConnection
    from sqlalchemy import event

    import idp
    from idp.citizens.national_id import make_national_id
    from idp.citizens.records import add_citizen
    from idp.platform import keys
    from idp.platform.database import db, upgrade_database
    from idp.platform.settings import load_settings
    from idp.protocol.agencies import register_client

    tmp = Path(tempfile.mkdtemp(prefix="idp-login-cost-"))
    db_name = f"idp_cost_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    prefix = f"idpcost:{uuid.uuid4().hex[:8]}:"
    try:
        settings = load_settings(None, env={}, overrides={
            "server": {"secret_key": secrets.token_urlsafe(48), "issuer": ISSUER},
            "database": {"url": PG_ADMIN.rsplit("/", 1)[0] + "/" + db_name},
            "store": {"url": REDIS_URL, "prefix": prefix}, "keys": {"dir": str(tmp / "keys")},
            "sms": {"backend": "file", "outbox": str(tmp / "outbox.jsonl")},
            "limits": {"enabled": args.limits == "on"}})
        keys.ensure(settings.keys.dir)
        app = idp.create_app(settings)
        logging.getLogger("idp").setLevel(logging.WARNING)  # an audit line per event is no figure
        upgrade_database(app)
        people = []
        with app.app_context():
            client, secret = register_client("Cost", [REDIRECT], scope="openid profile offline_access", trusted=True)
            client_id = client.client_id
            for i in range(args.logins):
                national_id = make_national_id(f"{200000000 + i * 7919 % 799999999:09d}")
                mobile = f"+98935{i:07d}"
                add_citizen(national_id=national_id, mobile=mobile, birth_date="1980-01-01", given_name="Bench",
                            family_name=f"Citizen {i}")
                people.append((national_id, "0" + mobile[3:], mobile))
            engine = db.engine
        with psycopg.connect(PG_ADMIN.rsplit("/", 1)[0] + "/" + db_name) as conn:
            # returning citizens, as in the load benchmark: each logged in once, yesterday
            conn.execute("UPDATE citizens SET first_authenticated_at = now() - interval '1 day', "
                         "last_authenticated_at = now() - interval '1 day', "
                         "first_adult_authenticated_at = now() - interval '1 day'")
            conn.execute("UPDATE stat_counters SET value = (SELECT count(*) FROM citizens) WHERE name = 'unique_adults'")

        counts = {"on": False, "c": Counter(), "step": ""}
        original_send = AbstractConnection.send_packed_command

        main_thread = threading.get_ident()  # the sender thread's work is not a step's

        def send_packed_command(self, *a, **k):
            if counts["on"] and threading.get_ident() == main_thread:
                counts["c"]["store"] += 1
            return original_send(self, *a, **k)

        def statement(conn, cursor, sql, *rest):
            if counts["on"] and threading.get_ident() == main_thread:
                counts["c"]["sql"] += 1
                if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT" and \
                        sql.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
                    counts["c"]["commit"] += 1  # an autocommit write is a commit of its own

        def commit(*a, **k):
            if counts["on"] and threading.get_ident() == main_thread:
                counts["c"]["commit"] += 1

        AbstractConnection.send_packed_command = send_packed_command
        original_command = psycopg.Connection._exec_command

        def exec_command(self, *a, **k):  # BEGIN, COMMIT, ROLLBACK: round trips of their own
            if counts["on"] and threading.get_ident() == main_thread:
                counts["c"]["tx"] += 1
            return original_command(self, *a, **k)

        psycopg.Connection._exec_command = exec_command
        try:  # PostgreSQL's hot statements straight through psycopg (trees since this round)
            from idp.platform import direct as direct_sql
        except ImportError:
            direct_sql = None
        if direct_sql is not None:  # PostgreSQL's hot statements, straight through psycopg
            original_direct = direct_sql.Direct.run

            def direct(self, plan, params, session=None):
                if counts["on"] and threading.get_ident() == main_thread:
                    counts["c"]["sql"] += 1
                    if session is None and plan.sql.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
                        counts["c"]["commit"] += 1  # a write in autocommit commits alone
                return original_direct(self, plan, params, session)

            direct_sql.Direct.run = direct
        event.listen(engine, "before_cursor_execute", statement)
        event.listen(engine, "commit", commit)

        per_step: dict[str, list[tuple[float, int, int, int]]] = {s: [] for s in STEPS}
        auth = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        host = {"Host": urlsplit(ISSUER).netloc}
        outbox = tmp / "outbox.jsonl"

        inner = app.wsgi_app

        profiles: dict[str, cProfile.Profile] = {}

        def timed_app(environ, start_response):  # the app's own CPU, not the test client's
            profile = profiles.setdefault(counts["step"], cProfile.Profile(time.thread_time)) if args.profile else None
            t0 = time.thread_time()
            if profile:
                profile.enable()
            try:
                return inner(environ, start_response)
            finally:
                if profile:
                    profile.disable()
                counts["cpu"] += time.thread_time() - t0

        app.wsgi_app = timed_app

        def measured(step, call):
            counts["step"] = step
            counts["c"] = Counter()
            counts["cpu"] = 0.0
            counts["on"] = True
            response = call()
            counts["on"] = False
            c = counts["c"]
            per_step[step].append((counts["cpu"] * 1000, c["store"], c["sql"], c["commit"], c["sql"] + c["tx"]))
            return response

        def last_code(mobile: str, after: int) -> str:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # the sender thread writes it after the answer
                text = outbox.read_text(encoding="utf-8") if outbox.exists() else ""
                lines = text[:text.rfind("\n") + 1].splitlines()  # not a line the sender is still writing
                for line in reversed(lines[after:]):
                    record = json.loads(line)
                    if record["to"] == mobile:
                        return record["code"]
                time.sleep(0.005)
            raise SystemExit(f"login_cost: no code reached the outbox for {mobile}")

        def form(page) -> tuple[str, str]:
            text = page.get_data(as_text=True)
            action = re.search(r'<form method="post" action="([^"]+)"', text).group(1).replace("&amp;", "&")
            return action, re.search(r'name="csrf_token" value="([^"]+)"', text).group(1)

        for i, (national_id, typed_mobile, mobile) in enumerate(people):
            web = app.test_client()
            web.environ_base["REMOTE_ADDR"] = f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"  # a browser each
            verifier = secrets.token_urlsafe(48)
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()

            def query() -> str:  # a new state and nonce each time (a nonce is single use)
                return urlencode({"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
                                  "scope": "openid profile offline_access", "state": secrets.token_urlsafe(8),
                                  "nonce": secrets.token_urlsafe(8), "code_challenge": challenge,
                                  "code_challenge_method": "S256"})

            page = measured("GET /authorize", lambda: web.get(f"/authorize?{query()}", headers=host))
            assert page.status_code == 200, page.status_code
            action, token = form(page)
            sent = len(outbox.read_text(encoding="utf-8").splitlines()) if outbox.exists() else 0
            r = measured("POST /login", lambda: web.post(action, headers=host, data={
                "csrf_token": token, "national_id": national_id, "mobile": typed_mobile}))
            assert r.status_code == 303, (r.status_code, r.get_data(as_text=True)[:300])
            r.close()  # the answer is out: the sender thread sends the code now (as a server closes it)
            page = measured("GET /login/code", lambda: web.get(r.headers["Location"], headers=host))
            action, token = form(page)
            code = last_code(mobile, sent)
            r = measured("POST /login/code", lambda: web.post(action, headers=host, data={
                "csrf_token": token, "otp": code}))
            assert r.status_code == 303 and r.headers["Location"].startswith(REDIRECT), r.headers.get("Location")
            code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
            r = measured("POST /token (code)", lambda: web.post("/token", headers={**host, "Authorization": auth}, data={
                "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}))
            assert r.status_code == 200, r.get_data(as_text=True)
            tokens = r.get_json()
            r = measured("GET /userinfo", lambda: web.get("/userinfo", headers={
                **host, "Authorization": f"Bearer {tokens['access_token']}"}))
            assert r.status_code == 200
            r = measured("POST /introspect", lambda: web.post("/introspect", headers={**host, "Authorization": auth},
                                                              data={"token": tokens["access_token"]}))
            assert r.get_json()["active"] is True
            r = measured("GET /authorize (SSO)", lambda: web.get(f"/authorize?{query()}", headers=host))
            assert r.status_code in (302, 303) and "code=" in r.headers["Location"]
            r = measured("POST /token (refresh)", lambda: web.post("/token", headers={**host, "Authorization": auth}, data={
                "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}))
            assert r.status_code == 200, r.get_data(as_text=True)

        warm = min(20, args.logins // 4)  # the first logins fill caches and pools
        print(f"{args.tree}: {args.logins} logins (medians of the last {args.logins - warm}), limits {args.limits}, "
              f"PostgreSQL + Redis, in process")
        print(f"{'step':24} {'CPU ms':>7} {'store':>6} {'SQL':>4} {'commits':>8} {'db trips':>9}")
        medians = {}
        for step in STEPS:
            rows = per_step[step][warm:] or per_step[step]
            m = [statistics.median(col) for col in zip(*rows)]
            medians[step] = {"cpu_ms": round(m[0], 3), "store": m[1], "sql": m[2], "commits": m[3], "db_trips": m[4]}
            print(f"{step:24} {m[0]:7.2f} {m[1]:6.0f} {m[2]:4.0f} {m[3]:8.0f} {m[4]:9.0f}")
        total = {k: sum(medians[s][k] for s in LOGIN) for k in ("cpu_ms", "store", "sql", "commits", "db_trips")}
        print(f"{'a login (first 5 steps)':24} {total['cpu_ms']:7.2f} {total['store']:6.0f} {total['sql']:4.0f} "
              f"{total['commits']:8.0f} {total['db_trips']:9.0f}")
        if args.profile:
            print_profiles(profiles, Path(args.profile))
        if args.json_out:
            Path(args.json_out).write_text(json.dumps({"steps": medians, "login": total}, indent=1))
    finally:
        try:
            import redis

            r = redis.Redis.from_url(REDIS_URL)
            for key in r.scan_iter(match=prefix + "*", count=1000):
                r.delete(key)
        except Exception:  # noqa: BLE001
            pass
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


def package_of(filename: str) -> str:
    """The package a function's file belongs to: idp's modules by subpackage, others by top name."""
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins (C)"
    parts = Path(filename).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    if "idp" in parts:
        i = len(parts) - 1 - parts[::-1].index("idp")
        return "/".join(parts[i:i + 2]).removesuffix(".py")
    return "stdlib: " + Path(filename).stem


def print_profiles(profiles: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for step, profile in profiles.items():
        name = re.sub(r"[^a-z]+", "-", step.lower()).strip("-")
        profile.dump_stats(out / f"{name}.pstats")
        stats = pstats.Stats(profile)
        by_package: Counter = Counter()
        for (filename, _line, _func), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
            by_package[package_of(filename)] += tottime
        total = sum(by_package.values()) or 1
        print(f"\n{step}: self time by package ({out / name}.pstats)")
        for package, t in by_package.most_common(12):
            print(f"  {package:34} {100 * t / total:5.1f} %")


if __name__ == "__main__":
    main()
