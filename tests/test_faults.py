"""Faults, against `idp serve` (granian workers) as in production: Redis stopped in the middle of
a login, PostgreSQL restarted and stopped, a slow SMS gateway, workers killed while
requests are in flight, and a process dying between two store calls.

The Redis and PostgreSQL that are stopped here are the test's own (a redis-server on a free
port, a PostgreSQL cluster made with initdb in a temporary directory): the shared ones at
:6379 and :5432 are never touched.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import random
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis as redis_lib
import requests

from .conftest import GENEROUS_IP_LIMITS, need
from .ha import PrivatePostgres, pg_bindir
from .helpers import FlowClient, free_port, redirect_params, verify_id_token, wait_until
from .test_multinode import (
    Deployment,
    assert_no_tracebacks,
    create_database,
    exchange,
    login_for_code,
    token_request,
)

UNAVAILABLE_FA = "موقتاً در دسترس نیست"
UNAVAILABLE_EN = "Temporarily unavailable"


# ---- a Redis and a PostgreSQL of the test's own ---------------------------------------------------

class PrivateRedis:
    """redis-server on a free loopback port, without persistence: stopping it loses everything."""

    def __init__(self, tmp: Path):
        self.port, self.tmp, self.proc = free_port(), tmp, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(self.tmp)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        client = redis_lib.Redis(port=self.port, socket_connect_timeout=1)
        assert wait_until(lambda: self._pings(client), 10), "private redis-server did not start"

    @staticmethod
    def _pings(client) -> bool:
        try:
            return client.ping()
        except redis_lib.RedisError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture()
def private_redis(tmp_path):
    if not shutil.which("redis-server"):
        need("Redis", "redis-server is not installed (a Redis of the test's own is stopped and started)")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def private_postgres():
    bindir = pg_bindir()
    if bindir is None or (os.geteuid() == 0 and not shutil.which("runuser")):
        need("PostgreSQL", "initdb/pg_ctl are not installed (a PostgreSQL of the test's own is restarted)")
    server = PrivatePostgres(bindir)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


# ---- helpers ------------------------------------------------------------------------------------

def _to_code_page(node, client, national_id: str, mobile: str) -> tuple[FlowClient, requests.Response, str]:
    """A person who has asked for a code and is looking at the code page; returns the code too."""
    browser = node.flow()
    page = browser.start(client[0], client[2])
    sent = len(node.outbox.messages(mobile))
    page = browser.follow(browser.submit(page, {"national_id": national_id, "mobile": mobile}), client[2])
    assert page.status_code == 200 and 'name="otp"' in page.text, page.text[:300]
    return browser, page, node.outbox.last_code(mobile, after=sent)


def _assert_unavailable_page(response: requests.Response, text: str = UNAVAILABLE_FA) -> None:
    assert response.status_code == 503, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("text/html")
    assert text in response.text and "temporarily_unavailable" in response.text
    assert "Traceback" not in response.text and "Location" not in response.headers
    assert response.headers.get("Retry-After")


def _assert_unavailable_json(response: requests.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"] == "temporarily_unavailable"
    assert response.headers["Cache-Control"] == "no-store" and response.headers.get("Retry-After")


def _healthy(node) -> bool:
    try:
        return requests.get(f"{node.url}/healthz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


class Background:
    """Steady traffic on a node while a fault happens; records every status (and transport error)."""

    def __init__(self, node, client, access_token: str, threads: int = 3):
        self.node, self.client, self.access_token = node, client, access_token
        self.statuses: list[tuple[str, int]] = []
        self.errors: list[str] = []
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        http = self.node.session()
        url = self.node.url
        calls = [
            ("userinfo", lambda: http.get(f"{url}/userinfo", timeout=10,
                                          headers={"Authorization": f"Bearer {self.access_token}"})),
            ("authorize", lambda: (lambda b: b.get(b.authorize_url(self.client[0], self.client[2])))(
                FlowClient(self.node))),
            ("token", lambda: token_request(url, self.client, http, grant_type="authorization_code",
                                            code="not-a-code", redirect_uri=self.client[2], code_verifier="x" * 43)),
            ("discovery", lambda: http.get(f"{url}/.well-known/openid-configuration", timeout=10)),
        ]
        while not self.stopped.is_set():
            name, call = random.choice(calls)
            try:
                self.statuses.append((name, call().status_code))
            except requests.RequestException as exc:
                self.errors.append(f"{name}: {exc.__class__.__name__}")
            time.sleep(0.01)  # paces the load on a real `idp serve` process

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        for t in self.threads:
            t.join(20)


# ---- Redis stopped in the middle of a login ---------------------------------------------------------

def test_redis_stopped_mid_login_gives_503_issues_nothing_and_recovers(tmp_path, fresh_database, private_redis):
    dep = Deployment(tmp_path / "dep", fresh_database, private_redis.url, workers=2, threads=4)
    try:
        node = dep.start_node()
        workers = node.workers()
        client = dep.add_client()
        national_id, mobile = dep.add_citizen()
        early_browser, early = login_for_code(node, client, national_id, mobile)  # a code not yet redeemed
        other_id, other_mobile = dep.add_citizen()
        browser, code_page, otp = _to_code_page(node, client, other_id, other_mobile)

        private_redis.stop()

        # The person submits the right code: a clear, localized page, and no redirect with a code.
        answer = browser.submit(code_page, {"otp": otp})
        _assert_unavailable_page(answer)
        _assert_unavailable_page(browser.get(code_page.url + "&lang=en"), UNAVAILABLE_EN)
        # The protocol endpoints answer JSON; the code is not exchanged for tokens.
        _assert_unavailable_json(exchange(node, client, early_browser, early["code"]))
        assert requests.get(f"{node.url}/healthz", timeout=10).status_code == 503
        # Discovery and the JWKS need neither service: agencies keep verifying tokens already issued.
        for path in ("/.well-known/openid-configuration", "/jwks"):
            assert requests.get(f"{node.url}{path}", timeout=10).status_code == 200
        rows = dep.query("SELECT c.first_authenticated_at, (SELECT count(*) FROM auth_events e "
                         "WHERE e.citizen_id = c.id) FROM citizens c WHERE c.national_id = :nid", nid=other_id)
        assert rows == [(None, 0)], "nothing recorded for a login that did not finish"
        assert dep.query("SELECT count(*) FROM refresh_tokens WHERE client_id = :c", c=client[0])[0][0] == 0

        private_redis.start()  # same port, empty: what the store held is lost

        assert wait_until(lambda: _healthy(node), 20), "the provider did not recover by itself"
        assert node.proc.poll() is None and node.workers() == workers, "recovered without a restart"
        # What was in flight is gone, and nothing is issued from it.
        again = browser.submit(code_page, {"otp": otp})
        assert again.status_code in (400, 410) and "code=" not in again.headers.get("Location", "")
        late = exchange(node, client, early_browser, early["code"])
        assert late.status_code == 400 and late.json()["error"] == "invalid_grant"
        # A new login completes in the same processes.
        fresh, params = login_for_code(node, client, other_id, other_mobile)
        token = exchange(node, client, fresh, params["code"])
        assert token.status_code == 200, token.text
        verify_id_token(node.url, token.json()["id_token"])
        assert node.workers() == workers
        assert_no_tracebacks(dep)
    finally:
        dep.stop()


# ---- PostgreSQL restarted, then stopped and started -------------------------------------------------

def test_postgres_restart_gives_503_for_the_moment_and_recovers_without_a_restart(tmp_path, redis_url,
                                                                                   private_postgres):
    dep = Deployment(tmp_path / "dep", create_database(private_postgres.admin_url), redis_url, workers=2, threads=4)
    try:
        node = dep.start_node()
        workers = node.workers()
        client = dep.add_client(scope="openid profile offline_access")
        national_id, mobile = dep.add_citizen()
        browser, params = login_for_code(node, client, national_id, mobile, scope="openid profile offline_access")
        tokens = exchange(node, client, browser, params["code"]).json()
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        http = node.session()

        def userinfo():
            return http.get(f"{node.url}/userinfo", headers=bearer, timeout=10).status_code

        with cf.ThreadPoolExecutor(8) as pool:  # every worker's pool holds connections now
            assert set(pool.map(lambda _: userinfo(), range(40))) == {200}

        with Background(node, client, tokens["access_token"]) as load:
            # 1. A restart under traffic: every pooled connection dies, and pool_pre_ping replaces
            # each before use, so the first requests after it succeed.
            private_postgres.restart()
            with cf.ThreadPoolExecutor(8) as pool:
                first = list(pool.map(lambda _: userinfo(), range(16)))
            assert first == [200] * 16, first
            assert _healthy(node)

            # 2. Down for a while: clean 503s, a page for people and JSON for the protocol.
            waiting, code_page, otp = _to_code_page(node, client, national_id, mobile)
            private_postgres.stop()
            time.sleep(0.5)  # real time: the outage must be seen by a separate `idp serve` process and its pool
            _assert_unavailable_page(waiting.submit(code_page, {"otp": otp}))
            newcomer = node.flow()
            page = newcomer.start(client[0], client[2])  # clients may be cached: the form may still show
            if page.status_code == 200:
                page = newcomer.submit(page, {"national_id": national_id, "mobile": mobile})
            _assert_unavailable_page(page)
            _assert_unavailable_json(http.get(f"{node.url}/userinfo", headers=bearer, timeout=10))
            refresh = token_request(node.url, client, http, grant_type="refresh_token",
                                    refresh_token=tokens["refresh_token"])
            _assert_unavailable_json(refresh)
            assert requests.get(f"{node.url}/healthz", timeout=10).status_code == 503
            time.sleep(1)  # real time: PostgreSQL stays down while the separate node keeps answering

            private_postgres.start()
            # 3. Back at once, in the same processes.
            assert _healthy(node)
            assert userinfo() == 200
            # The refresh that failed for the outage changed nothing: the same token still works.
            refreshed = token_request(node.url, client, http, grant_type="refresh_token",
                                      refresh_token=tokens["refresh_token"])
            assert refreshed.status_code == 200, refreshed.text
            again, params = login_for_code(node, client, national_id, mobile)
            assert exchange(node, client, again, params["code"]).status_code == 200
            time.sleep(0.5)  # real time: the node's pool settles after PostgreSQL is back

        statuses = {status for _, status in load.statuses}
        assert load.statuses and not load.errors, load.errors[:5]
        odd = sorted({(name, status) for name, status in load.statuses if status not in (200, 303, 400, 503)})
        assert not odd, f"{odd}; the provider logged: {node.tracebacks()[:1]}"
        assert 503 in statuses, "the outage was seen"
        assert {status for name, status in load.statuses if name == "discovery"} == {200}
        assert node.proc.poll() is None and node.workers() == workers
        assert_no_tracebacks(dep)
    finally:
        dep.stop()
        dep.forget_store_keys()


# ---- a slow SMS gateway -----------------------------------------------------------------------------

def test_a_gateway_slower_than_the_timeout_gives_a_clear_page_and_keeps_the_challenge(make_provider, gateway):
    import json

    gateway.reply((200, {"ok": True}, 3.0))  # accepts, but only after 3 s; the timeout is 0.4 s
    provider = make_provider(sms={"backend": "http", "http_provider": "webhook", "http_url": gateway.url + "/sms",
                                  "http_retries": 1, "http_timeout_ms": 400}, limits=GENEROUS_IP_LIMITS)
    client_id, secret, redirect = provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    page = browser.start(client_id, redirect)
    started = time.monotonic()
    answer = browser.submit(page, {"national_id": national_id, "mobile": mobile})
    assert answer.status_code == 303
    assert time.monotonic() - started < 1.5, "the person's request never waits for the gateway"
    code_url = provider.url + answer.headers["Location"]
    assert wait_until(lambda: len(gateway.requests) >= 2, 5), "one try and one retry, each timed out"

    seen: list[requests.Response] = []

    def failed_page() -> bool:
        seen.append(browser.get(code_url))
        return seen[-1].status_code == 503

    assert wait_until(failed_page, 5), seen[-1].status_code
    failed = seen[-1]
    assert "sms_unavailable" in failed.text and "ارسال پیامک ممکن نشد" in failed.text
    assert 'name="otp"' not in failed.text and "Traceback" not in failed.text
    # "Try again" sends the code again, on the same login (a link back to the code page would
    # only show this page again while the challenge says the send failed).
    assert f'action="/login/resend?{code_url.split("?")[1]}"' in failed.text, "a resend, on the same login"
    # The challenge is kept: once the gateway is quick again, a resend (no wait after a failure)
    # on the same login delivers a code that completes it.
    gateway.reply((200, {"ok": True}))
    before = len(gateway.requests)
    retry = browser.submit(failed, {})
    assert retry.status_code == 303, retry.text[:300]
    assert wait_until(lambda: any(b'"code"' in r["body"] for r in gateway.requests[before:]), 5)
    code = json.loads(next(r["body"] for r in gateway.requests[before:] if b'"code"' in r["body"]))["code"]
    page = browser.follow(retry, redirect)
    assert 'name="otp"' in page.text
    done = browser.follow(browser.submit(page, {"otp": code}), redirect)
    assert browser.exchange(client_id, secret, redirect, redirect_params(done, redirect)["code"]).status_code == 200


# ---- workers killed while requests are in flight ---------------------------------------------------

KILLS = 5


def PERMANENT_KEYS(dep: Deployment) -> set[str]:  # noqa: N802
    """The store's documented keys without a TTL (idp/store.py): one key each, never growing."""
    return {dep.prefix + "clients-version"}


def _invariants(dep: Deployment) -> None:
    """What a killed worker must never leave behind, in the database and in the store."""
    # Every recorded authentication has its citizen's timestamps, and no timestamps lack an event.
    bad = dep.query("""
        SELECT c.id FROM citizens c JOIN auth_events e ON e.citizen_id = c.id
        GROUP BY c.id, c.first_authenticated_at, c.last_authenticated_at, c.first_adult_authenticated_at
        HAVING c.first_authenticated_at IS NULL OR c.last_authenticated_at IS NULL
            OR c.first_authenticated_at > min(e.occurred_at) OR c.last_authenticated_at < max(e.occurred_at)
            OR (bool_or(e.adult) AND (c.first_adult_authenticated_at IS NULL
                                      OR c.first_adult_authenticated_at > min(e.occurred_at) FILTER (WHERE e.adult)))
    """)
    assert not bad, f"citizens whose timestamps disagree with their auth events: {bad}"
    orphans = dep.query("SELECT count(*) FROM citizens c WHERE c.first_authenticated_at IS NOT NULL "
                        "AND NOT EXISTS (SELECT 1 FROM auth_events e WHERE e.citizen_id = c.id)")[0][0]
    assert orphans == 0, "timestamps written without their auth event"
    counter = dep.query("SELECT value FROM stat_counters WHERE name = 'unique_adults'")[0][0]
    adults = dep.query("SELECT count(*) FROM citizens WHERE first_adult_authenticated_at IS NOT NULL")[0][0]
    assert counter == adults, f"unique-adult counter {counter} != {adults} citizens counted"
    live = dep.query("SELECT family_id, count(*) FROM refresh_tokens WHERE rotated_at IS NULL "
                     "AND revoked_at IS NULL GROUP BY family_id HAVING count(*) > 1")
    assert not live, f"refresh token families with two live tokens: {live}"

    r = redis_lib.Redis.from_url(dep.store_url, decode_responses=True)
    keys = list(r.scan_iter(match=dep.prefix + "*", count=1000))
    no_ttl = [k for k in keys if r.ttl(k) == -1 and k not in PERMANENT_KEYS(dep)]
    assert not no_ttl, f"store keys without a TTL: {no_ttl[:5]}"
    codes = {k.rsplit(":", 1)[1] for k in keys if k.startswith(dep.prefix + "code:")}
    used = {k.rsplit(":", 1)[1] for k in keys if k.startswith(dep.prefix + "code-used:")}
    assert not codes & used, "a code both redeemed and still redeemable"
    for key in (k for k in keys if k.startswith(dep.prefix + "otp:")):
        fields = r.hgetall(key)
        missing = {"code_hash", "citizen_id", "to", "kind", "state", "send_id", "sent_at", "attempts"} - set(fields)
        assert not fields or not missing, f"half-made challenge {key}: lacks {missing}"


def test_workers_killed_mid_request_leave_no_partial_write(tmp_path, fresh_database, redis_url):
    dep = Deployment(tmp_path / "dep", fresh_database, redis_url, workers=3, threads=4)
    try:
        node = dep.start_node()
        client = dep.add_client(scope="openid profile offline_access")
        people = [dep.add_citizen(birth_date=random.choice(["1970-01-01", "2001-06-06", "2015-02-02"]))
                  for _ in range(60)]
        stop = threading.Event()
        outcomes = {"ok": 0, "failed": 0, "5xx": []}
        lock = threading.Lock()

        def one_login(national_id: str, mobile: str) -> None:
            browser = node.flow()
            page = browser.start(client[0], client[2], scope="openid profile offline_access")
            sent = len(node.outbox.messages(mobile))
            page = browser.follow(browser.submit(page, {"national_id": national_id, "mobile": mobile}), client[2])
            if page.status_code >= 500:
                raise RuntimeError(f"5xx {page.status_code}")
            otp = node.outbox.last_code(mobile, after=sent, timeout=3)
            done = browser.follow(browser.submit(page, {"otp": otp}), client[2])
            if done.status_code >= 500:
                raise RuntimeError(f"5xx {done.status_code}")
            token = exchange(node, client, browser, redirect_params(done, client[2])["code"])
            if token.status_code >= 500:
                raise RuntimeError(f"5xx {token.status_code}")
            body = token.json()
            refreshed = token_request(node.url, client, node.session(), grant_type="refresh_token",
                                      refresh_token=body["refresh_token"])
            if refreshed.status_code >= 500:
                raise RuntimeError(f"5xx {refreshed.status_code}")

        def hammer(mine: list[tuple[str, str]]) -> None:
            while not stop.is_set():
                national_id, mobile = random.choice(mine)  # each thread has its own people (own outbox lines)
                try:
                    one_login(national_id, mobile)
                    with lock:
                        outcomes["ok"] += 1
                except RuntimeError as exc:
                    with lock:
                        outcomes["5xx"].append(str(exc))
                except (requests.RequestException, AssertionError, KeyError, ValueError):
                    with lock:
                        outcomes["failed"] += 1  # the connection died with its worker: the client retries

        threads = [threading.Thread(target=hammer, args=(people[i::6],), daemon=True) for i in range(6)]
        for t in threads:
            t.start()
        killed: set[int] = set()
        try:
            time.sleep(1.0)  # real time: the load reaches the workers of a real `idp serve` before kills
            for _ in range(KILLS):
                time.sleep(random.uniform(0.3, 1.2))  # real time: workers are killed at random moments of real load
                # a worker killed a moment ago may not be replaced yet: wait for a live one to kill
                assert wait_until(lambda: [w for w in node.workers() if w not in killed], 30), \
                    "no live worker to kill"
                victim = random.choice([w for w in node.workers() if w not in killed])
                os.kill(victim, signal.SIGKILL)
                killed.add(victim)
            assert wait_until(lambda: len([w for w in node.workers() if w not in killed]) == 3, 30), \
                "idp serve did not replace the killed workers"
            time.sleep(1.5)  # service goes on with the new workers under the same load
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        print(f"workers killed: {len(killed)}; logins completed: {outcomes['ok']}, "
              f"cut off with their worker: {outcomes['failed']}")
        assert len(killed) == KILLS and not set(node.workers()) & killed
        assert node.proc.poll() is None
        assert not outcomes["5xx"], outcomes["5xx"][:5]
        assert outcomes["ok"] > 0, outcomes

        # After the dust settles (queued SMS of killed workers are simply lost), nothing is half done...
        time.sleep(0.5)  # real time: killed workers' in-flight work settles in other processes
        _invariants(dep)
        # ...and service continues on the new workers.
        national_id, mobile = dep.add_citizen()
        browser, params = login_for_code(node, client, national_id, mobile)
        assert exchange(node, client, browser, params["code"]).status_code == 200
        assert_no_tracebacks(dep)
    finally:
        dep.stop()
        dep.forget_store_keys()


# ---- a process dying between two store calls -------------------------------------------------------

def test_a_process_dying_between_two_store_calls_leaves_no_key_without_a_ttl(redis_url):
    """A challenge that has just ended (used, expired) is touched by a late request: its fields are
    written and then the accidental key deleted. If the process dies between the two calls (here:
    the second call fails), the key must still expire on its own."""
    from idp.platform.store import Store

    store = Store(redis_url, f"idptest:{uuid.uuid4().hex[:8]}:")

    class Died(Exception):
        pass

    def dies(*_a, **_kw):
        raise Died()

    store.redis.delete = dies  # the process is gone before its clean-up call
    try:
        for call in (lambda: store.attempt_challenge("ended-1"),
                     lambda: store.update_challenge("ended-2", {"state": "sent"}),
                     lambda: store.update_challenge("ended-3", {"state": "queued"}, ttl=120)):
            try:
                call()
            except Died:
                pass
        keys = list(store.redis.scan_iter(match=store.prefix + "*"))
        assert keys, "the fault was injected"
        assert all(store.redis.ttl(k) > 0 for k in keys), {k: store.redis.ttl(k) for k in keys}
    finally:
        del store.redis.delete
        for k in store.redis.scan_iter(match=store.prefix + "*"):
            store.redis.delete(k)
