"""What one stranger can make a node keep, and what the store gives away: the paused
authorization request is only what the provider understands, capped in length, and limited per
client address; single sign-on sessions are stored under a hash of their cookie."""
from __future__ import annotations

import re

import redis

from .conftest import GENEROUS_IP_LIMITS
from .helpers import login_url, redirect_params, shows_login


def _paused_request_size(provider, response) -> int:
    """The stored size of the paused request a redirect to the login page, or the login page
    itself (its form), points at."""
    where = response.headers["Location"] if response.is_redirect else login_url(response)
    rid = re.search(r"[?&]r=([A-Za-z0-9_\-]+)", where).group(1)
    r = redis.Redis.from_url(provider.settings.store.url, decode_responses=True)
    return r.strlen(f"{provider.settings.store.prefix}req:{rid}")


def test_a_hostile_authorization_request_is_stored_in_a_few_kb(make_provider):
    """A valid request plus thirty unknown parameters of 2,000 characters (60 KB, under the body
    cap): only the parameters the provider understands are kept."""
    provider = make_provider(limits=GENEROUS_IP_LIMITS)
    client_id, _, redirect = provider.add_client()
    browser = provider.flow()
    request = {**_decoded(browser.authorize_url(client_id, redirect)),
               **{f"junk{i}": "x" * 2000 for i in range(30)}}
    answer = browser.http.post(f"{provider.url}/authorize", data=request, allow_redirects=False, timeout=10)
    assert answer.status_code == 303 and "/login" in answer.headers["Location"], answer.text[:300]
    size = _paused_request_size(provider, answer)
    assert 0 < size < 2048, f"stored {size} bytes"
    page = browser.follow(answer, redirect)
    assert 'name="national_id"' in page.text, "the login goes on from what was kept"


def _decoded(url: str) -> dict[str, str]:
    from urllib.parse import parse_qsl, urlsplit

    return dict(parse_qsl(urlsplit(url).query))


def test_understood_parameters_are_capped_and_refused_past_the_cap(make_provider):
    provider = make_provider(limits=GENEROUS_IP_LIMITS)
    client_id, _, redirect = provider.add_client()
    browser = provider.flow()
    # every understood parameter at (or near) its cap still fits in a few KB
    full = browser.get(browser.authorize_url(client_id, redirect, state="s" * 1024, nonce="n" * 256,
                                             login_hint="h" * 256, acr_values="urn:idp:acr:sms " + "a" * 200,
                                             ui_locales="fa en"))
    assert shows_login(full), full.status_code
    assert _paused_request_size(provider, full) < 4096
    for name, longest in (("state", 1024), ("nonce", 256), ("login_hint", 256), ("acr_values", 256)):
        answer = browser.get(browser.authorize_url(client_id, redirect, **{"state": "s1", name: "v" * (longest + 1)}))
        params = redirect_params(answer, redirect)
        assert params["error"] == "invalid_request" and name in params["error_description"], params


def test_paused_requests_are_limited_per_client_address(make_provider):
    provider = make_provider(server={"proxy_hops": 1}, limits={**GENEROUS_IP_LIMITS, "paused_requests_per_ip": "3/60"})
    client_id, _, redirect = provider.add_client()
    browser = provider.flow()
    statuses = []
    for _ in range(4):
        answer = browser.http.get(browser.authorize_url(client_id, redirect), allow_redirects=False, timeout=10,
                                  headers={"X-Forwarded-For": "10.20.0.1"})
        statuses.append(answer.status_code)
    assert statuses == [200, 200, 200, 429], statuses  # the first page thrice, then refused
    assert 0 < int(answer.headers["Retry-After"]) <= 60
    assert "<html" in answer.text, "a page for the person, not a stack trace"
    other = browser.http.get(browser.authorize_url(client_id, redirect), allow_redirects=False, timeout=10,
                             headers={"X-Forwarded-For": "10.20.0.2"})
    assert shows_login(other), other.status_code  # another address is not refused


def test_an_authorization_request_without_redirect_uri_is_refused(make_provider):
    """OIDC Core §3.1.2.1 makes redirect_uri REQUIRED: no code, and no redirect anywhere."""
    provider = make_provider(limits=GENEROUS_IP_LIMITS)
    client_id, _, redirect = provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    browser.login(client_id, redirect, national_id, mobile)  # with a session, a code would be issued at once
    answer = browser.get(browser.authorize_url(client_id, None))
    assert answer.status_code == 400 and "Location" not in answer.headers
    assert "invalid_request" in answer.text


def _everything_in_the_store(provider) -> str:
    """Every key under the provider's prefix and every value, as one text."""
    r = redis.Redis.from_url(provider.settings.store.url)
    parts = []
    for key in r.scan_iter(match=provider.settings.store.prefix + "*"):
        kind = r.type(key).decode()
        value = {"string": r.get, "hash": r.hgetall, "set": r.smembers, "zset": lambda k: r.zrange(k, 0, -1),
                 "list": lambda k: r.lrange(k, 0, -1)}.get(kind, lambda k: b"")(key)
        parts.append(key.decode() + " " + repr(value))
    return "\n".join(parts)


def test_the_store_never_holds_a_session_cookie(make_provider):
    """Whoever reads the store (a replica, a backup) finds no cookie to present: sessions are
    kept under a hash of it. The cookie still signs the citizen in to a second agency."""
    provider = make_provider(limits=GENEROUS_IP_LIMITS)
    first, second = provider.add_client(), provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    browser.login(first[0], first[2], national_id, mobile)
    assert redirect_params(browser.start(second[0], second[2]), second[2])["code"], "SSO by the cookie"
    cookie = browser.http.cookies.get("idp_sso")
    assert cookie and len(cookie) >= 40
    stored = _everything_in_the_store(provider)
    assert "sess:" in stored and cookie not in stored
    thief = provider.flow()
    sid = re.search(r"sess:([0-9a-f]{64})", stored).group(1)
    thief.http.cookies.set("idp_sso", sid, domain="127.0.0.1", path="/")
    assert 'name="national_id"' in thief.start(second[0], second[2]).text, "the stored id is not a cookie"
