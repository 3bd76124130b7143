"""Races against `idp serve` with several workers (separate processes) on PostgreSQL and
Redis: one code redeemed in parallel, one refresh token used in parallel, one citizen's first
login from many requests at once."""
from __future__ import annotations

import concurrent.futures as cf
import threading

import pytest

from .helpers import redirect_params
from .test_multinode import (
    Deployment,
    assert_no_tracebacks,
    exchange,
    login_for_code,
    token_request,  # noqa: F401
)

PARALLEL = 16
ROUNDS = 3


@pytest.fixture(scope="module")
def served(tmp_path_factory, fresh_database, redis_url):
    dep = Deployment(tmp_path_factory.mktemp("races"), fresh_database, redis_url, workers=3, threads=8)
    try:
        node = dep.start_node()
        assert len(node.workers()) == 3
        yield dep
    finally:
        dep.stop()
        dep.forget_store_keys()


@pytest.fixture(autouse=True)
def _no_tracebacks(request):
    yield
    if "served" in request.fixturenames:
        assert_no_tracebacks(request.getfixturevalue("served"))


def _at_once(n: int, call):
    """Run ``call(i)`` in n threads released together; returns the results in order."""
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait(10)
        return call(i)

    with cf.ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def _introspect(node, client, token: str) -> dict:
    import requests

    r = requests.post(f"{node.url}/introspect", data={"token": token}, auth=client[:2], timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_one_code_redeemed_in_parallel_yields_exactly_one_token(served):
    node = served.nodes[0]
    client = served.add_client(scope="openid profile offline_access")
    national_id, mobile = served.add_citizen()
    for _ in range(ROUNDS):
        browser, params = login_for_code(node, client, national_id, mobile, scope="openid profile offline_access")
        answers = _at_once(PARALLEL, lambda _i: exchange(node, client, browser, params["code"]))
        statuses = sorted(a.status_code for a in answers)
        assert statuses.count(200) == 1 and statuses.count(400) == PARALLEL - 1, statuses
        assert all(a.json()["error"] == "invalid_grant" for a in answers if a.status_code == 400)
        assert all(a.headers["Cache-Control"] == "no-store" for a in answers)
        won = next(a for a in answers if a.status_code == 200).json()
        # A replay seen during the race revokes what the code issued (RFC 6749 §4.1.2): both the
        # access token and the refresh token, or neither; never only one of them.
        access = _introspect(node, client, won["access_token"])["active"]
        refresh = _introspect(node, client, won["refresh_token"])["active"]
        assert access == refresh, f"access token active={access} but refresh token active={refresh}"


def test_one_refresh_token_used_in_parallel_never_500s(served):
    node = served.nodes[0]
    client = served.add_client(scope="openid profile offline_access")
    national_id, mobile = served.add_citizen()
    browser, params = login_for_code(node, client, national_id, mobile, scope="openid profile offline_access")
    current = exchange(node, client, browser, params["code"]).json()["refresh_token"]
    for _ in range(ROUNDS):
        answers = _at_once(PARALLEL, lambda _i: token_request(node.url, client, node.session(),
                                                              grant_type="refresh_token", refresh_token=current))
        statuses = sorted(a.status_code for a in answers)
        assert 500 not in statuses and statuses.count(200) == 1, statuses
        assert all(a.json()["error"] == "invalid_grant" for a in answers if a.status_code != 200)
        current = next(a for a in answers if a.status_code == 200).json()["refresh_token"]
        # Parallel use within the grace window is the client's own race, not theft: the family lives.
        assert _introspect(node, client, current)["active"] is True


def test_a_first_login_from_many_requests_at_once_is_counted_once(served):
    from idp.citizens.counting import unique_adults

    node = served.nodes[0]
    client = served.add_client()
    national_id, mobile = served.add_citizen(birth_date="1975-03-03")
    with served.app.app_context():
        before = unique_adults()
    # Each browser opens its own challenge and receives its own code (one after another, so that
    # each code in the outbox is known to belong to its browser)...
    browsers = []
    for _ in range(PARALLEL):
        browser = node.flow()
        page = browser.start(client[0], client[2])
        sent = len(node.outbox.messages(mobile))
        page = browser.follow(browser.submit(page, {"national_id": national_id, "mobile": mobile}), client[2])
        assert 'name="otp"' in page.text
        browsers.append((browser, page, node.outbox.last_code(mobile, after=sent)))
    # ...then every code is entered at the same moment, across the workers.
    finals = _at_once(PARALLEL, lambda i: browsers[i][0].follow(
        browsers[i][0].submit(browsers[i][1], {"otp": browsers[i][2]}), client[2]))
    assert all("code" in redirect_params(f, client[2]) for f in finals)
    with served.app.app_context():
        assert unique_adults() == before + 1
    rows = served.query("SELECT c.first_adult_authenticated_at IS NOT NULL, "
                        "(SELECT count(*) FROM auth_events e WHERE e.citizen_id = c.id) "
                        "FROM citizens c WHERE c.national_id = :nid", nid=national_id)
    assert rows == [(True, PARALLEL)]
    counted = served.query("SELECT count(*) FROM citizens WHERE first_adult_authenticated_at IS NOT NULL")[0][0]
    assert unique_adults_now(served) == counted


def unique_adults_now(dep) -> int:
    from idp.citizens.counting import unique_adults

    with dep.app.app_context():
        return unique_adults()


def test_a_code_replayed_while_its_first_exchange_is_under_way_revokes_both_tokens(make_provider, monkeypatch):
    """The replay lands between the first exchange's redemption of the code and the save of its
    refresh token (held open here): what the code issued is revoked all the same, access token
    and refresh token alike (RFC 6749 §4.1.2), whichever order the two requests finish in."""
    import requests

    from idp.protocol import tokens

    from .conftest import GENEROUS_IP_LIMITS

    provider = make_provider(limits=GENEROUS_IP_LIMITS)
    client_id, secret, redirect = provider.add_client(scope="openid profile offline_access")
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    params = browser.login(client_id, redirect, national_id, mobile, scope="openid profile offline_access")
    inside, release = threading.Event(), threading.Event()
    real_save = tokens.save

    def held_save(*args, **kwargs):
        inside.set()
        release.wait(10)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(tokens, "save", held_save)
    with cf.ThreadPoolExecutor(1) as pool:
        first = pool.submit(browser.exchange, client_id, secret, redirect, params["code"], browser.last_verifier)
        assert inside.wait(10), "the first exchange reached the save of its refresh token"
        replay = browser.exchange(client_id, secret, redirect, params["code"])
        release.set()
        first = first.result(15)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert first.status_code == 200, first.text
    body = first.json()

    def active(token: str) -> bool:
        r = requests.post(f"{provider.url}/introspect", data={"token": token}, auth=(client_id, secret), timeout=10)
        return r.json()["active"]

    assert active(body["access_token"]) is False
    assert active(body["refresh_token"]) is False, "the refresh token of a replayed code outlived the replay"
