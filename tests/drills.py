"""Failover drills: whole logins on two `idp serve` nodes while one engine fails, and what
came of them (the window, the failed logins, the durable counts). The failover tests assert on
the result; `bench/failover.py` runs the same drills and prints it.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import requests

from .ha import PostgresPair, RedisSentinelSet
from .helpers import mobile_e164, redirect_params
from .test_multinode import Deployment, exchange, token_request

UNAVAILABLE = "temporarily_unavailable"


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


@dataclass
class DrillResult:
    """What a drill saw. ``window``: from the failure to the end of the last failed login."""

    name: str
    window: float
    ok: int
    ok_after: int
    unavailable: int
    lost: int
    bad: list[str]
    recovered: bool  # the new primary is in use and logins pass again
    same_processes: bool  # no node was restarted (or died) to get there
    wrong_events: list[str]  # logins with a code whose auth events are not exactly one
    counter: int  # the unique-adult counter
    adults_counted: int  # citizens marked as counted adults
    adults_with_event: int  # adults with an auth event (proved their code)
    adults_with_code: int  # adults whose login reached the agency with a code
    refresh_families: int = 0  # families from before the failure, rotated after it
    refresh_failed: list[str] = field(default_factory=list)
    extra: str = ""

    @property
    def failed(self) -> int:
        return self.unavailable + self.lost

    def lines(self) -> list[str]:
        lines = [f"{self.name}: {self.extra}",
                 f"  logins failed for {self.window:.1f} s: {self.failed} failed ({self.unavailable} with the 503 "
                 f"page, {self.lost} lost their state with the failed server), {len(self.bad)} wrong answers",
                 f"  {self.ok} logins succeeded, {self.ok_after} of them begun after the failure; recovered "
                 f"without a restart: {'yes' if self.recovered and self.same_processes else 'NO'}",
                 f"  every login with a code has exactly one auth event: "
                 f"{'yes' if not self.wrong_events else 'NO ' + str(self.wrong_events[:3])}",
                 f"  unique-adult counter {self.counter}, adults counted {self.adults_counted}, adults who proved "
                 f"their code {self.adults_with_event} ({self.adults_with_code} got a code to their agency)"]
        if self.refresh_families or self.refresh_failed:
            lines.append(f"  refresh families from before the failure rotated after it: {self.refresh_families}, "
                         f"failed: {len(self.refresh_failed)}")
        return lines


def problems(result: DrillResult, window_limit: float = 30) -> list[str]:
    """What a drill must not show, each as one line (none: the failover was handled)."""
    found = []
    if result.bad:
        found.append(f"wrong answers (5xx other than the 503 page, a token for someone else): {result.bad[:3]}")
    if not (result.recovered and result.same_processes):
        found.append("the nodes did not recover by themselves")
    if result.ok_after < 12:
        found.append(f"only {result.ok_after} logins succeeded after the failure")
    if not result.failed:
        found.append("the failure failed no login: the drill did not test a failover")
    if result.window >= window_limit:
        found.append(f"logins failed for {result.window:.1f} s (limit {window_limit:.0f} s)")
    if result.wrong_events:
        found.append(f"logins whose auth events are not exactly one: {result.wrong_events[:3]}")
    if not result.counter == result.adults_counted == result.adults_with_event:
        found.append(f"unique-adult counter {result.counter}, adults counted {result.adults_counted}, "
                     f"adults with an auth event {result.adults_with_event}")
    if result.adults_with_code > result.adults_with_event:
        found.append("an adult got a code without an auth event")
    if result.refresh_failed:
        found.append(f"refresh families lost: {result.refresh_failed[:3]}")
    return found


def _people(dep: Deployment, n: int) -> list[tuple[tuple[str, str], bool]]:
    """n citizens of their own, two adults in three (the others are children, never counted)."""
    return [(dep.add_citizen(birth_date="1980-01-01" if i % 3 else "2015-02-02"), bool(i % 3)) for i in range(n)]


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


def _result(name: str, dep: Deployment, traffic: LoginTraffic, failed_at: float, recovered: bool, extra: str,
            refresh_client=None) -> DrillResult:
    attempts = [a for a in traffic.attempts if a.outcome]
    failed = [a for a in attempts if a.outcome in ("unavailable", "lost")]
    rows = dep.query("SELECT c.national_id, count(e.id) FROM citizens c LEFT JOIN auth_events e "
                     "ON e.citizen_id = c.id GROUP BY c.national_id")
    events = {national_id: n for national_id, n in rows}
    wrong = [f"{a.citizen[0]}: {events[a.citizen[0]]}" for a in attempts
             if (events[a.citizen[0]] != 1 if a.outcome == "ok" else events[a.citizen[0]] > 1)]
    wrong += [f"{p[0][0]}: {events[p[0][0]]} (never tried)" for p in traffic.people if events[p[0][0]]]
    counter = dep.query("SELECT value FROM stat_counters WHERE name = 'unique_adults'")
    result = DrillResult(
        name=name, window=max((a.ended for a in failed), default=failed_at) - failed_at,
        ok=sum(a.outcome == "ok" for a in attempts),
        ok_after=sum(a.outcome == "ok" and a.started > failed_at for a in attempts),
        unavailable=sum(a.outcome == "unavailable" for a in attempts), lost=sum(a.outcome == "lost" for a in attempts),
        bad=[a.detail for a in attempts if a.outcome == "bad"], recovered=recovered,
        same_processes=all(node.proc.poll() is None and len(node.workers()) == int(dep.env["IDP_SERVER_WORKERS"])
                           for node in dep.nodes),
        wrong_events=wrong, counter=counter[0][0] if counter else 0,
        adults_counted=dep.query("SELECT count(*) FROM citizens WHERE first_adult_authenticated_at IS NOT NULL")[0][0],
        adults_with_event=len({a.citizen[0] for a in attempts if a.adult and events[a.citizen[0]] == 1}),
        adults_with_code=len({a.citizen[0] for a in attempts if a.adult and a.outcome == "ok"}), extra=extra)
    if refresh_client is not None:
        node = dep.nodes[0]
        for a in (a for a in attempts if a.outcome == "ok" and a.ended < failed_at):
            r = token_request(node.url, refresh_client, node.session(), grant_type="refresh_token",
                              refresh_token=a.refresh_token or "")
            if r.status_code == 200:
                result.refresh_families += 1
            else:
                result.refresh_failed.append(f"{r.status_code} {r.text[:100]}")
    return result


def redis_failover(dep: Deployment, servers: RedisSentinelSet, people: int = 400, threads: int = 4) -> DrillResult:
    """Kill the store's primary (SIGKILL) under logins on the deployment's nodes; the Sentinels
    promote the replica."""
    client = dep.add_client(scope="openid phone")
    traffic = LoginTraffic(dep, client, _people(dep, people), threads=threads)
    traffic.start()
    try:
        time.sleep(3.0)  # real time: logins run on every node before the primary dies
        old, new = servers.data_ports
        assert servers.primary_port() == old, "the Sentinels do not name the first server as the primary"
        killed_at = time.monotonic()
        servers.kill(old)
        _run_until_recovered(traffic, killed_at, lambda: servers.primary_port() == new)
    finally:
        traffic.stop()
    return _result("store failover (Redis Sentinel)", dep, traffic, killed_at, servers.primary_port() == new,
                   f"the primary killed; a replica and three Sentinels, down-after {servers.down_after_ms} ms")


def postgres_switchover(dep: Deployment, pair: PostgresPair, people: int = 400, threads: int = 4) -> DrillResult:
    """Stop the database's primary and promote its standby under logins that ask for refresh
    tokens; then rotate every refresh token issued before the switch on the new primary."""
    client = dep.add_client(scope="openid phone offline_access")
    traffic = LoginTraffic(dep, client, _people(dep, people), threads=threads, scope="openid phone offline_access")
    traffic.start()
    try:
        time.sleep(3.0)  # real time: logins run on every node before the switchover
        switched_at = time.monotonic()
        pair.switch_over()
        promoted = time.monotonic() - switched_at
        _run_until_recovered(traffic, switched_at, lambda: True)
    finally:
        traffic.stop()
    on_standby = dep.query("SELECT inet_server_port()")[0][0] == pair.standby.port
    return _result("database switchover (PostgreSQL, multi-host URL)", dep, traffic, switched_at, on_standby,
                   f"the primary stopped, the standby promoted in {promoted:.1f} s", refresh_client=client)
