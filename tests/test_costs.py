"""What one login costs, counted: store round trips, SQL statements and commits per HTTP step.

Counts, not times, so the test is stable on any machine: it fails when a change makes a step
talk to Redis or the database more often than the budget written below (and in
bench/README.md). Lower a budget when a change makes a step cheaper.

Counted in process, on the provider's own request threads only (the SMS sender thread and the
back-channel worker are not part of a request's cost): every store round trip is one
``send_packed_command`` of redis-py (a pipeline is one), every SQL statement one cursor
execution, every commit one transaction committed.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from contextlib import contextmanager

import pytest
import requests
from redis.connection import AbstractConnection
from sqlalchemy import event

from idp.platform import direct as direct_sql
from idp.platform.database import db
from idp.platform.store import store

from .conftest import GENEROUS_IP_LIMITS, _reset_postgres, start_provider
from .helpers import mobile_e164, redirect_params

#: step -> (store round trips, SQL statements, commits), the most each may use.
BUDGET = {
    "GET /authorize": (3, 1, 0),
    "GET /login": (0, 0, 0),  # no such request: /authorize answers with the first page
    "POST /login": (4, 2, 1),
    "GET /login/code": (2, 0, 0),
    "POST /login/code": (5, 5, 1),
    "POST /token (code)": (2, 1, 1),
    "GET /userinfo": (1, 1, 0),
    "POST /introspect": (1, 0, 0),
    "GET /authorize (SSO)": (3, 2, 1),
    "POST /token (refresh)": (0, 2, 1),
}

_counting = threading.local()


class Meter:
    """Counts per step, on the threads that serve a request while a step is being measured."""

    def __init__(self):
        self.counts: dict[str, Counter] = {}
        self.step: str | None = None
        self.lock = threading.Lock()

    def add(self, what: str) -> None:
        if getattr(_counting, "on", False) and not getattr(_counting, "connecting", False) and self.step is not None:
            with self.lock:
                self.counts.setdefault(self.step, Counter())[what] += 1

    @contextmanager
    def measure(self, step: str):
        self.step = step
        self.counts.setdefault(step, Counter())
        try:
            yield
        finally:
            self.step = None

    def of(self, step: str) -> tuple[int, int, int]:
        c = self.counts[step]
        return c["store"], c["sql"], c["commit"]


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def metered(request, tmp_path_factory, redis_url):
    tmp = tmp_path_factory.mktemp(f"costs-{request.param}")
    if request.param == "postgresql":
        db_url = request.getfixturevalue("postgres_url")
        _reset_postgres(db_url)
    else:
        db_url = f"sqlite:///{tmp / 'idp.sqlite3'}"
    live = start_provider(tmp, db_url, redis_url, limits=GENEROUS_IP_LIMITS)
    meter = Meter()
    app = live.app
    inner = app.wsgi_app

    def counted_app(environ, start_response):
        _counting.on = True
        try:
            return inner(environ, start_response)
        finally:
            _counting.on = False

    app.wsgi_app = counted_app
    original_send = AbstractConnection.send_packed_command

    def send_packed_command(self, *args, **kwargs):
        meter.add("store")
        return original_send(self, *args, **kwargs)

    original_on_connect = AbstractConnection.connect_check_health

    def on_connect(self, *args, **kwargs):
        # a new pooled connection's handshake (HELLO, CLIENT SETINFO) is not the step's cost
        _counting.connecting = True
        try:
            return original_on_connect(self, *args, **kwargs)
        finally:
            _counting.connecting = False

    AbstractConnection.send_packed_command = send_packed_command
    AbstractConnection.connect_check_health = on_connect
    with app.app_context():
        engine = db.engine
    def statement(conn, cursor, sql, *rest):
        meter.add("sql")
        # a write on an autocommit connection (database.write_now) is a commit of its own
        if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT" and \
                sql.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            meter.add("commit")

    original_direct = direct_sql.Direct.run

    def direct(self, plan, params, session=None):  # PostgreSQL's hot statements, straight through psycopg
        meter.add("sql")
        if session is None and plan.sql.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            meter.add("commit")  # a write in autocommit: a commit of its own
        return original_direct(self, plan, params, session)

    direct_sql.Direct.run = direct
    listeners = [(engine, "before_cursor_execute", statement),
                 (engine, "commit", lambda *a, **k: meter.add("commit"))]
    for target, name, fn in listeners:
        event.listen(target, name, fn)
    try:
        yield live, meter
    finally:
        for target, name, fn in listeners:
            event.remove(target, name, fn)
        direct_sql.Direct.run = original_direct
        AbstractConnection.send_packed_command = original_send
        AbstractConnection.connect_check_health = original_on_connect
        app.wsgi_app = inner
        live.stop()
        with app.app_context():
            db.engine.dispose()


def _following(live) -> None:
    """Until the app follows the clients version by its subscription (as a serving process
    does from its first request on) and has heard of the latest change, so that no step pays
    for reading the version, nor reads a client twice because the change that added it
    arrived between two steps (the subscription delivers it asynchronously)."""
    requests.get(f"{live.url}/authorize?client_id=warm-up", timeout=10)  # the first lookup starts it
    with live.app.app_context():
        latest = store.clients_version()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # real time: a subscription on a real Redis
        follower = live.app.extensions.get("idp.clients_follower")
        if follower is not None and follower.live and follower.version == latest:
            return
        time.sleep(0.02)
    raise AssertionError("the clients version is not followed")


def test_a_login_stays_within_its_budget(metered):
    live, meter = metered
    client_id, secret, redirect_uri = live.add_client(name="Cost agency", scope="openid profile offline_access")
    national_id, mobile = live.add_citizen()
    _following(live)
    browser = live.flow()
    url = browser.authorize_url(client_id, redirect_uri, scope="openid profile offline_access")

    with meter.measure("GET /authorize"):
        response = browser.get(url)
    if response.status_code == 303:  # the first page behind a redirect
        with meter.measure("GET /login"):
            response = browser.get(requests.compat.urljoin(response.url, response.headers["Location"]))
    else:
        meter.counts["GET /login"] = Counter()
    assert response.status_code == 200 and 'name="national_id"' in response.text
    sent_before = len(live.outbox.messages(mobile_e164(mobile)))
    with meter.measure("POST /login"):
        response = browser.submit(response, {"national_id": national_id, "mobile": mobile})
    assert response.status_code == 303
    with meter.measure("GET /login/code"):
        page = browser.get(requests.compat.urljoin(response.url, response.headers["Location"]))
    assert 'name="otp"' in page.text
    code = live.outbox.last_code(mobile_e164(mobile), after=sent_before)
    with meter.measure("POST /login/code"):
        response = browser.submit(page, {"otp": code})
    answer = redirect_params(response, redirect_uri)  # the code, straight from the code form

    with meter.measure("POST /token (code)"):
        tokens = browser.exchange(client_id, secret, redirect_uri, answer["code"])
    assert tokens.status_code == 200, tokens.text
    tokens = tokens.json()
    with meter.measure("GET /userinfo"):
        info = requests.get(f"{live.url}/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"},
                            timeout=10)
    assert info.status_code == 200 and info.json()["sub"]
    with meter.measure("POST /introspect"):
        seen = requests.post(f"{live.url}/introspect", data={"token": tokens["access_token"]},
                             auth=(client_id, secret), timeout=10)
    assert seen.json()["active"] is True
    with meter.measure("GET /authorize (SSO)"):
        again = browser.get(browser.authorize_url(client_id, redirect_uri, scope="openid profile offline_access"))
    assert "code" in redirect_params(again, redirect_uri)
    with meter.measure("POST /token (refresh)"):
        refreshed = requests.post(f"{live.url}/token", data={"grant_type": "refresh_token",
                                                             "refresh_token": tokens["refresh_token"]},
                                  auth=(client_id, secret), timeout=10)
    assert refreshed.status_code == 200, refreshed.text

    table = "\n".join(f"  {step:24} store {meter.of(step)[0]:3}  sql {meter.of(step)[1]:3}  "
                      f"commits {meter.of(step)[2]}   (budget {BUDGET[step]})" for step in BUDGET)
    print(f"\nwhat one login costs:\n{table}")
    over = {step: meter.of(step) for step, most in BUDGET.items()
            if any(n > m for n, m in zip(meter.of(step), most))}
    assert not over, f"over budget: {over}\n{table}"
    # the meter itself counts: a login cannot be free
    assert sum(sum(meter.of(step)) for step in BUDGET) > 10
