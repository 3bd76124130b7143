"""Logout: RP-initiated logout at /logout, back-channel logout tokens delivered (and retried)
to every agency of the session, and `idp sessions revoke` / `idp logout deliver` as an
operator runs them."""
from __future__ import annotations

import datetime as dt
import json
import time
from urllib.parse import urlencode

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from idp.protocol import backchannel

from .helpers import LogoutReceiver, idp, redirect_params, verify_id_token, wait_until

EVENT = "http://schemas.openid.net/event/backchannel-logout"


# ---- a relying party's back-channel logout endpoint ----------------------------------------------

@pytest.fixture()
def receiver():
    r = LogoutReceiver()
    yield r
    r.stop()


@pytest.fixture(scope="module", autouse=True)
def quick_worker(provider):
    """Idle sweeps every 0.2 s in this module (the constant the worker reads each round);
    the module's delivery thread is stopped at the end so it cannot outlive its provider."""
    saved = backchannel.SWEEP_INTERVAL
    backchannel.SWEEP_INTERVAL = 0.2
    yield
    backchannel.stop_worker(provider.app)
    backchannel.SWEEP_INTERVAL = saved


# ---- helpers --------------------------------------------------------------------------------------

def set_backchannel(provider, client_id: str, uri: str) -> None:
    """Register a backchannel_logout_uri directly in the client's metadata."""
    from idp.platform.database import db
    from idp.protocol.models import Client

    with provider.app.app_context():
        client = db.session.execute(db.select(Client).filter_by(client_id=client_id)).scalar_one()
        client.client_metadata = {**client.client_metadata, "backchannel_logout_uri": uri}
        db.session.commit()
        from idp.protocol.clients import clients_changed

        clients_changed()  # what agencies.py does after every change, for every node's client cache


def login_for_id_token(provider, browser, client_id, secret, redirect, national_id, mobile) -> str:
    result = browser.login(client_id, redirect, national_id, mobile)
    token = browser.exchange(client_id, secret, redirect, result["code"])
    assert token.status_code == 200, token.text
    return token.json()["id_token"]


def sso_id_token(browser, client_id, secret, redirect) -> str:
    landing = browser.start(client_id, redirect)
    assert landing.is_redirect, "expected single sign-on"
    token = browser.exchange(client_id, secret, redirect, redirect_params(landing, redirect)["code"])
    assert token.status_code == 200, token.text
    return token.json()["id_token"]


def signed_in(browser, client_id, redirect) -> bool:
    """Whether the browser still has an SSO session (an authorization request answers at once)."""
    page = browser.start(client_id, redirect)
    if page.is_redirect:
        return True
    assert page.status_code == 200 and 'name="national_id"' in page.text, page.text[:300]
    return False


def id_claims(provider, id_token: str) -> dict:
    return verify_id_token(provider.url, id_token)["claims"]


def logout_url(provider, **params) -> str:
    return f"{provider.url}/logout?{urlencode(params)}"


def deliveries(provider, **where) -> list:
    from idp.platform.database import db
    from idp.protocol.models import LogoutDelivery

    with provider.app.app_context():
        rows = db.session.execute(db.select(LogoutDelivery).filter_by(**where).order_by(LogoutDelivery.id)).scalars()
        return [{c: getattr(r, c) for c in ("id", "client_id", "sub", "sid", "attempts", "next_attempt_at",
                                             "delivered_at", "given_up_at", "last_error")} for r in rows]


def verify_logout_token(provider, token: str) -> dict:
    """Verify a Logout Token as an agency would: against the published JWKS."""
    keys = KeySet.import_key_set(requests.get(f"{provider.url}/jwks", timeout=10).json())
    decoded = jwt.decode(token, keys, algorithms=["RS256", "ES256"])
    return {"header": decoded.header, "claims": decoded.claims}


# ---- discovery ------------------------------------------------------------------------------------

def test_discovery_names_the_logout_endpoints(provider):
    doc = requests.get(f"{provider.url}/.well-known/openid-configuration", timeout=10).json()
    assert doc["end_session_endpoint"] == f"{provider.url}/logout"
    assert doc["backchannel_logout_supported"] is True
    assert doc["backchannel_logout_session_supported"] is True
    assert doc["frontchannel_logout_supported"] is False


# ---- RP-initiated logout --------------------------------------------------------------------------

def test_valid_hint_and_registered_uri_redirect_with_state(provider):
    bye = "http://127.0.0.1:9/bye"
    client_id, secret, redirect = provider.add_client(post_logout_redirect_uris=[bye])
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    id_token = login_for_id_token(provider, browser, client_id, secret, redirect, national_id, mobile)
    sid = id_claims(provider, id_token)["sid"]

    response = browser.get(logout_url(provider, id_token_hint=id_token, post_logout_redirect_uri=bye,
                                      state="st/8 ä"))
    assert response.status_code == 303, response.text[:300]
    assert response.headers["Location"] == bye + "?" + urlencode({"state": "st/8 ä"})
    assert "idp_sso=;" in response.headers.get("Set-Cookie", "").replace('""', "")

    from idp.platform.audit import latest
    from idp.platform.store import store

    with provider.app.app_context():
        assert store.get_session(sid) is None
        assert latest(1, "logout")[0]["details"]["reason"] == "rp_initiated"
    assert not signed_in(browser, client_id, redirect), "a new /authorize must show the login page again"


def test_unregistered_post_logout_uri_is_never_followed(provider):
    bye = "http://127.0.0.1:9/bye"
    client_id, secret, redirect = provider.add_client(post_logout_redirect_uris=[bye])
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    id_token = login_for_id_token(provider, browser, client_id, secret, redirect, national_id, mobile)
    for evil in ("https://evil.example/phish", bye + "/x", bye + "?a=1", bye.upper()):
        response = browser.get(logout_url(provider, id_token_hint=id_token, post_logout_redirect_uri=evil,
                                          state="s"))
        assert response.status_code == 200 and "Location" not in response.headers
        assert 'href="https://evil' not in response.text and "refresh" not in response.text.lower()
    assert not signed_in(browser, client_id, redirect), "the valid hint still ended the session"


def _forged_hints(provider, id_token: str, access_token: str, client_id: str) -> dict[str, str]:
    """Tokens that are not our ID token for this client, each in its own way."""
    from idp.platform.keyring import keyring

    claims = id_claims(provider, id_token)
    header = verify_id_token(provider.url, id_token)["header"]
    with provider.app.app_context():
        ours = keyring.signing_key("RS256")
        other_issuer = jwt.encode(header, {**claims, "iss": "https://other-idp.example"}, ours.keyset)
        as_logout_token = jwt.encode({**header, "typ": "logout+jwt"}, claims, ours.keyset)
    stranger = RSAKey.generate_key(2048, private=True, parameters={"kid": header["kid"]})
    foreign_key = jwt.encode(header, claims, stranger)
    head, body, sig = id_token.split(".")
    tampered = ".".join([head, body[:-4] + ("AAAA" if body[-4:] != "AAAA" else "BBBB"), sig])
    return {"other issuer": other_issuer, "foreign key": foreign_key, "access token": access_token,
            "tampered": tampered, "logout token": as_logout_token, "garbage": "not.a.jwt"}


def test_bad_hints_never_redirect_and_ask_first(provider):
    bye = "http://127.0.0.1:9/bye"
    client_id, secret, redirect = provider.add_client(post_logout_redirect_uris=[bye])
    other_id, _, _ = provider.add_client(post_logout_redirect_uris=[bye])
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    result = browser.login(client_id, redirect, national_id, mobile)
    body = browser.exchange(client_id, secret, redirect, result["code"]).json()
    hints = _forged_hints(provider, body["id_token"], body["access_token"], client_id)
    for name, hint in hints.items():
        response = browser.get(logout_url(provider, id_token_hint=hint, post_logout_redirect_uri=bye, state="s"))
        assert response.status_code == 200 and "Location" not in response.headers, name
        assert 'name="confirm"' in response.text, name
        assert signed_in(browser, client_id, redirect), f"{name}: a bad hint must not log out"
    # A valid hint with a client_id it was not issued to identifies nobody either.
    response = browser.get(logout_url(provider, id_token_hint=body["id_token"], client_id=other_id,
                                      post_logout_redirect_uri=bye))
    assert response.status_code == 200 and "Location" not in response.headers
    assert signed_in(browser, client_id, redirect)


def test_a_cross_site_post_without_the_cookie_ends_the_hinted_session(provider):
    """An RP may POST the logout request; the SameSite=Lax cookie is then not sent, so the
    valid hint alone names the session to end."""
    bye = "http://127.0.0.1:9/bye"
    client_id, secret, redirect = provider.add_client(post_logout_redirect_uris=[bye])
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    id_token = login_for_id_token(provider, browser, client_id, secret, redirect, national_id, mobile)
    response = requests.post(f"{provider.url}/logout", data={"id_token_hint": id_token, "state": "p",
                                                             "post_logout_redirect_uri": bye},
                             allow_redirects=False, timeout=10)
    assert response.status_code == 303 and response.headers["Location"] == bye + "?state=p"
    assert not signed_in(browser, client_id, redirect)


def test_without_hint_the_person_confirms(provider):
    bye = "http://127.0.0.1:9/bye"
    client_id, secret, redirect = provider.add_client(post_logout_redirect_uris=[bye])
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    browser.login(client_id, redirect, national_id, mobile)

    page = browser.get(logout_url(provider, client_id=client_id, post_logout_redirect_uri=bye, state="s1",
                                  ui_locales="en"))
    assert page.status_code == 200 and 'name="confirm"' in page.text and 'name="csrf_token"' in page.text
    assert "Sign out" in page.text
    assert signed_in(browser, client_id, redirect), "showing the page alone does not log out"

    forged = browser.http.post(f"{provider.url}/logout/confirm", data={"confirm": "1"}, allow_redirects=False,
                               timeout=10)
    assert forged.status_code == 400
    assert signed_in(browser, client_id, redirect), "a POST without the CSRF token does not log out"

    done = browser.submit(page, {"confirm": "1"})
    assert done.status_code == 303 and done.headers["Location"] == bye + "?state=s1"
    assert not signed_in(browser, client_id, redirect)


def test_without_hint_or_client_there_is_a_page_not_a_redirect(provider):
    client_id, secret, redirect = provider.add_client(post_logout_redirect_uris=["http://127.0.0.1:9/bye"])
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    browser.login(client_id, redirect, national_id, mobile)
    page = browser.get(logout_url(provider, post_logout_redirect_uri="http://127.0.0.1:9/bye"))
    done = browser.submit(page, {"confirm": "1"})
    assert done.status_code == 200 and "Location" not in done.headers
    assert not signed_in(browser, client_id, redirect)


# ---- back-channel logout --------------------------------------------------------------------------

def test_every_agency_of_the_session_gets_a_logout_token(provider, receiver):
    first_id, first_secret, first_redirect = provider.add_client(name="Schools")
    second_id, second_secret, second_redirect = provider.add_client(
        name="Tax", redirect_uri="http://localhost:9/tax/cb")
    quiet_id, quiet_secret, quiet_redirect = provider.add_client(name="No back-channel")
    set_backchannel(provider, first_id, receiver.url("/schools/bcl"))
    set_backchannel(provider, second_id, receiver.url("/tax/bcl"))
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    first = id_claims(provider, login_for_id_token(provider, browser, first_id, first_secret, first_redirect,
                                                   national_id, mobile))
    second_token = sso_id_token(browser, second_id, second_secret, second_redirect)
    second = id_claims(provider, second_token)
    sso_id_token(browser, quiet_id, quiet_secret, quiet_redirect)
    assert first["sid"] == second["sid"] and first["sub"] != second["sub"]

    response = browser.get(logout_url(provider, id_token_hint=second_token))
    assert response.status_code == 200
    assert wait_until(lambda: receiver.tokens_for("/schools/bcl") and receiver.tokens_for("/tax/bcl"), 10)

    for path, client_id, id_token_claims in (("/schools/bcl", first_id, first), ("/tax/bcl", second_id, second)):
        [post] = [p for p in receiver.posts if p["path"] == path]
        assert post["content_type"].startswith("application/x-www-form-urlencoded")
        verified = verify_logout_token(provider, post["form"]["logout_token"])
        header, claims = verified["header"], verified["claims"]
        assert header["typ"] == "logout+jwt" and header["kid"] and header["alg"] == "RS256"
        assert claims["iss"] == provider.url
        assert claims["aud"] == client_id
        assert claims["sub"] == id_token_claims["sub"]
        assert claims["sid"] == id_token_claims["sid"]
        assert claims["events"] == {EVENT: {}}
        assert "nonce" not in claims
        assert claims["jti"] and 0 < claims["exp"] - claims["iat"] <= 120 and abs(claims["iat"] - time.time()) < 60
    rows = deliveries(provider, sid=first["sid"])
    assert {r["client_id"] for r in rows} == {first_id, second_id}
    assert all(r["delivered_at"] and r["attempts"] == 1 for r in rows)
    provider.outbox.settle(0.3)
    assert len(receiver.posts) == 2, "each agency is told once"


def test_a_failed_delivery_is_retried(provider):
    receiver = LogoutReceiver(statuses=[500])
    try:
        client_id, secret, redirect = provider.add_client()
        set_backchannel(provider, client_id, receiver.url("/bcl"))
        national_id, mobile = provider.add_citizen()
        browser = provider.flow()
        id_token = login_for_id_token(provider, browser, client_id, secret, redirect, national_id, mobile)
        sid = id_claims(provider, id_token)["sid"]
        browser.get(logout_url(provider, id_token_hint=id_token))
        assert wait_until(lambda: (rows := deliveries(provider, sid=sid)) and rows[0]["last_error"], 10)
        [row] = deliveries(provider, sid=sid)
        assert row["attempts"] == 1 and row["delivered_at"] is None and row["last_error"] == "HTTP 500"
        wait = (row["next_attempt_at"] - dt.datetime.now(dt.timezone.utc)).total_seconds()
        assert backchannel.BACKOFF[0] - 5 < wait <= backchannel.BACKOFF[0]

        from idp.platform.database import db
        from idp.protocol.models import LogoutDelivery

        with provider.app.app_context():  # time passes: the retry is due
            db.session.get(LogoutDelivery, row["id"]).next_attempt_at = dt.datetime.now(dt.timezone.utc)
            db.session.commit()
            backchannel.sweep()  # the worker may win the claim instead; either way exactly one delivery
        assert wait_until(lambda: deliveries(provider, sid=sid)[0]["delivered_at"] is not None, 10)
        [row] = deliveries(provider, sid=sid)
        assert row["attempts"] == 2 and row["last_error"] is None
        assert len(receiver.tokens_for("/bcl")) == 2
        tokens = [verify_logout_token(provider, t)["claims"] for t in receiver.tokens_for("/bcl")]
        assert tokens[0]["jti"] != tokens[1]["jti"] and tokens[0]["sid"] == tokens[1]["sid"] == sid
    finally:
        receiver.stop()


def test_a_delivery_is_given_up_after_the_last_attempt(provider, monkeypatch):
    monkeypatch.setattr(backchannel, "MAX_ATTEMPTS", 1)
    receiver = LogoutReceiver(statuses=[503] * 5)
    try:
        client_id, secret, redirect = provider.add_client()
        set_backchannel(provider, client_id, receiver.url("/bcl"))
        national_id, mobile = provider.add_citizen()
        browser = provider.flow()
        id_token = login_for_id_token(provider, browser, client_id, secret, redirect, national_id, mobile)
        sid = id_claims(provider, id_token)["sid"]
        browser.get(logout_url(provider, id_token_hint=id_token))
        assert wait_until(lambda: deliveries(provider, sid=sid)[0]["given_up_at"] is not None, 10)
        [row] = deliveries(provider, sid=sid)
        assert row["delivered_at"] is None and row["last_error"] == "HTTP 503" and row["attempts"] == 1
    finally:
        receiver.stop()


def test_undelivered_logouts_survive_a_restart(provider, receiver):
    """Rows queued by a process that stopped before delivering are delivered by `idp logout
    deliver` (cron), a separate process."""
    client_id, secret, redirect = provider.add_client()
    set_backchannel(provider, client_id, receiver.url("/bcl"))
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    id_token = login_for_id_token(provider, browser, client_id, secret, redirect, national_id, mobile)
    claims = id_claims(provider, id_token)
    backchannel.stop_worker(provider.app)  # this "process" goes away before it delivers
    try:
        assert browser.get(logout_url(provider, id_token_hint=id_token)).status_code == 200
        time.sleep(0.5)  # real time: shows that no other thread delivers after the worker stopped
        assert receiver.posts == []
        [row] = deliveries(provider, sid=claims["sid"])
        assert row["delivered_at"] is None and row["attempts"] == 0

        out = idp(provider, "logout", "deliver", "--json")
        assert out.returncode == 0, out.stderr
        counts = json.loads(out.stdout)
        assert counts["delivered"] >= 1 and counts["claimed"] >= 1
        [token] = receiver.tokens_for("/bcl")
        verified = verify_logout_token(provider, token)
        assert verified["header"]["typ"] == "logout+jwt"
        assert verified["claims"]["iss"] == provider.url and verified["claims"]["sub"] == claims["sub"]
        assert deliveries(provider, sid=claims["sid"])[0]["delivered_at"] is not None

        again = json.loads(idp(provider, "logout", "deliver", "--json").stdout)
        assert again["claimed"] == 0 or len(receiver.tokens_for("/bcl")) == 1
    finally:
        backchannel.start_worker(provider.app)


def test_sessions_revoke_logs_a_citizen_out_everywhere(provider, receiver):
    client_id, secret, redirect = provider.add_client()
    set_backchannel(provider, client_id, receiver.url("/bcl"))
    national_id, mobile = provider.add_citizen()
    phone, laptop = provider.flow(), provider.flow()
    sids = set()
    for browser in (phone, laptop):
        sids.add(id_claims(provider, login_for_id_token(provider, browser, client_id, secret, redirect,
                                                        national_id, mobile))["sid"])
    assert len(sids) == 2
    bystander_id, bystander_mobile = provider.add_citizen()
    bystander = provider.flow()
    bystander.login(client_id, redirect, bystander_id, bystander_mobile)

    backchannel.start_worker(provider.app)  # the serving process's delivery thread (idempotent)
    out = idp(provider, "sessions", "revoke", "--national-id", national_id, "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["sessions_ended"] == 2 and report["backchannel_queued"] == 2
    assert national_id not in out.stdout

    assert not signed_in(phone, client_id, redirect) and not signed_in(laptop, client_id, redirect)
    assert signed_in(bystander, client_id, redirect)
    # The running provider's delivery thread picks the queued rows up.
    assert wait_until(lambda: len(receiver.tokens_for("/bcl")) == 2, 15)
    assert {verify_logout_token(provider, t)["claims"]["sid"] for t in receiver.tokens_for("/bcl")} == sids

    again = json.loads(idp(provider, "sessions", "revoke", "--national-id", national_id, "--json").stdout)
    assert again["sessions_ended"] == 0
    missing = idp(provider, "sessions", "revoke", "--national-id", "0000000001")
    assert missing.returncode != 0 and "Traceback" not in missing.stderr


def test_access_tokens_of_an_ended_session_are_refused_and_inactive(provider):
    """When a citizen's sessions are ended (`idp sessions revoke`, log out everywhere), the
    access tokens issued in them are refused at userinfo and introspected as inactive alike."""
    client_id, secret, redirect = provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    token = browser.exchange(client_id, secret, redirect, browser.login(client_id, redirect, national_id, mobile)["code"])
    access = token.json()["access_token"]

    def userinfo() -> int:
        return requests.get(f"{provider.url}/userinfo", headers={"Authorization": f"Bearer {access}"},
                            timeout=10).status_code

    def active() -> bool:
        return requests.post(f"{provider.url}/introspect", data={"token": access}, auth=(client_id, secret),
                             timeout=10).json()["active"]

    assert userinfo() == 200 and active() is True
    out = idp(provider, "sessions", "revoke", "--national-id", national_id, "--json")
    assert out.returncode == 0, out.stderr
    assert userinfo() == 401 and active() is False
