"""Discovery advertises exactly what is implemented: every endpoint it names answers as that kind
of endpoint, and every value it advertises (auth methods and their algorithms, response and grant
types, PKCE methods, subject types, scopes, claims, locales, the RFC 9207 `iss`, request objects)
is honoured by the running provider. Client authentication is done by Authlib's client, the
way an agency written in Python would do it."""
from __future__ import annotations

import json
import secrets
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oauth2.rfc7523.assertion import private_key_jwt_sign
from joserfc.jwk import ECKey, RSAKey

from ..helpers import verify_id_token


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


class ShortLivedPrivateKeyJWT(PrivateKeyJWT):
    """Authlib's private_key_jwt with a 60-second assertion (Authlib's default is one hour,
    which this provider refuses: see test_authlib_default_private_key_jwt below)."""

    def sign(self, auth, token_endpoint):
        return private_key_jwt_sign(auth.client_secret, client_id=auth.client_id, token_endpoint=token_endpoint,
                                    alg=self.alg, expires_in=60)


def key_pair(alg: str):
    key = ECKey.generate_key("P-256") if alg == "ES256" else RSAKey.generate_key(2048)
    kid = key.thumbprint()
    public = {**key.as_dict(private=False), "kid": kid, "alg": alg, "use": "sig"}
    private = (ECKey if alg == "ES256" else RSAKey).import_key({**key.as_dict(private=True), "kid": kid})
    return private, {"keys": [public]}


def code_for(provider, browser_factory, client_id, redirect, scope="openid profile offline_access", **extra):
    """Log a new citizen in for a client; returns (authorization response, browser)."""
    national_id, mobile = provider.add_citizen()
    browser = browser_factory()
    return browser.login(client_id, redirect, national_id, mobile, scope=scope, **extra), browser


@pytest.fixture()
def new_browser(interop_provider):
    from .conftest import Browser

    return lambda: Browser(interop_provider)


# ---- every advertised endpoint answers ---------------------------------------------------------

def test_every_advertised_endpoint_answers(interop_provider, discovery):
    d = discovery
    assert d["issuer"] == interop_provider.url
    for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri", "revocation_endpoint",
                 "introspection_endpoint", "end_session_endpoint"):
        assert d[name].startswith(interop_provider.url + "/"), name

    # The authorization endpoint (GET and POST, OIDC Core §3.1.2.1): a bad request is a page, not a 404.
    for method in ("GET", "POST"):
        r = requests.request(method, d["authorization_endpoint"], allow_redirects=False, timeout=10)
        assert r.status_code == 400 and r.headers["Content-Type"].startswith("text/html"), (method, r.status_code)
    r = requests.post(d["token_endpoint"], data={}, timeout=10)
    assert r.status_code == 400 and r.json()["error"] in ("invalid_request", "unsupported_grant_type")
    for method in ("GET", "POST"):  # OIDC Core §5.3.1: GET and POST
        r = requests.request(method, d["userinfo_endpoint"], timeout=10)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer"), (method, r.status_code)
    for name in ("revocation_endpoint", "introspection_endpoint"):
        r = requests.post(d[name], data={"token": "x"}, timeout=10)
        assert r.status_code == 401 and r.json()["error"] == "invalid_client", (name, r.status_code, r.text)
    for method in ("GET", "POST"):  # RP-Initiated Logout §2: GET and POST
        r = requests.request(method, d["end_session_endpoint"], allow_redirects=False, timeout=10)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html"), (method, r.status_code)
    r = requests.get(d["jwks_uri"], timeout=10)
    assert r.status_code == 200 and r.json()["keys"]
    algs = {k.get("alg") for k in r.json()["keys"]}
    assert set(d["id_token_signing_alg_values_supported"]) <= algs


# ---- client authentication: every advertised method, at every endpoint that advertises it --------

@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post", "none",
                                    "private_key_jwt:RS256", "private_key_jwt:ES256"])
def test_every_advertised_client_auth_method_works(interop_provider, discovery, new_browser, method):
    name, _, alg = method.partition(":")
    d = discovery
    assert name in d["token_endpoint_auth_methods_supported"]
    assert name in d["revocation_endpoint_auth_methods_supported"]
    # introspection answers authenticated clients only (RFC 7662 §2.1): never `none`
    assert (name in d["introspection_endpoint_auth_methods_supported"]) == (name != "none")
    kw: dict = {"public": True} if name == "none" else {}
    key = None
    if name == "private_key_jwt":
        assert alg in d["token_endpoint_auth_signing_alg_values_supported"]
        assert alg in d["revocation_endpoint_auth_signing_alg_values_supported"]
        assert alg in d["introspection_endpoint_auth_signing_alg_values_supported"]
        key, jwks = key_pair(alg)
        kw = {"auth_method": "private_key_jwt", "jwks": jwks}
    client_id, secret, redirect = interop_provider.add_client(scope="openid profile offline_access", **kw)
    result, browser = code_for(interop_provider, new_browser, client_id, redirect)

    session = OAuth2Session(client_id, key if key is not None else secret, redirect_uri=redirect,
                            token_endpoint_auth_method=name, revocation_endpoint_auth_method=name)
    if name == "private_key_jwt":
        session.register_client_auth_method(ShortLivedPrivateKeyJWT(d["token_endpoint"], alg=alg))
    token = session.fetch_token(d["token_endpoint"], code=result["code"], code_verifier=browser.last_verifier)
    assert token["access_token"] and token["id_token"] and token["refresh_token"]
    refreshed = session.refresh_token(d["token_endpoint"])
    assert refreshed["refresh_token"] != token["refresh_token"]
    looked = session.introspect_token(d["introspection_endpoint"], token=refreshed["access_token"])
    if name == "none":
        assert looked.status_code == 401 and looked.json()["error"] == "invalid_client", looked.text
    else:
        assert looked.status_code == 200 and looked.json()["active"] is True, looked.text
    revoked = session.revoke_token(d["revocation_endpoint"], token=refreshed["access_token"])
    assert revoked.status_code == 200, revoked.text
    if name != "none":
        looked = session.introspect_token(d["introspection_endpoint"], token=refreshed["access_token"])
        assert looked.json() == {"active": False}


def test_authlib_default_private_key_jwt(interop_provider, discovery, new_browser):
    """Authlib's stock PrivateKeyJWT, as its documentation shows it, at the token endpoint."""
    key, jwks = key_pair("RS256")
    client_id, _, redirect = interop_provider.add_client(auth_method="private_key_jwt", jwks=jwks)
    result, browser = code_for(interop_provider, new_browser, client_id, redirect, scope="openid profile")
    session = OAuth2Session(client_id, key, redirect_uri=redirect, token_endpoint_auth_method="private_key_jwt")
    session.register_client_auth_method(PrivateKeyJWT(discovery["token_endpoint"]))
    token = session.fetch_token(discovery["token_endpoint"], code=result["code"], code_verifier=browser.last_verifier)
    assert token["id_token"]


def test_private_key_jwt_audience_of_the_endpoint_called(interop_provider, discovery, new_browser):
    key, jwks = key_pair("ES256")
    client_id, _, redirect = interop_provider.add_client(auth_method="private_key_jwt", jwks=jwks)
    result, browser = code_for(interop_provider, new_browser, client_id, redirect, scope="openid profile")
    session = OAuth2Session(client_id, key, redirect_uri=redirect, token_endpoint_auth_method="private_key_jwt",
                            revocation_endpoint_auth_method="private_key_jwt")
    session.register_client_auth_method(ShortLivedPrivateKeyJWT(alg="ES256"))  # aud: the URL posted to
    token = session.fetch_token(discovery["token_endpoint"], code=result["code"], code_verifier=browser.last_verifier)
    looked = session.introspect_token(discovery["introspection_endpoint"], token=token["access_token"])
    assert looked.status_code == 200, looked.text
    assert session.revoke_token(discovery["revocation_endpoint"], token=token["access_token"]).status_code == 200


# ---- advertised values are honoured -------------------------------------------------------------

def test_response_types_grant_types_and_pkce_are_what_is_advertised(interop_provider, discovery, new_browser):
    d = discovery
    assert d["response_types_supported"] == ["code"] and d["response_modes_supported"] == ["query"]
    assert d["code_challenge_methods_supported"] == ["S256"]
    assert d["authorization_response_iss_parameter_supported"] is True
    client_id, secret, redirect = interop_provider.add_client()
    browser = new_browser()
    # Anything but `code` is refused at the redirect URI, with `iss` (RFC 9207 §2: errors too).
    for response_type in ("token", "id_token", "code id_token"):
        r = browser.get(browser.authorize_url(client_id, redirect, response_type=response_type))
        q = query_of(r.headers["Location"])
        assert q["error"] == "unsupported_response_type" and q["iss"] == interop_provider.url, response_type
    r = browser.get(browser.authorize_url(client_id, redirect, code_challenge_method="plain"))
    assert query_of(r.headers["Location"])["error"] == "invalid_request"
    # Only the advertised grants.
    exchange = "urn:ietf:params:oauth:grant-type:token-exchange"
    assert set(d["grant_types_supported"]) == {"authorization_code", "refresh_token", exchange}
    # The exchange grant is there (RFC 8693; tests/test_token_exchange.py): its own errors, not
    # unsupported_grant_type.
    r = requests.post(d["token_endpoint"], data={"grant_type": exchange}, auth=(client_id, secret), timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text
    for grant in ("client_credentials", "password", "urn:ietf:params:oauth:grant-type:device_code"):
        r = requests.post(d["token_endpoint"], data={"grant_type": grant}, auth=(client_id, secret), timeout=10)
        assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type", grant


def test_subject_types_scopes_claims_and_signing_alg(interop_provider, discovery, new_browser):
    d = discovery
    assert set(d["subject_types_supported"]) == {"pairwise", "public"}
    scope = "openid profile phone age national_id offline_access"
    assert set(scope.split()) == set(d["scopes_supported"])
    national_id, mobile = interop_provider.add_citizen(birth_date="1970-01-01")
    subs = {}
    for subject_type, host in (("pairwise", "127.0.0.1"), ("pairwise", "localhost"),
                               ("public", "127.0.0.1"), ("public", "localhost")):
        client_id, secret, redirect = interop_provider.add_client(
            scope=scope, subject_type=subject_type, allow_national_id=True,
            redirect_uri=f"http://{host}:9/{secrets.token_hex(3)}/cb")
        browser = new_browser()
        result = browser.login(client_id, redirect, national_id, mobile, scope=scope)
        token = browser.exchange(client_id, secret, redirect, result["code"]).json()
        id_token = verify_id_token(interop_provider.url, token["id_token"])
        assert id_token["header"]["alg"] in d["id_token_signing_alg_values_supported"]
        info = requests.get(d["userinfo_endpoint"], headers={"Authorization": f"Bearer {token['access_token']}"},
                            timeout=10).json()
        # Every scope gives its claims; every claim given is advertised (at_hash is a hash, not a claim about
        # the person).
        assert {"given_name", "birthdate", "phone_number", "age_over_18", "national_id"} <= set(info), info
        issued = (set(id_token["claims"]) | set(info)) - {"at_hash"}
        assert issued <= set(d["claims_supported"]), issued - set(d["claims_supported"])
        assert id_token["claims"]["acr"] in d["acr_values_supported"]
        assert "refresh_token" in token  # offline_access
        subs[(subject_type, host)] = id_token["claims"]["sub"]
    assert subs[("pairwise", "127.0.0.1")] != subs[("pairwise", "localhost")], "pairwise: one sub per sector"
    assert subs[("public", "127.0.0.1")] == subs[("public", "localhost")], "public: the same sub everywhere"


def test_ui_locales_advertised_are_served(interop_provider, discovery, new_browser):
    client_id, _, redirect = interop_provider.add_client()
    for locale, lang in (("en", "en"), ("fa-IR", "fa")):
        assert locale in discovery["ui_locales_supported"]
        page = new_browser().start(client_id, redirect, ui_locales=locale)
        assert page.status_code == 200 and f'<html lang="{lang}"' in page.text, (locale, page.text[:120])


@pytest.mark.parametrize("param,value,error", [
    ("request", "eyJhbGciOiJub25lIn0.eyJzY29wZSI6Im9wZW5pZCJ9.", "request_not_supported"),
    ("request_uri", "https://agency.example/request.jwt", "request_uri_not_supported"),
])
def test_request_objects_are_refused_as_advertised(interop_provider, discovery, new_browser, param, value, error):
    assert discovery[f"{param}_parameter_supported"] is False
    client_id, _, redirect = interop_provider.add_client()
    browser = new_browser()
    r = browser.get(browser.authorize_url(client_id, redirect, **{param: value}))
    assert r.is_redirect and r.headers["Location"].startswith(redirect + "?"), r.headers.get("Location")
    q = query_of(r.headers["Location"])
    assert q["error"] == error and q["iss"] == interop_provider.url


def test_claims_parameter_not_supported_is_ignored(interop_provider, discovery, new_browser):
    """claims_parameter_supported: false, and an agency cannot use `claims` to get what its scope
    does not give (OIDC Core §5.5: an OP that does not support it ignores it)."""
    assert discovery["claims_parameter_supported"] is False
    client_id, secret, redirect = interop_provider.add_client(scope="openid")
    claims = json.dumps({"userinfo": {"national_id": {"essential": True}, "phone_number": None},
                         "id_token": {"birthdate": None}})
    result, browser = code_for(interop_provider, new_browser, client_id, redirect, scope="openid", claims=claims)
    token = browser.exchange(client_id, secret, redirect, result["code"]).json()
    info = requests.get(discovery["userinfo_endpoint"], headers={"Authorization": f"Bearer {token['access_token']}"},
                        timeout=10).json()
    assert set(info) == {"sub"}
    assert not {"birthdate", "national_id"} & set(verify_id_token(interop_provider.url, token["id_token"])["claims"])


def test_backchannel_logout_session_supported_means_sid(interop_provider, discovery, new_browser):
    assert discovery["backchannel_logout_supported"] is True
    assert discovery["backchannel_logout_session_supported"] is True
    assert discovery["frontchannel_logout_supported"] is False
    client_id, secret, redirect = interop_provider.add_client()
    result, browser = code_for(interop_provider, new_browser, client_id, redirect, scope="openid")
    token = browser.exchange(client_id, secret, redirect, result["code"]).json()
    assert verify_id_token(interop_provider.url, token["id_token"])["claims"]["sid"]
