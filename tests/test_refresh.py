"""Refresh tokens rotate on every use; reuse revokes the family and its session; parallel
refreshes never 500; revocation (RFC 7009) and introspection (RFC 7662)."""
from __future__ import annotations

import concurrent.futures as cf

import requests

from .helpers import redirect_params


def _tokens(provider, scope="openid profile offline_access", **client_kw):
    client_id, secret, redirect = provider.add_client(scope="openid profile offline_access", **client_kw)
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    result = browser.login(client_id, redirect, national_id, mobile, scope=scope)
    token = browser.exchange(client_id, secret, redirect, result["code"])
    assert token.status_code == 200, token.text
    return (client_id, secret, redirect), browser, token.json()


def _refresh(provider, client, refresh_token, **extra):
    client_id, secret, _ = client
    return requests.post(f"{provider.url}/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token,
                                                        **extra}, auth=(client_id, secret), timeout=10)


def test_refresh_rotates_and_reuse_revokes_the_family_and_session(provider):
    client, browser, first = _tokens(provider)
    assert first["refresh_token"]
    second = _refresh(provider, client, first["refresh_token"])
    assert second.status_code == 200, second.text
    assert second.headers["Cache-Control"] == "no-store"
    body = second.json()
    assert body["refresh_token"] != first["refresh_token"] and body["access_token"]
    third = _refresh(provider, client, body["refresh_token"])
    assert third.status_code == 200
    # Long after the grace window (simulated by backdating), the first token comes back: reuse.
    with provider.app.app_context():
        import datetime as dt

        from idp.platform.database import db
        from idp.protocol.models import RefreshToken
        from idp.protocol.tokens import hash_token

        row = db.session.execute(db.select(RefreshToken).filter_by(token_hash=hash_token(first["refresh_token"]))).scalar_one()
        row.rotated_at = row.rotated_at - dt.timedelta(minutes=5)
        db.session.commit()
    reused = _refresh(provider, client, first["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    latest = _refresh(provider, client, third.json()["refresh_token"])
    assert latest.status_code == 400, "the whole family is revoked"
    # And the SSO session is gone: the browser must log in again.
    page = browser.start(client[0], client[2])
    assert page.status_code == 200 and 'name="national_id"' in page.text


def test_a_refused_refresh_leaves_the_token_usable(provider):
    """The claim of a refresh token and the save of its successor are one transaction: a
    request refused after the claim (here a scope wider than the grant, RFC 6749 §6) takes
    nothing from the client, and the token is rotated only by a refresh that succeeds."""
    client, _, first = _tokens(provider)
    wider = _refresh(provider, client, first["refresh_token"], scope="openid profile phone offline_access")
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope", wider.text
    again = _refresh(provider, client, first["refresh_token"])
    assert again.status_code == 200, again.text
    assert again.json()["refresh_token"] != first["refresh_token"]
    replay = _refresh(provider, client, first["refresh_token"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant", "rotated once it succeeded"


def test_parallel_refreshes_never_500(provider):
    client, _, first = _tokens(provider)
    with cf.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _refresh(provider, client, first["refresh_token"]), range(8)))
    codes = sorted(a.status_code for a in answers)
    assert 500 not in codes and codes.count(200) == 1, codes
    assert all(a.json()["error"] == "invalid_grant" for a in answers if a.status_code == 400)
    winner = next(a for a in answers if a.status_code == 200).json()
    assert _refresh(provider, client, winner["refresh_token"]).status_code == 200, "no family revocation in grace"


def test_no_refresh_token_without_offline_access(provider):
    _, _, token = _tokens(provider, scope="openid profile")
    assert "refresh_token" not in token


def test_refresh_token_of_another_client_is_refused(provider):
    client, _, first = _tokens(provider)
    other_id, other_secret, _ = provider.add_client(scope="openid offline_access")
    r = requests.post(f"{provider.url}/token", data={"grant_type": "refresh_token",
                                                     "refresh_token": first["refresh_token"]},
                      auth=(other_id, other_secret), timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert _refresh(provider, client, first["refresh_token"]).status_code == 200, "the owner still can"


def test_revoked_access_token_is_refused_at_userinfo_and_inactive(provider):
    client, _, token = _tokens(provider)
    client_id, secret, _ = client
    access = token["access_token"]
    look = requests.post(f"{provider.url}/introspect", data={"token": access}, auth=(client_id, secret), timeout=10)
    assert look.status_code == 200 and look.json()["active"] is True
    assert look.json()["client_id"] == client_id and look.json()["scope"]
    r = requests.post(f"{provider.url}/revoke", data={"token": access, "token_type_hint": "access_token"},
                      auth=(client_id, secret), timeout=10)
    assert r.status_code == 200
    info = requests.get(f"{provider.url}/userinfo", headers={"Authorization": f"Bearer {access}"}, timeout=10)
    assert info.status_code == 401
    look = requests.post(f"{provider.url}/introspect", data={"token": access}, auth=(client_id, secret), timeout=10)
    assert look.json() == {"active": False}


def test_revoked_refresh_token_and_introspection_of_it(provider):
    client, _, token = _tokens(provider)
    client_id, secret, _ = client
    look = requests.post(f"{provider.url}/introspect", data={"token": token["refresh_token"],
                                                             "token_type_hint": "refresh_token"},
                         auth=(client_id, secret), timeout=10).json()
    assert look["active"] is True and look["client_id"] == client_id and look["sub"]
    requests.post(f"{provider.url}/revoke", data={"token": token["refresh_token"]}, auth=(client_id, secret),
                  timeout=10)
    assert _refresh(provider, client, token["refresh_token"]).status_code == 400
    look = requests.post(f"{provider.url}/introspect", data={"token": token["refresh_token"]},
                         auth=(client_id, secret), timeout=10).json()
    assert look == {"active": False}


def test_introspection_needs_client_authentication_and_ownership(provider):
    client, _, token = _tokens(provider)
    r = requests.post(f"{provider.url}/introspect", data={"token": token["access_token"]}, timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    other_id, other_secret, _ = provider.add_client()
    r = requests.post(f"{provider.url}/introspect", data={"token": token["access_token"]},
                      auth=(other_id, other_secret), timeout=10)
    assert r.json() == {"active": False}
    r = requests.post(f"{provider.url}/revoke", data={"token": "garbage"}, auth=(other_id, other_secret), timeout=10)
    assert r.status_code == 200, "RFC 7009: an unknown token is not an error"


def test_a_public_client_cannot_introspect_but_may_revoke_its_own_tokens(provider):
    """Introspection answers only an authenticated client (RFC 7662 §2.1): a public client
    naming itself by client_id alone is refused, even for its own token. Revocation of its own
    tokens stays open to it (RFC 7009 §5 names public clients)."""
    client_id, _, redirect = provider.add_client(public=True)
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    result = browser.login(client_id, redirect, national_id, mobile)
    token = browser.exchange(client_id, None, redirect, result["code"]).json()
    r = requests.post(f"{provider.url}/introspect", data={"token": token["access_token"], "client_id": client_id},
                      timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
    meta = requests.get(f"{provider.url}/.well-known/openid-configuration", timeout=10).json()
    assert "none" not in meta["introspection_endpoint_auth_methods_supported"]
    r = requests.post(f"{provider.url}/revoke", data={"token": token["access_token"], "client_id": client_id},
                      timeout=10)
    assert r.status_code == 200
    info = requests.get(f"{provider.url}/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"},
                        timeout=10)
    assert info.status_code == 401


def test_scopes_national_id_and_age(provider):
    client_id, secret, redirect = provider.add_client(scope="openid national_id age")
    national_id, mobile = provider.add_citizen(birth_date="2000-01-01")
    browser = provider.flow()
    result = browser.login(client_id, redirect, national_id, mobile, scope="openid national_id age unknown_scope")
    token = browser.exchange(client_id, secret, redirect, result["code"]).json()
    assert set(token["scope"].split()) == {"openid", "age"}, "national_id needs the client's permission"
    info = requests.get(f"{provider.url}/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"},
                        timeout=10).json()
    assert info["age_over_18"] is True and "national_id" not in info
    with provider.app.app_context():
        from idp.platform.database import db
        from idp.protocol.models import Client

        c = db.session.execute(db.select(Client).filter_by(client_id=client_id)).scalar_one()
        c.client_metadata = {**c.client_metadata, "allow_national_id": True}
        db.session.commit()
        from idp.protocol.clients import clients_changed

        clients_changed()  # what agencies.py does after every change, for every node's client cache
    browser = provider.flow()
    result = browser.login(client_id, redirect, national_id, mobile, scope="openid national_id")
    token = browser.exchange(client_id, secret, redirect, result["code"]).json()
    info = requests.get(f"{provider.url}/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"},
                        timeout=10).json()
    assert info["national_id"] == national_id
    assert redirect_params
