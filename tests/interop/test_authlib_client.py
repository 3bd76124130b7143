"""Authlib's client as a relying party of the real provider.

The agency is a small Flask app built on ``authlib.integrations.flask_client`` (discovery
through ``server_metadata_url``; ``authorize_redirect`` with PKCE S256, state and nonce kept in
the agency's session; ``authorize_access_token`` exchanging the code with client_secret_basic and
validating the ID token against the JWKS: signature, iss, aud, nonce, exp; ``userinfo``;
``logout_redirect`` / ``validate_logout_response`` for RP-initiated logout), plus Authlib's
``requests_client.OAuth2Session`` for refresh, revocation and introspection. The test plays the
citizen's browser between the two, and the agency's back-channel logout endpoint.
"""
from __future__ import annotations

import secrets
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.flask_client import OAuth
from authlib.integrations.requests_client import OAuth2Session
from flask import Flask, abort, jsonify, request, session
from joserfc.errors import JoseError

from .conftest import verify_logout_token

SCOPE = "openid profile offline_access"


class AuthlibAgency:
    """An agency's web app using Authlib's Flask client, driven through Flask's test client."""

    def __init__(self, provider, client_id: str, secret: str, redirect_uri: str, post_logout_uri: str | None = None):
        self.redirect_uri, self.post_logout_uri = redirect_uri, post_logout_uri
        app = Flask(f"authlib-agency-{client_id}")
        app.config.update(SECRET_KEY=secrets.token_hex(32), TESTING=True)  # errors reach the test
        oauth = OAuth(app)
        oauth.register(
            "idp", client_id=client_id, client_secret=secret,
            server_metadata_url=f"{provider.url}/.well-known/openid-configuration",
            client_kwargs={"scope": SCOPE, "code_challenge_method": "S256",
                           "token_endpoint_auth_method": "client_secret_basic"},
        )
        self.app, self.idp = app, oauth.idp
        callback_path = urlsplit(redirect_uri).path
        bye_path = urlsplit(post_logout_uri).path if post_logout_uri else "/bye"

        @app.get("/login")
        def login():
            return oauth.idp.authorize_redirect(redirect_uri)

        @app.get(callback_path)
        def callback():
            # Authlib's client leaves RFC 9207 to the application: check `iss` when advertised.
            metadata = oauth.idp.load_server_metadata()
            if metadata.get("authorization_response_iss_parameter_supported") and \
                    request.args.get("iss") != metadata["issuer"]:
                abort(400, "iss mismatch (RFC 9207)")
            token = oauth.idp.authorize_access_token()  # code exchange + ID token validation
            session["id_token"] = token["id_token"]
            userinfo = oauth.idp.userinfo(token=token)
            return jsonify(token={k: v for k, v in token.items() if k != "userinfo"},
                           id_claims=dict(token["userinfo"]), userinfo=dict(userinfo))

        @app.get("/logout")
        def logout():
            return oauth.idp.logout_redirect(post_logout_redirect_uri=post_logout_uri,
                                             id_token_hint=session.get("id_token"))

        @app.get(bye_path)
        def bye():
            return jsonify(oauth.idp.validate_logout_response())

        self.http = app.test_client()

    def start(self) -> str:
        """The authorization URL the library sends the browser to."""
        r = self.http.get("/login")
        assert r.status_code == 302, r.get_data(as_text=True)
        return r.headers["Location"]

    def come_back(self, url: str):
        """The browser arrives at the agency with the provider's answer."""
        parts = urlsplit(url)
        return self.http.get(f"{parts.path}?{parts.query}")


@pytest.fixture()
def agency(interop_provider):
    def make(**client_kw):
        redirect = f"http://127.0.0.1:9/authlib-{secrets.token_hex(3)}/cb"
        client_id, secret, _ = interop_provider.add_client(name="Authlib agency", redirect_uri=redirect, scope=SCOPE,
                                                           **client_kw)
        bye = (client_kw.get("post_logout_redirect_uris") or [None])[0]
        return AuthlibAgency(interop_provider, client_id, secret, redirect, bye), client_id, secret
    return make


def login(agency: AuthlibAgency, browser, provider, birth_date="1984-02-29"):
    """Log a new citizen in through the agency; returns (json of the callback, citizen)."""
    national_id, mobile = provider.add_citizen(birth_date=birth_date)
    url = agency.start()
    callback = browser.walk_login(url, agency.redirect_uri, national_id, mobile)
    r = agency.come_back(callback)
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    return r.get_json(), (national_id, mobile), url, callback


def test_discovery_with_authlib(interop_provider, agency):
    rp, _, _ = agency()
    with rp.app.app_context():
        metadata = rp.idp.load_server_metadata()
        jwks = rp.idp.fetch_jwk_set()
    assert metadata["issuer"] == interop_provider.url
    for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
                 "revocation_endpoint", "introspection_endpoint", "end_session_endpoint"):
        assert metadata[name].startswith(interop_provider.url + "/"), name
    assert "client_secret_basic" in metadata["token_endpoint_auth_methods_supported"]
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert "offline_access" in metadata["scopes_supported"]
    assert jwks["keys"] and all("d" not in k for k in jwks["keys"])


def test_code_flow_with_pkce_id_token_and_userinfo(interop_provider, browser, agency):
    rp, client_id, _ = agency()
    url = rp.start()
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query["code_challenge_method"] == "S256" and query["code_challenge"] and query["nonce"]
    assert query["response_type"] == "code" and query["client_id"] == client_id
    national_id, mobile = interop_provider.add_citizen(birth_date="1984-02-29")
    callback = browser.walk_login(url, rp.redirect_uri, national_id, mobile)
    back = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    assert back["state"] == query["state"] and back["iss"] == interop_provider.url

    r = rp.come_back(callback)
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    body = r.get_json()
    token, claims, userinfo = body["token"], body["id_claims"], body["userinfo"]
    assert token["token_type"].lower() == "bearer" and token["refresh_token"]
    # Validated by Authlib (CodeIDToken against the JWKS); checked again here for the record.
    assert claims["iss"] == interop_provider.url and claims["nonce"] == query["nonce"]
    assert claims["aud"] in (client_id, [client_id]) and claims["exp"] > time.time()
    assert claims["sub"] and claims["sub"] != national_id
    assert userinfo["sub"] == claims["sub"] and userinfo["birthdate"] == "1984-02-29"

    # Authlib really validates: the same ID token with another nonce, or for another client, fails.
    with rp.app.app_context():
        with pytest.raises(JoseError):
            rp.idp.parse_id_token(token, nonce="not-the-nonce")
        rp.idp.client_id = "someone-else"
        try:
            with pytest.raises(JoseError):
                rp.idp.parse_id_token(token, nonce=query["nonce"])
        finally:
            rp.idp.client_id = client_id

    # A replayed callback: Authlib refuses the unknown state before spending anything.
    with pytest.raises(OAuthError):
        rp.come_back(callback)


def test_refresh_rotation_introspection_revocation(interop_provider, browser, agency):
    rp, client_id, secret = agency()
    body, _, _, _ = login(rp, browser, interop_provider)
    token, sub = body["token"], body["id_claims"]["sub"]
    with rp.app.app_context():
        metadata = rp.idp.load_server_metadata()
    oauth = OAuth2Session(client_id, secret, token_endpoint_auth_method="client_secret_basic",
                          revocation_endpoint_auth_method="client_secret_basic", token=dict(token))

    first_refresh = token["refresh_token"]
    refreshed = oauth.refresh_token(metadata["token_endpoint"])
    assert refreshed["refresh_token"] != first_refresh, "refresh tokens rotate on every use"
    assert refreshed["access_token"] != token["access_token"]
    info = oauth.get(metadata["userinfo_endpoint"], timeout=10)  # bearer from the new token
    assert info.status_code == 200 and info.json()["sub"] == sub

    looked = oauth.introspect_token(metadata["introspection_endpoint"], token=refreshed["access_token"])
    assert looked.status_code == 200, looked.text
    assert looked.json()["active"] is True and looked.json()["client_id"] == client_id and looked.json()["sub"] == sub
    looked = oauth.introspect_token(metadata["introspection_endpoint"], token=refreshed["refresh_token"],
                                    token_type_hint="refresh_token")
    assert looked.json()["active"] is True and looked.json()["sub"] == sub

    r = oauth.revoke_token(metadata["revocation_endpoint"], token=refreshed["access_token"],
                           token_type_hint="access_token")
    assert r.status_code == 200, r.text
    assert oauth.introspect_token(metadata["introspection_endpoint"],
                                  token=refreshed["access_token"]).json() == {"active": False}
    assert oauth.get(metadata["userinfo_endpoint"], timeout=10).status_code == 401

    r = oauth.revoke_token(metadata["revocation_endpoint"], token=refreshed["refresh_token"],
                           token_type_hint="refresh_token")
    assert r.status_code == 200, r.text
    with pytest.raises(OAuthError) as refused:
        oauth.refresh_token(metadata["token_endpoint"], refresh_token=refreshed["refresh_token"])
    assert refused.value.error == "invalid_grant"
    # Revoking a token that is unknown or already revoked still answers 200 (RFC 7009 §2.2).
    r = oauth.revoke_token(metadata["revocation_endpoint"], token=secrets.token_urlsafe(32))
    assert r.status_code == 200, r.text


def test_rp_initiated_logout_and_backchannel(interop_provider, browser, agency, logout_receiver, discovery):
    bcl_path = "/authlib/backchannel"
    bye = f"http://127.0.0.1:9/authlib-{secrets.token_hex(3)}/bye"
    rp, client_id, secret = agency(post_logout_redirect_uris=[bye],
                                   backchannel_logout_uri=logout_receiver.url(bcl_path))
    body, _, _, _ = login(rp, browser, interop_provider)
    claims = body["id_claims"]

    out = rp.http.get("/logout")  # Authlib's logout_redirect
    assert out.status_code == 302
    end_session_url = out.headers["Location"]
    query = {k: v[0] for k, v in parse_qs(urlsplit(end_session_url).query).items()}
    assert end_session_url.startswith(discovery["end_session_endpoint"] + "?")
    assert query["id_token_hint"] == body["token"]["id_token"] and query["post_logout_redirect_uri"] == bye
    assert query["state"]

    landing = browser.walk_logout(end_session_url)
    assert landing.status_code in (302, 303), f"{landing.status_code}: {landing.text[:300]}"
    location = landing.headers["Location"]
    assert location == f"{bye}?state={query['state']}", location
    back = rp.come_back(location)  # Authlib's validate_logout_response checks the state
    assert back.status_code == 200 and back.get_json() == {"post_logout_redirect_uri": bye}

    posts = logout_receiver.wait_for(bcl_path)
    assert len(posts) == 1, posts
    logout = verify_logout_token(interop_provider.url, discovery["jwks_uri"], posts[0]["form"]["logout_token"],
                                 client_id)
    assert logout["claims"]["sid"] == claims["sid"] and logout["claims"]["sub"] == claims["sub"]

    assert not browser.signed_in(client_id, rp.redirect_uri), "the SSO session must be over"
    r = requests.post(discovery["token_endpoint"], data={"grant_type": "refresh_token",
                                                         "refresh_token": body["token"]["refresh_token"]},
                      auth=(client_id, secret), timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", "logout revokes the session's refresh tokens"
