"""Failover of the engines under login traffic, against `idp serve` nodes as in production: the
store's Redis primary killed under Redis Sentinel.

The servers that fail here are the test's own (tests/ha.py, free loopback ports); the shared
ones are never touched. Each test prints its window and counts.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field

import psycopg
import pytest
import redis as redis_lib
import requests

from .conftest import need
from .ha import PostgresPair, RedisSentinelSet, pg_bindir
from .helpers import mobile_e164, redirect_params, run_idp, wait_until
from .test_multinode import Deployment, assert_no_tracebacks, exchange, token_request

UNAVAILABLE = "temporarily_unavailable"


@pytest.fixture
def sentinel_set(tmp_path):
    try:
        servers = RedisSentinelSet(tmp_path / "redis-ha")
    except RuntimeError as exc:
        need("Redis", f"{exc} (a Redis primary, replica and sentinels of the test's own are started)")
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def postgres_pair():
    bindir = pg_bindir()
    if bindir is None or (os.geteuid() == 0 and not shutil.which("runuser")):
        need("PostgreSQL", "initdb/pg_ctl/pg_basebackup are not installed (a primary and standby of the test's own)")
    pair = PostgresPair(bindir)
    try:
        pair.start()
        yield pair
    finally:
        pair.destroy()


# ---- the Sentinel form of [store] url -------------------------------------------------------


@pytest.mark.parametrize("url, message", [
    ("redis+sentinel://127.0.0.1/svc", "names a sentinel without host:port"),
    ("redis+sentinel://127.0.0.1:26379", "must name the service"),
    ("redis+sentinel://127.0.0.1:26379/svc/zero", "database number that is not a number"),
    ("redis+sentinel://127.0.0.1:26379/svc?retries=3", "unknown option (retries)"),
])
def test_a_malformed_sentinel_url_is_one_line(tmp_path, url, message):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "IDP_SERVER_SECRET_KEY": "t" * 48,
           "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.db'}", "IDP_STORE_URL": url}
    out = run_idp(env, "stats")
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "[store] url" in lines[0] and message in lines[0], out.stderr


def test_the_store_talks_to_the_primary_the_sentinels_name(sentinel_set):
    from idp.platform.store import connect

    r = connect(sentinel_set.url.replace("/0", "/3"))
    r.set("ha-test", "written")
    primary = redis_lib.Redis(port=sentinel_set.data_ports[0], db=3, decode_responses=True)
    assert primary.get("ha-test") == "written"
    assert r.connection_pool.service_name == "idp-store"


# ---- logins under a failover ------------------------------------------------------------------


@dataclass
class Attempt:
    citizen: tuple[str, str]
    adult: bool
    node: int
    started: float
    ended: float = 0.0
    outcome: str = ""  # ok | unavailable | lost | bad
    detail: str = ""
    refresh_token: str | None = None


class _Unavailable(Exception):
    pass


class _Lost(Exception):
    pass


def _check(response: requests.Response, step: str) -> requests.Response:
    """A 503 must be the clear one (a page or JSON, with Retry-After); any other 5xx is a failure."""
    if response.status_code == 503:
        assert response.headers.get("Retry-After"), f"{step}: 503 without Retry-After"
        assert UNAVAILABLE in response.text and "Traceback" not in response.text, f"{step}: {response.text[:200]}"
        raise _Unavailable(step)
    assert response.status_code < 500, f"{step}: {response.status_code} {response.text[:300]}"
    return response


@dataclass
class LoginTraffic:
    """Whole logins (first page to userinfo), each by a citizen of its own, over several nodes
    from several threads; every attempt is recorded with its outcome."""

    dep: Deployment
    client: tuple[str, str, str]
    people: list[tuple[tuple[str, str], bool]]
    threads: int = 4
    scope: str = "openid phone"
    attempts: list[Attempt] = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.threads)]

    def start(self) -> None:
        for t in self._workers:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(60)

    def _next(self, i: int) -> Attempt | None:
        with self._lock:
            if not self.people:
                return None
            citizen, adult = self.people.pop()
            attempt = Attempt(citizen, adult, node=i % len(self.dep.nodes), started=time.monotonic())
            self.attempts.append(attempt)
            return attempt

    def _run(self, i: int) -> None:
        while not self._stop.is_set():
            attempt = self._next(i)
            if attempt is None:
                return
            try:
                self._login(attempt)
                attempt.outcome = "ok"
            except _Unavailable as exc:
                attempt.outcome, attempt.detail = "unavailable", str(exc)
            except _Lost as exc:
                attempt.outcome, attempt.detail = "lost", str(exc)
            except Exception as exc:  # noqa: BLE001 - recorded, and the test fails on it
                attempt.outcome, attempt.detail = "bad", f"{type(exc).__name__}: {exc}"
            attempt.ended = time.monotonic()
            if attempt.outcome != "ok":
                self._stop.wait(0.2)  # a person retries after a moment, not in a tight loop

    def _login(self, attempt: Attempt) -> None:
        node = self.dep.nodes[attempt.node]
        national_id, mobile = attempt.citizen
        client_id, _, redirect = self.client
        browser = node.flow()
        page = _check(browser.start(client_id, redirect, scope=self.scope), "first page")
        if 'name="national_id"' not in page.text:
            raise AssertionError(f"first page: {page.status_code} {page.text[:200]}")
        sent = len(node.outbox.messages(mobile_e164(mobile)))
        page = _check(browser.follow(browser.submit(page, {"national_id": national_id, "mobile": mobile}), redirect),
                      "identify")
        if 'name="otp"' not in page.text:
            raise _Lost(f"identify: {page.status_code}")  # its paused request was lost with the primary
        try:
            otp = node.outbox.last_code(mobile_e164(mobile), after=sent, timeout=8)
        except AssertionError:
            raise _Lost("no SMS") from None  # its challenge was lost with the primary before it was sent
        done = _check(browser.follow(browser.submit(page, {"otp": otp}), redirect), "code")
        if not (done.is_redirect and done.headers["Location"].startswith(redirect)):
            raise _Lost(f"code: {done.status_code}")
        params = redirect_params(done, redirect)
        if "code" not in params:
            raise AssertionError(f"code: the client got {params}")
        token = _check(exchange(node, self.client, browser, params["code"]), "token")
        if token.status_code == 400 and token.json().get("error") == "invalid_grant":
            raise _Lost("token: invalid_grant")  # a code written to the primary just before it died
        assert token.status_code == 200, f"token: {token.status_code} {token.text[:200]}"
        attempt.refresh_token = token.json().get("refresh_token")
        claims = _check(node.session().get(f"{node.url}/userinfo", timeout=10,
                                           headers={"Authorization": f"Bearer {token.json()['access_token']}"}),
                        "userinfo")
        assert claims.status_code == 200, f"userinfo: {claims.status_code}"
        # never a wrong token: the token speaks for the citizen who logged in, no one else
        assert claims.json()["phone_number"] == mobile_e164(mobile), "a token for someone else"


def _adults_counted(dep: Deployment) -> tuple[int, int]:
    counter = dep.query("SELECT value FROM stat_counters WHERE name = 'unique_adults'")
    adults = dep.query("SELECT count(*) FROM citizens WHERE first_adult_authenticated_at IS NOT NULL")[0][0]
    return (counter[0][0] if counter else 0), adults


def _events_by_national_id(dep: Deployment) -> dict[str, int]:
    rows = dep.query("SELECT c.national_id, count(e.id) FROM citizens c LEFT JOIN auth_events e "
                     "ON e.citizen_id = c.id GROUP BY c.national_id")
    return {national_id: n for national_id, n in rows}


def test_the_store_primary_killed_under_sentinel_fails_logins_only_for_the_window(
        tmp_path, fresh_database, sentinel_set):
    dep = Deployment(tmp_path / "dep", fresh_database, sentinel_set.url, workers=1, threads=4)
    traffic = None
    try:
        nodes = [dep.start_node(), dep.start_node()]
        client = dep.add_client(scope="openid phone")
        people = [(dep.add_citizen(birth_date="1980-01-01" if i % 3 else "2015-02-02"), bool(i % 3))
                  for i in range(400)]
        traffic = LoginTraffic(dep, client, people, threads=4)
        traffic.start()
        time.sleep(3.0)  # real time: logins run on both nodes before the primary dies
        old_primary = sentinel_set.primary_port()
        assert old_primary == sentinel_set.data_ports[0]
        killed_at = time.monotonic()
        sentinel_set.kill(old_primary)
        # logins go on until the sentinels name the replica and logins pass again for a while
        deadline = killed_at + 60
        while time.monotonic() < deadline:
            done = [a for a in traffic.attempts if a.outcome == "ok" and a.started > killed_at]
            if len(done) >= 12 and sentinel_set.primary_port() == sentinel_set.data_ports[1]:
                break
            time.sleep(0.2)  # real time: a failover of real servers
        time.sleep(1.0)
        traffic.stop()

        attempts = [a for a in traffic.attempts if a.outcome]
        bad = [a for a in attempts if a.outcome == "bad"]
        failed = [a for a in attempts if a.outcome in ("unavailable", "lost")]
        after = [a for a in attempts if a.started > killed_at and a.outcome == "ok"]
        window = max((a.ended for a in failed), default=killed_at) - killed_at
        print(f"\nstore failover (Redis Sentinel, down-after {sentinel_set.down_after_ms} ms): "
              f"logins failed for {window:.1f} s after the primary was killed; "
              f"{len(failed)} failed ({sum(a.outcome == 'unavailable' for a in failed)} with the 503 page, "
              f"{sum(a.outcome == 'lost' for a in failed)} lost their state with the primary), "
              f"{sum(a.outcome == 'ok' for a in attempts)} succeeded, {len(after)} of them after the kill")
        assert not bad, [(a.detail, a.node) for a in bad[:5]]
        assert sentinel_set.primary_port() == sentinel_set.data_ports[1], "the replica was not promoted"
        assert len(after) >= 12, "logins did not succeed again after the failover"
        assert failed, "killing the primary failed no login: the test did not test a failover"
        assert window < 30, f"logins failed for {window:.1f} s"
        # the nodes recovered by themselves: the same processes, never restarted
        assert all(node.proc.poll() is None and len(node.workers()) == 1 for node in nodes)

        # every login that got a code got exactly one auth event; the counter is exact
        events = _events_by_national_id(dep)
        for a in attempts:
            national_id = a.citizen[0]
            if a.outcome == "ok":
                assert events[national_id] == 1, f"a login with a code has {events[national_id]} auth events"
            else:
                assert events[national_id] <= 1
        untouched = {p[0][0] for p in traffic.people}
        assert all(events[n] == 0 for n in untouched)
        counter, adults = _adults_counted(dep)
        adults_in = {a.citizen[0] for a in attempts if a.adult and events[a.citizen[0]] == 1}
        adults_ok = {a.citizen[0] for a in attempts if a.adult and a.outcome == "ok"}
        assert counter == adults == len(adults_in), (counter, adults, len(adults_in))
        print(f"unique adults counted: {counter} ({len(adults_ok)} finished with a code; "
              f"{len(adults_in) - len(adults_ok)} proved their code as the primary died and got none)")
        assert adults_ok <= adults_in
        assert_no_tracebacks(dep)
    finally:
        if traffic is not None:
            traffic.stop()
        dep.stop()


def _run_until_recovered(traffic: LoginTraffic, since: float, recovered, need: int = 12, limit: float = 60) -> None:
    """Let the logins go on until ``recovered()`` and ``need`` logins begun after ``since`` passed."""
    deadline = since + limit
    while time.monotonic() < deadline:
        done = [a for a in traffic.attempts if a.outcome == "ok" and a.started > since]
        if len(done) >= need and recovered():
            break
        time.sleep(0.2)  # real time: a failover of real servers
    time.sleep(1.0)
    traffic.stop()


def test_a_postgres_switchover_loses_nothing_committed_and_needs_no_restart(tmp_path, redis_url, postgres_pair):
    database_url = postgres_pair.create_database()
    dep = Deployment(tmp_path / "dep", database_url, redis_url, workers=1, threads=4)
    traffic = None
    try:
        nodes = [dep.start_node(), dep.start_node()]
        client = dep.add_client(scope="openid phone offline_access")
        people = [(dep.add_citizen(birth_date="1980-01-01" if i % 3 else "2015-02-02"), bool(i % 3))
                  for i in range(400)]
        traffic = LoginTraffic(dep, client, people, threads=4, scope="openid phone offline_access")
        traffic.start()
        time.sleep(3.0)  # real time: logins run on both nodes before the switchover
        switched_at = time.monotonic()
        postgres_pair.switch_over()
        promoted = time.monotonic() - switched_at
        _run_until_recovered(traffic, switched_at, lambda: True)

        attempts = [a for a in traffic.attempts if a.outcome]
        bad = [a for a in attempts if a.outcome == "bad"]
        failed = [a for a in attempts if a.outcome in ("unavailable", "lost")]
        after = [a for a in attempts if a.started > switched_at and a.outcome == "ok"]
        window = max((a.ended for a in failed), default=switched_at) - switched_at
        print(f"\ndatabase switchover (stop the primary, promote the standby: {promoted:.1f} s): logins failed "
              f"for {window:.1f} s; {len(failed)} failed ({sum(a.outcome == 'unavailable' for a in failed)} with "
              f"the 503 page), {sum(a.outcome == 'ok' for a in attempts)} succeeded, {len(after)} after the switch")
        assert not bad, [(a.detail, a.node) for a in bad[:5]]
        assert not [a for a in failed if a.outcome == "lost"], [a.detail for a in failed][:5]
        assert len(after) >= 12, "logins did not succeed again after the switchover"
        assert window < 30, f"logins failed for {window:.1f} s"
        assert all(node.proc.poll() is None and len(node.workers()) == 1 for node in nodes)
        port = dep.query("SELECT inet_server_port()")[0][0]
        assert port == postgres_pair.standby.port, "the nodes' database is not the promoted standby"

        # nothing committed before the switch is lost: auth events, the counter, refresh families
        events = _events_by_national_id(dep)
        for a in attempts:
            assert events[a.citizen[0]] == 1 if a.outcome == "ok" else events[a.citizen[0]] <= 1
        counter, adults = _adults_counted(dep)
        adults_in = {a.citizen[0] for a in attempts if a.adult and events[a.citizen[0]] == 1}
        assert counter == adults == len(adults_in), (counter, adults, len(adults_in))
        before = [a for a in attempts if a.outcome == "ok" and a.ended < switched_at]
        assert before and all(a.refresh_token for a in before)
        node = nodes[0]
        for a in before:
            r = token_request(node.url, client, node.session(), grant_type="refresh_token",
                              refresh_token=a.refresh_token)
            assert r.status_code == 200, f"a refresh family from before the switchover: {r.status_code} {r.text}"
        print(f"unique adults counted: {counter}; {len(before)} refresh families from before the switch "
              f"all rotate on the new primary")
        assert_no_tracebacks(dep)
    finally:
        if traffic is not None:
            traffic.stop()
        dep.stop()


def test_reports_read_from_the_replica_and_show_its_lag(tmp_path, redis_url, postgres_pair):
    database_url = postgres_pair.create_database()
    replica_url = f"postgresql://postgres@127.0.0.1:{postgres_pair.standby.port}/idp"
    dep = Deployment(tmp_path / "dep", database_url, redis_url, workers=1, threads=4)
    try:
        node = dep.start_node()
        client = dep.add_client(scope="openid phone")
        adult = dep.add_citizen(birth_date="1980-01-01")
        traffic = LoginTraffic(dep, client, [(adult, True)], threads=1)
        traffic.start()
        traffic.stop()
        assert [a.outcome for a in traffic.attempts] == ["ok"]

        env = {**dep.env, "IDP_DATABASE_REPLICA_URL": replica_url}
        out = dep.cli("stats", "--json")
        assert out.returncode == 0, out.stderr
        assert "replica_lag_seconds" not in json.loads(out.stdout)
        out = run_idp(env, "stats", "--json")
        assert out.returncode == 0, out.stderr
        figures = json.loads(out.stdout)
        assert figures["unique_adults"] == 1 and 0 <= figures["replica_lag_seconds"] < 5
        text = run_idp(env, "stats").stdout
        assert "read from the replica" in text and "behind the primary" in text

        # the report really reads the replica: with its WAL replay paused, a new adult's login
        # reaches the primary at once and the replica's report only once replay resumes
        with psycopg.connect(replica_url, autocommit=True) as r:
            r.execute("SELECT pg_wal_replay_pause()")
            later = dep.add_citizen(birth_date="1981-01-01")
            traffic = LoginTraffic(dep, client, [(later, True)], threads=1)
            traffic.start()
            traffic.stop()
            assert [a.outcome for a in traffic.attempts] == ["ok"]
            assert json.loads(dep.cli("stats", "--json").stdout)["unique_adults"] == 2
            assert json.loads(run_idp(env, "stats", "--json").stdout)["unique_adults"] == 1
            r.execute("SELECT pg_wal_replay_resume()")
        assert wait_until(lambda: json.loads(run_idp(env, "stats", "--json").stdout)["unique_adults"] == 2, 20)

        # the login path never reads from it: the nodes hold no connection to the replica
        with psycopg.connect(postgres_pair.standby.admin_url, autocommit=True) as r:
            clients = r.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = 'idp'").fetchone()[0]
        assert clients == 0
        assert node.proc.poll() is None
        bad = run_idp({**dep.env, "IDP_DATABASE_REPLICA_URL": "mysql://x"}, "stats")
        assert bad.returncode != 0 and "[database] replica_url" in bad.stderr.strip()
        assert len(bad.stderr.strip().splitlines()) == 1
    finally:
        dep.stop()
