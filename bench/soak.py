"""Soak: mixed load on loopback against `idp serve` for a long while, watching for slow decay.

    python bench/soak.py                       # ten minutes, 8 clients, 2 workers x 8 threads
    python bench/soak.py --minutes 3 --interval 20
    python bench/soak.py --pg-admin postgresql://postgres@127.0.0.1:5432/postgres --redis redis://127.0.0.1:6379/0

Starts `idp serve` (granian workers) on a fresh PostgreSQL database and a fresh key
prefix in Redis, registers agencies and citizens, then drives a mix of what agencies and people
do: whole logins (authorize -> national ID and mobile -> code from the file outbox -> code ->
token exchange), single sign-on logins, refreshes (rotating), userinfo, introspection,
discovery and JWKS, and logins abandoned half-way (their store records must expire on their
own). Rate limits stay on (generous), so their keys are exercised too.

Every ``--interval`` seconds it prints: requests so far and per second, the 5xx count (must stay
0), transport errors, p50/p99 latency of the interval, the RSS of each worker (must stay
flat), and the number of store keys under the prefix with the number of those WITHOUT a TTL
(must be 0; the documented permanent keys of idp/store.py are listed apart). At the end: a
summary, and exit status 1 when a 5xx was seen, a key without a TTL was found, or a worker's RSS
grew by more than ``--max-growth-mb`` between the end of the warm-up and the end.

Not part of the test suite (it runs for minutes); the duration is bounded (at most 60 minutes).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from tests.helpers import form_action, form_fields, pkce_pair  # noqa: E402
from tests.test_multinode import Deployment, create_database, drop_database, rss_mb  # noqa: E402

MAX_MINUTES = 60
#: Keys idp/store.py documents as permanent (one key each, never growing).
PERMANENT = ("clients-version",)


# ---- the SMS outbox, read incrementally -----------------------------------------------------------

class OutboxTail:
    """The file outbox, read from where it was last read (the file grows for the whole run)."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0
        self.sent: dict[str, list[str]] = {}
        self.lock = threading.Lock()

    def _read(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        for line in data[:end].splitlines():
            if line.strip():
                row = json.loads(line)
                self.sent.setdefault(row["to"], []).append(row["code"])
        self.offset += end

    def count(self, to: str) -> int:
        with self.lock:
            self._read()
            return len(self.sent.get(to, ()))

    def code_after(self, to: str, before: int, timeout: float = 10) -> str | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                self._read()
                codes = self.sent.get(to, [])
                if len(codes) > before:
                    return codes[-1]
            time.sleep(0.02)
        return None


# ---- counting every request ------------------------------------------------------------------------

class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.by_class: dict[str, int] = {}
        self.five_xx: list[str] = []
        self.errors: list[str] = []
        self.latencies: list[float] = []
        self.ops: dict[str, int] = {}

    def hook(self, response, *args, **kwargs):
        with self.lock:
            self.requests += 1
            cls = f"{response.status_code // 100}xx"
            self.by_class[cls] = self.by_class.get(cls, 0) + 1
            self.latencies.append(response.elapsed.total_seconds())
            if response.status_code >= 500:
                self.five_xx.append(f"{response.request.method} {urlsplit(response.url).path} "
                                    f"-> {response.status_code}")
        return response

    def error(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)

    def done(self, op: str) -> None:
        with self.lock:
            self.ops[op] = self.ops.get(op, 0) + 1

    def take_latencies(self) -> list[float]:
        with self.lock:
            out, self.latencies = self.latencies, []
        return out


class Failed(Exception):
    """A step did not go as the protocol says (counted; the client goes on)."""


# ---- one simulated client (an agency's users and its back end) --------------------------------------

class Client:
    def __init__(self, base: str, host: str, agencies: list[tuple[str, str, str]],
                 people: list[tuple[str, str]], outbox: OutboxTail, tally: Tally):
        self.base, self.host, self.agencies, self.people = base, host, agencies, people
        self.outbox, self.tally = outbox, tally
        self.tokens: list[tuple[tuple[str, str, str], dict]] = []  # (agency, token response)
        self.browsers: list[requests.Session] = []  # browsers with an SSO session

    def session(self) -> requests.Session:
        http = requests.Session()
        http.headers["Host"] = self.host
        http.hooks["response"].append(self.tally.hook)
        return http

    # -- steps --
    def _authorize(self, http, agency, scope="openid profile offline_access"):
        verifier, challenge = pkce_pair()
        params = {"response_type": "code", "client_id": agency[0], "redirect_uri": agency[2], "scope": scope,
                  "state": os.urandom(6).hex(), "nonce": os.urandom(6).hex(), "code_challenge": challenge,
                  "code_challenge_method": "S256"}
        r = http.get(f"{self.base}/authorize", params=params, allow_redirects=False, timeout=15)
        return self._follow(http, r, agency[2]), verifier

    def _follow(self, http, r, stop):
        for _ in range(10):
            if not r.is_redirect:
                return r
            location = urljoin(r.url, r.headers["Location"])
            if location.startswith(stop):
                return r
            r = http.get(location, allow_redirects=False, timeout=15)
        raise Failed("redirect loop")

    def _submit(self, http, page, data):
        fields = form_fields(page.text)
        fields.update(data)
        return http.post(form_action(page.text, page.url), data=fields, allow_redirects=False, timeout=15)

    def _code_of(self, r, agency) -> str:
        if not (r.is_redirect and r.headers["Location"].startswith(agency[2])):
            raise Failed(f"no redirect to the agency ({r.status_code})")
        query = parse_qs(urlsplit(r.headers["Location"]).query)
        if "code" not in query:
            raise Failed(f"error at the agency: {query.get('error')}")
        return query["code"][0]

    def _exchange(self, agency, code, verifier):
        r = self.session().post(f"{self.base}/token", auth=agency[:2], timeout=15, data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": agency[2], "code_verifier": verifier})
        if r.status_code != 200:
            raise Failed(f"token exchange {r.status_code}")
        self.tokens.append((agency, r.json()))
        del self.tokens[:-20]

    def login(self, abandon: bool = False) -> None:
        agency = random.choice(self.agencies)
        national_id, mobile = random.choice(self.people)
        http = self.session()
        page, verifier = self._authorize(http, agency)
        if 'name="national_id"' not in page.text:
            raise Failed(f"no identify form ({page.status_code})")
        before = self.outbox.count(mobile)
        page = self._follow(http, self._submit(http, page, {"national_id": national_id, "mobile": mobile}), agency[2])
        if 'name="otp"' not in page.text:
            raise Failed(f"no code form ({page.status_code})")
        if abandon:
            return  # the request, the challenge and its limits stay in the store until they expire
        code = self.outbox.code_after(mobile, before)
        if code is None:
            raise Failed("no SMS")
        done = self._follow(http, self._submit(http, page, {"otp": code}), agency[2])
        self._exchange(agency, self._code_of(done, agency), verifier)
        self.browsers.append(http)
        del self.browsers[:-5]

    def sso(self) -> None:
        if not self.browsers:
            return self.login()
        http = random.choice(self.browsers)
        agency = random.choice(self.agencies)
        r, verifier = self._authorize(http, agency)
        if not r.is_redirect:  # the session ended (rotated away by a newer login of the browser)
            self.browsers.remove(http)
            return None
        self._exchange(agency, self._code_of(r, agency), verifier)
        return None

    def refresh(self) -> None:
        if not self.tokens:
            return self.login()
        i = random.randrange(len(self.tokens))
        agency, body = self.tokens[i]
        r = self.session().post(f"{self.base}/token", auth=agency[:2], timeout=15,
                                data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]})
        if r.status_code != 200:
            del self.tokens[i]
            raise Failed(f"refresh {r.status_code}")
        self.tokens[i] = (agency, r.json())
        return None

    def userinfo(self) -> None:
        if not self.tokens:
            return self.login()
        _, body = random.choice(self.tokens)
        r = self.session().get(f"{self.base}/userinfo", timeout=15,
                               headers={"Authorization": f"Bearer {body['access_token']}"})
        if r.status_code not in (200, 401):  # 401: its session was replaced and ended meanwhile
            raise Failed(f"userinfo {r.status_code}")
        return None

    def introspect(self) -> None:
        if not self.tokens:
            return self.login()
        agency, body = random.choice(self.tokens)
        r = self.session().post(f"{self.base}/introspect", auth=agency[:2], timeout=15,
                                data={"token": body["access_token"]})
        if r.status_code != 200:
            raise Failed(f"introspect {r.status_code}")
        return None

    def discovery(self) -> None:
        http = self.session()
        for path in ("/.well-known/openid-configuration", "/jwks"):
            r = http.get(f"{self.base}{path}", timeout=15)
            if r.status_code != 200:
                raise Failed(f"{path} {r.status_code}")

    MIX = (("login", 14), ("sso", 8), ("refresh", 20), ("userinfo", 30), ("introspect", 8), ("discovery", 15),
           ("abandon", 5))

    def run(self, stop: threading.Event) -> None:
        names = [n for n, _ in self.MIX]
        weights = [w for _, w in self.MIX]
        while not stop.is_set():
            op = random.choices(names, weights)[0]
            try:
                if op == "abandon":
                    self.login(abandon=True)
                else:
                    getattr(self, op)()
                self.tally.done(op)
            except Failed as exc:
                self.tally.error(f"{op}: {exc}")
            except requests.RequestException as exc:
                self.tally.error(f"{op}: {exc.__class__.__name__}")


# ---- watching the store and the workers --------------------------------------------------------------

def store_keys(redis_url: str, prefix: str, kinds: dict[str, int] | None = None) -> tuple[int, int, list[str]]:
    """(keys under the prefix, keys without a TTL, the permanent keys found); ``kinds`` is filled
    with the count per kind of key (its first segment: req, otp, sess, code-used, rl, ...)."""
    import redis

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    total, no_ttl, permanent = 0, 0, []
    batch: list[str] = []

    def check(keys):
        nonlocal no_ttl
        pipe = r.pipeline(transaction=False)
        for k in keys:
            pipe.ttl(k)
        for k, ttl in zip(keys, pipe.execute()):
            if ttl == -1:
                if k[len(prefix):] in PERMANENT:
                    permanent.append(k[len(prefix):])
                else:
                    no_ttl += 1

    for key in r.scan_iter(match=prefix + "*", count=1000):
        total += 1
        if kinds is not None:
            kind = key[len(prefix):].split(":", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + 1
        batch.append(key)
        if len(batch) == 500:
            check(batch)
            batch = []
    if batch:
        check(batch)
    return total, no_ttl, permanent


def store_bytes(redis_url: str, prefix: str, kinds: dict[str, int], sample: int = 200) -> float:
    """Estimated bytes held by the prefix's keys: MEMORY USAGE of up to ``sample`` keys per kind."""
    import redis

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    total = 0.0
    for kind, count in kinds.items():
        keys = []
        for key in r.scan_iter(match=f"{prefix}{kind}*", count=1000):
            if key[len(prefix):].split(":", 1)[0] == kind:
                keys.append(key)
            if len(keys) >= sample:
                break
        sizes = [r.memory_usage(k) or 0 for k in keys]
        if sizes:
            total += statistics.mean(sizes) * count
    return total


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help=f"duration (at most {MAX_MINUTES})")
    ap.add_argument("--interval", type=float, default=30.0, help="seconds between reports")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds before the RSS baseline is taken")
    ap.add_argument("--clients", type=int, default=8, help="concurrent simulated clients")
    ap.add_argument("--workers", type=int, default=2, help="worker processes")
    ap.add_argument("--threads", type=int, default=8, help="threads per worker")
    ap.add_argument("--citizens", type=int, default=400)
    ap.add_argument("--max-growth-mb", type=float, default=15.0, help="tolerated RSS growth per worker")
    ap.add_argument("--pg-admin", default=os.environ.get("IDP_TEST_PG_ADMIN",
                                                         "postgresql://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--redis", default=os.environ.get("IDP_TEST_REDIS", "redis://127.0.0.1:6379/0"))
    args = ap.parse_args(argv)
    if not 0 < args.minutes <= MAX_MINUTES:
        ap.error(f"--minutes must be in (0, {MAX_MINUTES}]")
    args.warmup = min(args.warmup, args.minutes * 60 / 3)

    db_url = create_database(args.pg_admin)
    tmp = Path(tempfile.mkdtemp(prefix="idp-soak-"))
    dep = Deployment(tmp, db_url, args.redis, workers=args.workers, threads=args.threads)
    tally = Tally()
    stop = threading.Event()
    failed = False
    try:
        node = dep.start_node()
        agencies = [dep.add_client(name=f"Soak agency {i}", scope="openid profile offline_access") for i in range(3)]
        people = [dep.add_citizen(birth_date=random.choice(["1960-01-01", "1990-05-05", "2012-03-03"]))
                  for _ in range(args.citizens)]
        outbox = OutboxTail(dep.outbox.path)
        share = max(1, len(people) // args.clients)
        clients = [Client(node.url, dep.issuer_host, agencies, people[i * share:(i + 1) * share], outbox, tally)
                   for i in range(args.clients)]  # own people per client: each code is read by its browser
        print(f"soak: {args.minutes:g} min, {args.clients} clients, idp serve {args.workers} workers x "
              f"{args.threads} threads on {node.url}; PostgreSQL {db_url.rsplit('/', 1)[1]}, Redis prefix "
              f"{dep.prefix}; {platform.node()}, {os.cpu_count()} CPUs, {dt.datetime.now():%Y-%m-%d %H:%M}",
              flush=True)
        print(f"{'t(s)':>6} {'requests':>9} {'req/s':>6} {'5xx':>4} {'errors':>6} {'p50ms':>6} {'p99ms':>7} "
              f"{'keys':>6} {'noTTL':>5}  workers RSS MB", flush=True)
        threads = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in clients]
        for t in threads:
            t.start()
        started = time.monotonic()
        end = started + args.minutes * 60
        last_requests, last_t = 0, started
        baseline: dict[int, float] = {}
        rows = []
        max_no_ttl = 0
        while True:
            now = time.monotonic()
            time.sleep(max(0.0, min(args.interval, end - now)))
            now = time.monotonic()
            lat = tally.take_latencies()
            workers = node.workers()
            rss = {pid: rss_mb(pid) for pid in workers}
            if not baseline and now - started >= args.warmup:
                baseline = dict(rss)
            keys, no_ttl, permanent = store_keys(args.redis, dep.prefix)
            max_no_ttl = max(max_no_ttl, no_ttl)
            with tally.lock:
                total, five, errors = tally.requests, len(tally.five_xx), len(tally.errors)
            rate = (total - last_requests) / max(now - last_t, 1e-6)
            last_requests, last_t = total, now
            rows.append({"t": round(now - started), "requests": total, "rps": round(rate, 1), "5xx": five,
                         "errors": errors, "keys": keys, "no_ttl": no_ttl, "rss": rss})
            print(f"{now - started:6.0f} {total:9d} {rate:6.1f} {five:4d} {errors:6d} {pct(lat, 50):6.1f} "
                  f"{pct(lat, 99):7.1f} {keys:6d} {no_ttl:5d}  "
                  + " ".join(f"{pid}:{mb:.1f}" for pid, mb in rss.items()), flush=True)
            if now >= end:
                break
        stop.set()
        for t in threads:
            t.join(30)
        final = rows[-1]["rss"]
        growth = {pid: final.get(pid, 0) - mb for pid, mb in baseline.items()}
        respawned = set(final) != set(rows[0]["rss"])
        print("\nsummary")
        print(f"  requests {tally.requests} in {args.minutes:g} min ({tally.requests / (args.minutes * 60):.1f}/s); "
              f"by class {dict(sorted(tally.by_class.items()))}")
        print(f"  operations {dict(sorted(tally.ops.items()))}")
        print(f"  5xx {len(tally.five_xx)}{': ' + '; '.join(tally.five_xx[:5]) if tally.five_xx else ''}")
        if tally.errors:
            kinds: dict[str, int] = {}
            for e in tally.errors:
                kinds[e] = kinds.get(e, 0) + 1
            print(f"  client-side failures {len(tally.errors)}: {dict(sorted(kinds.items(), key=lambda kv: -kv[1])[:6])}")
        kinds: dict[str, int] = {}
        store_keys(args.redis, dep.prefix, kinds)
        size = store_bytes(args.redis, dep.prefix, kinds)
        logins = tally.ops.get("login", 0) + tally.ops.get("sso", 0)
        print(f"  store keys under the prefix: first {rows[0]['keys']}, last {rows[-1]['keys']}, "
              f"max without TTL {max_no_ttl}; permanent keys: {', '.join(sorted(set(permanent))) or 'none'}")
        print(f"  keys by kind at the end (each with its TTL): {dict(sorted(kinds.items(), key=lambda kv: -kv[1]))}")
        print(f"  store memory of those keys (MEMORY USAGE, sampled): about {size / 1e6:.1f} MB, "
              f"{size / max(logins, 1):.0f} bytes per login (logins and SSO logins: {logins})")
        print("  worker RSS MB after warm-up -> end: " + ", ".join(
            f"{pid}: {baseline[pid]:.1f} -> {final.get(pid, 0):.1f} ({growth[pid]:+.1f})" for pid in baseline)
              + ("  (workers were replaced)" if respawned else ""))
        mean_rps = statistics.mean(r["rps"] for r in rows) if rows else 0
        print(f"  mean throughput {mean_rps:.1f} req/s")
        failed = bool(tally.five_xx) or max_no_ttl > 0 or respawned or any(
            g > args.max_growth_mb for g in growth.values())
        if node.tracebacks():
            failed = True
            print(f"  the provider logged {len(node.tracebacks())} traceback(s); see {node.log}")
        print("  result: " + ("FAIL" if failed else "PASS"))
    finally:
        stop.set()
        dep.stop()
        dep.forget_store_keys()
        drop_database(db_url, args.pg_admin)
        if failed:
            print(f"  (the provider's log and outbox are kept in {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
