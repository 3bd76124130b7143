"""An attack catalogue as tests (issue 6 item 8): RFC 9700 (OAuth 2.0 Security BCP) and OpenID
Connect, each test named for the attack it tries.

test_bad_input.py already tries the basic forms (an unregistered redirect URI, plain or missing
PKCE, a wrong verifier, a code of one client at another, a replayed code, five wrong OTPs, the
identify form without its CSRF token); test_logout.py forged logout hints. This catalogue goes
further, each attack in its variants, and checks that a refused attack had no effect.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pyotp
import pytest
import requests
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from .conftest import GENEROUS_IP_LIMITS, make_settings, sqlite_provider
from .helpers import (
    Outbox,
    b64,
    code_page,
    form_fields,
    identify_page,
    login_url,
    mobile_e164,
    pkce_pair,
    redirect_params,
    shows_login,
)

APP = "http://127.0.0.1:9/app/cb"  # the redirect URI of the main client, exactly as registered
BYE = "http://127.0.0.1:9/app/bye"  # its post-logout redirect URI


@pytest.fixture(scope="module")
def provider(tmp_path_factory, redis_url):
    """The provider on SQLite with real Redis (the attacks do not depend on the database)."""
    with sqlite_provider(tmp_path_factory, redis_url, "attacks") as live:
        yield live


@pytest.fixture(scope="module")
def app_client(provider):
    """The victim agency: confidential, trusted, with refresh tokens; (client_id, secret, redirect)."""
    return provider.add_client(name="Victim agency", redirect_uri=APP, post_logout_redirect_uris=[BYE],
                               scope="openid profile phone offline_access")


@pytest.fixture()
def citizen(provider):
    return provider.add_citizen()


# ---- helpers ------------------------------------------------------------------------------------------

def authorize(browser, client_id: str, redirect: str, **extra) -> requests.Response:
    return browser.get(browser.authorize_url(client_id, redirect, **extra))


def tokens_for(provider, client, citizen, scope: str = "openid profile offline_access", **extra):
    """A browser logged in for ``client`` and the token response of its code."""
    client_id, secret, redirect = client
    browser = provider.flow()
    result = browser.login(client_id, redirect, *citizen, scope=scope, **extra)
    answer = browser.exchange(client_id, secret, redirect, result["code"])
    assert answer.status_code == 200, answer.text
    return browser, answer.json()


def sso_code(browser, client_id: str, redirect: str, **extra) -> str:
    """A code through the browser's SSO session (no login page)."""
    landing = authorize(browser, client_id, redirect, **extra)
    return redirect_params(landing, redirect)["code"]


def userinfo(provider, token: str) -> requests.Response:
    return requests.get(f"{provider.url}/userinfo", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def introspect(provider, client, token: str, **extra) -> dict:
    r = requests.post(f"{provider.url}/introspect", data={"token": token, **extra}, auth=client[:2], timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def refresh(provider, client, refresh_token: str) -> requests.Response:
    return requests.post(f"{provider.url}/token", data={"grant_type": "refresh_token",
                                                        "refresh_token": refresh_token},
                         auth=client[:2], timeout=10)


def parts(token: str) -> tuple[dict, dict]:
    head, body, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return json.loads(base64.urlsafe_b64decode(pad(head))), json.loads(base64.urlsafe_b64decode(pad(body)))


def alg_none(token: str, **claims) -> str:
    """The token's claims (changed as asked) under ``alg: none``, with no signature."""
    header, body = parts(token)
    return f"{b64({**header, 'alg': 'none'})}.{b64({**body, **claims})}."


def public_key_forms(provider, kid: str) -> dict[str, bytes]:
    """Every form in which an attacker may find our public key ``kid``, to use as an HMAC secret."""
    from cryptography.hazmat.primitives import serialization
    from joserfc.jwk import JWKRegistry

    jwks = requests.get(f"{provider.url}/jwks", timeout=10).json()
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    public = JWKRegistry.import_key(jwk).public_key
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    forms = {"pem": public.public_bytes(serialization.Encoding.PEM, spki),
             "der": public.public_bytes(serialization.Encoding.DER, spki),
             "jwk-json": json.dumps(jwk).encode(), "jwks-json": json.dumps(jwks).encode()}
    if jwk["kty"] == "RSA":
        forms["pem-pkcs1"] = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
        forms["n"] = base64.urlsafe_b64decode(jwk["n"] + "==")
    return forms


def hs256_with(secret: bytes, token: str, **claims) -> str:
    """The token's claims re-signed with HS256 and ``secret`` (algorithm confusion)."""
    header, body = parts(token)
    signing_input = f"{b64({**header, 'alg': 'HS256'})}.{b64({**body, **claims})}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def sign_with_our_key(provider, header: dict, claims: dict, alg: str) -> str:
    """A token signed with the provider's real ``alg`` key (to forge everything but the signature)."""
    from idp.platform.keyring import keyring

    with provider.app.app_context():
        key = keyring.signing_key(alg)
        return jwt.encode({"alg": alg, "kid": key.kid, **header}, claims, key.keyset, algorithms=[alg])


def forged_tokens(provider, token: str) -> dict[str, str]:
    """alg none and HS256-with-the-public-key versions of a token, claims unchanged."""
    header, body = parts(token)
    forged = {f"alg {alg}": f"{b64({**header, 'alg': alg})}.{b64(body)}." for alg in ("none", "None", "NONE", "nOnE")}
    forged["alg none with the real signature"] = alg_none(token)[:-1] + token.split(".")[2]
    forged["alg none without kid"] = f"{b64({'alg': 'none', 'typ': header.get('typ', 'JWT')})}.{b64(body)}."
    for name, secret in public_key_forms(provider, header["kid"]).items():
        forged[f"HS256 with the public key ({name})"] = hs256_with(secret, token)
    return forged


def signed_in(browser, client_id: str, redirect: str) -> bool:
    page = authorize(browser, client_id, redirect)
    if page.is_redirect and page.headers["Location"].startswith(redirect):
        return "code" in redirect_params(page, redirect)
    return False


def post(browser, page, data: dict, csrf: str | None) -> requests.Response:
    """Submit the page's form with ``csrf`` as its token (None: left out)."""
    fields = {k: v for k, v in form_fields(page.text).items() if k != "csrf_token"}
    fields.update(data)
    if csrf is not None:
        fields["csrf_token"] = csrf
    action = re.search(r'<form[^>]*action="([^"]*)"', page.text).group(1).replace("&amp;", "&")
    return browser.http.post(provider_url(page) + action, data=fields, allow_redirects=False, timeout=10)


def provider_url(page) -> str:
    p = urlsplit(page.url)
    return f"{p.scheme}://{p.netloc}"


def other_csrf(provider, client) -> str:
    """A valid CSRF token of another browser (an attacker's own session)."""
    page = identify_page(provider.flow(), client[0], client[2])
    return form_fields(page.text)["csrf_token"]


def assert_no_redirect_page(r: requests.Response, status: int = 400) -> None:
    assert r.status_code == status, (r.status_code, r.headers.get("Location"), r.text[:300])
    assert "Location" not in r.headers
    assert "text/html" in r.headers["Content-Type"]


# =========================================================================================================
# Redirect URI manipulation (RFC 9700 §4.1, §2.1: exact string matching)
# =========================================================================================================

REDIRECT_MANIPULATIONS = {
    "path traversal": APP + "/../../evil",
    "dot segment": "http://127.0.0.1:9/app/./cb",
    "encoded traversal": APP + "/%2e%2e/%2e%2e/evil",
    "encoded slash": "http://127.0.0.1:9/app%2fcb",
    "encoded character": "http://127.0.0.1:9/app/c%62",
    "extra query": APP + "?next=https://evil.example/",
    "extra fragment": APP + "#https://evil.example/",
    "trailing slash": APP + "/",
    "prefix match": APP + "x",
    "double slash": "http://127.0.0.1:9//app/cb",
    "different port": "http://127.0.0.1:10/app/cb",
    "explicit other port": "http://127.0.0.1:80/app/cb",
    "different scheme": "https://127.0.0.1:9/app/cb",
    "upper-case scheme": "HTTP://127.0.0.1:9/app/cb",
    "upper-case path": "http://127.0.0.1:9/APP/CB",
    "trailing dot in host": "http://127.0.0.1.:9/app/cb",
    "userinfo then evil host": "http://127.0.0.1:9@evil.example/app/cb",
    "evil userinfo": "http://evil.example@127.0.0.1:9/app/cb",
    "backslash": "http://127.0.0.1:9\\@evil.example/app/cb",
    "host suffix": "http://127.0.0.1:9.evil.example/app/cb",
    "scheme-relative": "//127.0.0.1:9/app/cb",
    "leading space": " " + APP,
    "trailing encoded space": APP + "%20",
    "percent-encoded whole": "http%3A%2F%2F127.0.0.1%3A9%2Fapp%2Fcb",
    "other scheme": "javascript://127.0.0.1:9/app/cb%0aalert(1)",
    "data URI": "data:text/html,<script>alert(1)</script>",
}


@pytest.mark.parametrize("variant", sorted(REDIRECT_MANIPULATIONS))
def test_redirect_uri_manipulation_at_authorize_is_never_followed(provider, app_client, variant):
    browser = provider.flow()
    r = authorize(browser, app_client[0], REDIRECT_MANIPULATIONS[variant])
    assert_no_redirect_page(r)


def test_redirect_uri_manipulation_with_a_session_is_never_followed(provider, app_client, citizen):
    """With an SSO session a valid request would get a code at once: a manipulated one never does."""
    browser, _ = tokens_for(provider, app_client, citizen)
    for variant, uri in REDIRECT_MANIPULATIONS.items():
        r = authorize(browser, app_client[0], uri)
        assert_no_redirect_page(r)
        assert "code=" not in r.text, variant


@pytest.mark.parametrize("variant", ["trailing slash", "extra query", "upper-case path", "different port", None])
def test_redirect_uri_manipulation_at_the_token_endpoint_is_invalid_grant(provider, app_client, citizen, variant):
    """RFC 6749 §4.1.3: the token request repeats the authorization request's redirect_uri exactly
    (a missing one, ``None``, is refused too)."""
    browser, _ = tokens_for(provider, app_client, citizen)
    code = sso_code(browser, app_client[0], APP)
    r = browser.exchange(*app_client[:2], REDIRECT_MANIPULATIONS.get(variant), code)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text


# =========================================================================================================
# PKCE downgrade (RFC 9700 §2.1.1, §4.8; RFC 7636)
# =========================================================================================================

@pytest.mark.parametrize("method", ["s256", "S512", "plain ", "S256 plain", ""])
def test_pkce_downgrade_with_another_method_name_is_refused(provider, app_client, method):
    browser = provider.flow()
    r = authorize(browser, app_client[0], APP, code_challenge_method=method)
    params = redirect_params(r, APP)
    assert params["error"] == "invalid_request" and "code" not in params


@pytest.mark.parametrize("challenge", ["abc", "A" * 42, "A" * 129, "+/" * 22, "A" * 42 + "=", "é" * 43])
def test_pkce_challenge_that_is_not_an_s256_value_is_refused(provider, app_client, challenge):
    """RFC 7636 §4.2: a challenge is 43-128 unreserved characters (S256 gives 43); others are refused."""
    browser = provider.flow()
    r = authorize(browser, app_client[0], APP, code_challenge=challenge)
    assert "code" not in redirect_params(r, APP)
    assert redirect_params(r, APP)["error"] == "invalid_request"


def test_pkce_duplicated_method_is_refused(provider, app_client):
    """code_challenge_method=S256&code_challenge_method=plain: which one would count? Neither."""
    browser = provider.flow()
    url = browser.authorize_url(app_client[0], APP) + "&code_challenge_method=plain"
    params = redirect_params(browser.get(url), APP)
    assert params["error"] == "invalid_request" and "code" not in params


def test_pkce_downgrade_sending_the_challenge_as_the_verifier_is_refused(provider, app_client, citizen):
    """The 'plain' downgrade at the token endpoint: the challenge itself as the verifier."""
    browser, _ = tokens_for(provider, app_client, citizen)
    verifier, challenge = pkce_pair()
    code = sso_code(browser, app_client[0], APP, code_challenge=challenge)
    r = browser.exchange(*app_client[:2], APP, code, verifier=challenge)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text


def test_pkce_verifier_of_another_flow_is_refused(provider, app_client, citizen):
    browser, _ = tokens_for(provider, app_client, citizen)
    code_a = sso_code(browser, app_client[0], APP)
    verifier_a = browser.last_verifier
    code_b = sso_code(browser, app_client[0], APP)
    verifier_b = browser.last_verifier
    r = browser.exchange(*app_client[:2], APP, code_a, verifier=verifier_b)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    assert browser.exchange(*app_client[:2], APP, code_b, verifier=verifier_a).status_code == 400


@pytest.mark.parametrize("verifier", ["short", "A" * 129, "A" * 42 + "!", "A" * 43 + " "])
def test_pkce_malformed_verifier_is_refused(provider, app_client, citizen, verifier):
    browser, _ = tokens_for(provider, app_client, citizen)
    code = sso_code(browser, app_client[0], APP)
    r = browser.exchange(*app_client[:2], APP, code, verifier=verifier)
    assert r.status_code == 400 and r.json()["error"] in ("invalid_request", "invalid_grant"), r.text


def test_pkce_is_required_of_public_clients_too(provider, citizen):
    client = provider.add_client(public=True)
    client_id, _, redirect = client
    browser = provider.flow()
    r = authorize(browser, client_id, redirect, code_challenge=None, code_challenge_method=None)
    assert redirect_params(r, redirect)["error"] == "invalid_request"
    result = browser.login(client_id, redirect, *citizen)
    data = {"grant_type": "authorization_code", "code": result["code"], "redirect_uri": redirect,
            "client_id": client_id}
    r = requests.post(f"{provider.url}/token", data=data, timeout=10)
    assert r.status_code == 400 and r.json()["error"] in ("invalid_request", "invalid_grant"), r.text


# =========================================================================================================
# Authorization code injection across clients (RFC 9700 §4.5) and code replay (RFC 6749 §4.1.2)
# =========================================================================================================

def test_code_injection_into_a_public_client_is_refused(provider, app_client, citizen):
    public_id, _, public_redirect = provider.add_client(public=True, redirect_uri=APP)
    browser, _ = tokens_for(provider, app_client, citizen)
    code = sso_code(browser, app_client[0], APP)
    r = browser.exchange(public_id, None, APP, code)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    assert "access_token" not in r.text


def test_code_injection_without_the_clients_secret_is_refused(provider, app_client, citizen):
    """The victim's code sent with the victim's client_id but no secret (as if it were public)."""
    browser, _ = tokens_for(provider, app_client, citizen)
    code = sso_code(browser, app_client[0], APP)
    r = browser.exchange(app_client[0], None, APP, code)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
    r = browser.exchange(app_client[0], "not-the-secret", APP, code)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text


def test_code_injection_into_another_session_fails_on_pkce(provider, app_client, citizen):
    """The attacker injects the victim's code into their own flow at the client: the client sends
    the attacker's verifier, which does not match the victim's challenge."""
    victim, _ = tokens_for(provider, app_client, citizen)
    stolen = sso_code(victim, app_client[0], APP)
    attacker = provider.flow()
    attacker.authorize_url(app_client[0], APP)  # the attacker's own flow at the client, own verifier
    r = attacker.exchange(*app_client[:2], APP, stolen)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text


def test_code_replay_revokes_the_refresh_token_issued_with_it(provider, app_client, citizen):
    """RFC 6749 §4.1.2 / RFC 9700 §4.5.3: a replayed code revokes every token it issued."""
    browser, _ = tokens_for(provider, app_client, citizen)
    code = sso_code(browser, app_client[0], APP, scope="openid offline_access")
    first = browser.exchange(*app_client[:2], APP, code)
    assert first.status_code == 200 and "refresh_token" in first.json(), first.text
    replay = browser.exchange(*app_client[:2], APP, code)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert introspect(provider, app_client, first.json()["access_token"]) == {"active": False}
    assert introspect(provider, app_client, first.json()["refresh_token"])["active"] is False
    r = refresh(provider, app_client, first.json()["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text


def test_duplicated_code_parameter_at_the_token_endpoint_is_refused(provider, app_client, citizen):
    """RFC 6749 §3.2: parameters MUST NOT be included more than once (AUTHLIB-NOTES: Authlib does
    not check `code`)."""
    browser, _ = tokens_for(provider, app_client, citizen)
    code = sso_code(browser, app_client[0], APP)
    data = [("grant_type", "authorization_code"), ("code", code), ("code", "other"), ("redirect_uri", APP),
            ("code_verifier", browser.last_verifier)]
    r = requests.post(f"{provider.url}/token", data=data, auth=app_client[:2], timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text


# =========================================================================================================
# Mix-up (RFC 9207, RFC 9700 §4.4): `iss` on every authorization response, errors included
# =========================================================================================================

def _iss_of(provider, r: requests.Response, redirect: str, state: str | None = None) -> dict:
    assert r.is_redirect, (r.status_code, r.text[:300])
    location = r.headers["Location"]
    assert location.startswith(redirect + "?"), location
    query = parse_qs(urlsplit(location).query)
    assert query.get("iss") == [provider.url], f"iss missing or wrong in {location}"
    if state is not None:
        assert query.get("state") == [state], location
    return {k: v[0] for k, v in query.items()}


def test_mix_up_iss_on_every_authorization_response(provider, app_client, citizen):
    untrusted = provider.add_client(trusted=False, redirect_uri="http://127.0.0.1:9/untrusted/cb")
    seen: dict[str, dict] = {}
    # A code right after a login (the code submission answers with it).
    browser = provider.flow()
    page = identify_page(browser, app_client[0], APP)
    sent = len(provider.outbox.messages(mobile_e164(citizen[1])))
    page = browser.follow(browser.submit(page, {"national_id": citizen[0], "mobile": citizen[1]}), APP)
    otp = provider.outbox.last_code(mobile_e164(citizen[1]), after=sent)
    seen["code after login"] = _iss_of(provider, browser.follow(browser.submit(page, {"otp": otp}), APP), APP)
    # A code by SSO, with and without state.
    seen["code by SSO"] = _iss_of(provider, authorize(browser, app_client[0], APP, state="st1"), APP, "st1")
    seen["code without state"] = _iss_of(provider, authorize(browser, app_client[0], APP, state=None), APP)
    # Errors.
    stranger = provider.flow()
    seen["login_required"] = _iss_of(provider, authorize(stranger, app_client[0], APP, prompt="none",
                                                         state="s2"), APP, "s2")
    seen["invalid_request (no PKCE)"] = _iss_of(provider, authorize(stranger, app_client[0], APP,
                                                                    code_challenge=None, state="s3"), APP, "s3")
    seen["unsupported_response_type"] = _iss_of(provider, authorize(stranger, app_client[0], APP,
                                                                    response_type="token", state="s4"), APP)
    seen["invalid id_token_hint"] = _iss_of(provider, authorize(browser, app_client[0], APP,
                                                                id_token_hint="a.b.c", state="s5"), APP, "s5")
    seen["duplicated prompt"] = _iss_of(provider, browser.get(
        browser.authorize_url(app_client[0], APP, state="s6") + "&prompt=login&prompt=none"), APP, "s6")
    seen["consent_required"] = _iss_of(provider, authorize(browser, untrusted[0], untrusted[2], prompt="none",
                                                           state="s7"), untrusted[2], "s7")
    consent = browser.follow(authorize(browser, untrusted[0], untrusted[2], state="s8"), untrusted[2])
    assert 'name="decision"' in consent.text
    denied = browser.follow(browser.submit(consent, {"decision": "deny"}), untrusted[2])
    seen["access_denied (consent)"] = _iss_of(provider, denied, untrusted[2], "s8")
    for name, query in seen.items():
        assert ("code" in query) != ("error" in query), (name, query)
    assert seen["login_required"]["error"] == "login_required"
    assert seen["consent_required"]["error"] == "consent_required"
    assert seen["access_denied (consent)"]["error"] == "access_denied"
    assert seen["unsupported_response_type"]["error"] == "unsupported_response_type"


def test_mix_up_the_iss_parameter_appears_once_and_cannot_be_injected(provider, app_client, citizen):
    browser, _ = tokens_for(provider, app_client, citizen)
    r = authorize(browser, app_client[0], APP, iss="https://evil.example", state="x&iss=https://evil.example")
    query = parse_qs(urlsplit(r.headers["Location"]).query)
    assert query["iss"] == [provider.url] and query["state"] == ["x&iss=https://evil.example"]
    doc = requests.get(f"{provider.url}/.well-known/openid-configuration", timeout=10).json()
    assert doc["authorization_response_iss_parameter_supported"] is True and doc["issuer"] == provider.url


# =========================================================================================================
# Forged tokens: alg none, HS256 with the public key, tampered, expired, another issuer, wrong typ
# =========================================================================================================

@pytest.fixture()
def issued(provider, app_client, citizen):
    """A browser with a session and a fresh token response (access, refresh and ID token)."""
    browser, body = tokens_for(provider, app_client, citizen)
    assert userinfo(provider, body["access_token"]).status_code == 200
    return browser, body


def _refused_everywhere(provider, client, token: str, what: str) -> None:
    r = userinfo(provider, token)
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"], (what, r.text)
    assert introspect(provider, client, token) == {"active": False}, what
    assert introspect(provider, client, token, token_type_hint="access_token") == {"active": False}, what


def test_alg_none_and_hs256_access_tokens_are_refused(provider, app_client, issued):
    token = issued[1]["access_token"]
    for name, forged in forged_tokens(provider, token).items():
        _refused_everywhere(provider, app_client, forged, name)
        # Revoking the forgery is a no-op (RFC 7009 answers 200) and leaves the real token alone.
        r = requests.post(f"{provider.url}/revoke", data={"token": forged}, auth=app_client[:2], timeout=10)
        assert r.status_code == 200, (name, r.text)
    assert userinfo(provider, token).status_code == 200


def test_alg_none_and_hs256_id_token_hints_at_authorize_are_refused(provider, app_client, issued):
    browser, body = issued
    for name, forged in forged_tokens(provider, body["id_token"]).items():
        params = redirect_params(authorize(browser, app_client[0], APP, id_token_hint=forged), APP)
        assert params.get("error") == "invalid_request" and "code" not in params, (name, params)
    # The real hint is accepted (the same person is signed in).
    assert "code" in redirect_params(authorize(browser, app_client[0], APP, id_token_hint=body["id_token"]), APP)


def test_alg_none_and_hs256_id_token_hints_at_logout_end_no_session(provider, app_client, issued):
    """A forged hint naming the victim's session (sid, sub, aud all right) must neither log the
    victim out (sent from anywhere) nor open a redirect."""
    browser, body = issued
    for name, forged in forged_tokens(provider, body["id_token"]).items():
        for who in (provider.flow(), browser):  # the attacker's own browser, then the victim's
            r = who.get(f"{provider.url}/logout?" + urlencode({"id_token_hint": forged,
                                                                "post_logout_redirect_uri": BYE, "state": "s"}))
            assert r.status_code == 200 and "Location" not in r.headers, (name, r.status_code)
        assert signed_in(browser, app_client[0], APP), f"{name}: the victim was logged out"


def test_tampered_access_tokens_are_refused(provider, app_client, issued):
    token = issued[1]["access_token"]
    head, body, sig = token.split(".")
    header, claims = parts(token)
    variants = {
        "claims changed": f"{head}.{b64({**claims, 'scope': 'openid profile phone national_id'})}.{sig}",
        "subject changed": f"{head}.{b64({**claims, 'sub': 'someone-else'})}.{sig}",
        "expiry extended": f"{head}.{b64({**claims, 'exp': claims['exp'] + 86400})}.{sig}",
        "signature flipped": f"{head}.{body}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}",
        "signature cut": f"{head}.{body}.{sig[:20]}",
        "signature removed": f"{head}.{body}.",
        "kid changed": f"{b64({**header, 'kid': 'other'})}.{body}.{sig}",
        "jku injected": f"{b64({**header, 'jku': 'https://evil.example/jwks'})}.{body}.{sig}",
        "embedded jwk": f"{b64({**header, 'jwk': {'kty': 'oct', 'k': 'AAAA'}})}.{body}.{sig}",
        "extra segment": token + ".AAAA",
        "JWE-looking": f"{head}.{body}.{sig}.AAAA.AAAA",
    }
    for name, forged in variants.items():
        _refused_everywhere(provider, app_client, forged, name)


def _signed_raw(provider, alg: str, header: dict | str, claims: dict | str) -> str:
    """A JWS signed with the provider's real ``alg`` key over exactly this header and payload
    (dicts, or their segments as given: no library in between to refuse or rewrite them)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    from idp.platform.keyring import keyring

    segments = [part if isinstance(part, str) else b64(part) for part in (header, claims)]
    signing_input = ".".join(segments).encode()
    with provider.app.app_context():
        private = keyring.signing_key(alg).key.private_key
    if alg == "RS256":
        signature = private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = decode_dss_signature(private.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signing_input.decode()}.{b64(signature)}"


def test_access_tokens_signed_by_our_keys_but_not_as_we_sign_them_are_refused(provider, app_client, issued):
    """Only what our keys signed in the shape we sign it: a header of alg, kid and typ alone, the
    alg of the key the kid names, canonical base64url; and a malformed token is a 401, never a 500."""
    token = issued[1]["access_token"]
    header, claims = parts(token)
    with provider.app.app_context():
        from idp.platform.keyring import keyring
        kids = {alg: keyring.signing_key(alg).kid for alg in ("RS256", "ES256")}
    assert _signed_raw(provider, header["alg"], header, claims) != token  # a fresh signature, the same claims
    assert userinfo(provider, _signed_raw(provider, header["alg"], header, claims)).status_code == 200
    other = "RS256" if header["alg"] == "ES256" else "ES256"
    head, body, sig = token.split(".")
    variants = {
        "crit header": _signed_raw(provider, header["alg"], {**header, "crit": ["exp"]}, claims),
        "b64 false": _signed_raw(provider, header["alg"], {**header, "b64": False, "crit": ["b64"]}, claims),
        "x5u header": _signed_raw(provider, header["alg"], {**header, "x5u": "https://evil.example/c"}, claims),
        "kid of the other key": _signed_raw(provider, header["alg"], {**header, "kid": kids[other]}, claims),
        "alg of the other key": _signed_raw(provider, other, {**header, "alg": other}, claims),
        "alg not its key's": _signed_raw(provider, header["alg"], {**header, "alg": other}, claims),
        "no kid": _signed_raw(provider, header["alg"], {k: v for k, v in header.items() if k != "kid"}, claims),
        "kid not a string": _signed_raw(provider, header["alg"], {**header, "kid": [header["kid"]]}, claims),
        "typ not a string": _signed_raw(provider, header["alg"], {**header, "typ": 1}, claims),
        "claims not an object": _signed_raw(provider, header["alg"], header, b64(b'["openid"]')),
        "claims not JSON": _signed_raw(provider, header["alg"], header, b64(b"\xff\xfe")),
        "padded header": _signed_raw(provider, header["alg"], b64(header) + "==", claims),
        "characters outside base64url": _signed_raw(provider, header["alg"], header, b64(claims)[:8] + "!+/" +
                                                    b64(claims)[8:]),
        "a space in the claims": _signed_raw(provider, header["alg"], header, " " + b64(claims)),
        "a length no base64 has": _signed_raw(provider, header["alg"], header, b64(claims) + "A" * (
            (1 - len(b64(claims))) % 4)),
        "nested header": f"{b64(b'[' * 1000 + b']' * 1000)}.{b64({})}.{sig}",  # deeper than json's recursion limit
        "non-ASCII": f"{head}.{body}\u00e9.{sig}",
    }
    for name, forged in variants.items():
        _refused_everywhere(provider, app_client, forged, name)


def test_expired_access_token_is_refused(provider, app_client, issued):
    header, claims = parts(issued[1]["access_token"])
    now = int(time.time())
    for name, changes in {"expired": {"exp": now - 5, "iat": now - 700},
                          "no exp": {"exp": None}, "exp as a string": {"exp": str(now + 600)}}.items():
        forged = sign_with_our_key(provider, {"typ": header["typ"]},
                                   {k: v for k, v in {**claims, **changes}.items() if v is not None}, header["alg"])
        _refused_everywhere(provider, app_client, forged, name)


def test_access_token_of_another_issuer_is_refused(provider, app_client, issued):
    header, claims = parts(issued[1]["access_token"])
    for iss in ("https://evil.example", provider.url + "/", provider.url.upper(), None):
        forged = sign_with_our_key(provider, {"typ": header["typ"]},
                                   {k: v for k, v in {**claims, "iss": iss}.items() if v is not None}, header["alg"])
        _refused_everywhere(provider, app_client, forged, f"iss={iss}")
    # Another provider's key under our kid (a token of another issuer, relabelled).
    stranger = (ECKey.generate_key("P-256", private=True, parameters={"kid": header["kid"]})
                if header["alg"] == "ES256" else
                RSAKey.generate_key(2048, private=True, parameters={"kid": header["kid"]}))
    forged = jwt.encode({"alg": header["alg"], "kid": header["kid"], "typ": header["typ"]}, claims, stranger,
                        algorithms=[header["alg"]])
    _refused_everywhere(provider, app_client, forged, "another key")


def test_id_token_presented_as_an_access_token_is_refused(provider, app_client, issued):
    """RFC 9068 §4: the access token's typ is at+jwt; an ID token (typ JWT) is not one, nor is an
    access-token-shaped token without typ."""
    body = issued[1]
    _refused_everywhere(provider, app_client, body["id_token"], "ID token")
    header, claims = parts(body["access_token"])
    for typ in ({}, {"typ": "JWT"}, {"typ": "logout+jwt"}, {"typ": "at+jwt-not"}):
        forged = sign_with_our_key(provider, typ, claims, header["alg"])
        _refused_everywhere(provider, app_client, forged, f"typ {typ}")
    r = userinfo(provider, body["refresh_token"])
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"], "refresh token"


def test_access_token_presented_as_an_id_token_hint_is_refused(provider, app_client, issued):
    browser, body = issued
    params = redirect_params(authorize(browser, app_client[0], APP, id_token_hint=body["access_token"]), APP)
    assert params.get("error") == "invalid_request" and "code" not in params
    r = browser.get(f"{provider.url}/logout?" + urlencode({"id_token_hint": body["access_token"],
                                                            "post_logout_redirect_uri": BYE}))
    assert r.status_code == 200 and "Location" not in r.headers
    assert signed_in(browser, app_client[0], APP)


def test_access_token_of_a_disabled_client_is_refused(provider, citizen):
    client = provider.add_client()
    _, body = tokens_for(provider, client, citizen)
    _disable(provider, client[0])
    r = userinfo(provider, body["access_token"])
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]


# =========================================================================================================
# Open redirect at logout (OIDC RP-Initiated Logout §2, §3)
# =========================================================================================================

LOGOUT_MANIPULATIONS = {k: v.replace("/app/cb", "/app/bye") for k, v in REDIRECT_MANIPULATIONS.items()}


def test_logout_open_redirect_variants_are_never_followed(provider, app_client, citizen):
    """With a valid hint the relying party is identified (as a back-channel RP or a cross-site
    request would be, without the browser's cookie): only its exact registered URI is followed."""
    _, body = tokens_for(provider, app_client, citizen, scope="openid")
    for variant, uri in LOGOUT_MANIPULATIONS.items():
        r = requests.get(f"{provider.url}/logout?" + urlencode({"id_token_hint": body["id_token"],
                                                                 "post_logout_redirect_uri": uri, "state": "s"}),
                         allow_redirects=False, timeout=10)
        assert r.status_code == 200 and "Location" not in r.headers, (variant, r.status_code)
        assert "http-equiv" not in r.text.lower() and 'href="' + uri not in r.text, variant
    r = requests.get(f"{provider.url}/logout?" + urlencode({"id_token_hint": body["id_token"],
                                                             "post_logout_redirect_uri": BYE, "state": "s"}),
                     allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["Location"] == BYE + "?state=s", "the registered URI is followed"


def test_logout_to_a_uri_registered_by_another_client_is_never_followed(provider, app_client, citizen):
    other = provider.add_client(post_logout_redirect_uris=["http://127.0.0.1:9/other/bye"])
    browser, body = tokens_for(provider, app_client, citizen, scope="openid")
    r = browser.get(f"{provider.url}/logout?" + urlencode({"id_token_hint": body["id_token"],
                                                            "post_logout_redirect_uri": "http://127.0.0.1:9/other/bye"}))
    assert r.status_code == 200 and "Location" not in r.headers
    # Naming the other client by client_id without a hint, with the first client's URI: no redirect either.
    r = provider.flow().get(f"{provider.url}/logout?" + urlencode({"client_id": other[0],
                                                                    "post_logout_redirect_uri": BYE}))
    assert r.status_code == 200 and "Location" not in r.headers


# =========================================================================================================
# CSRF on every form: refused without or with a wrong token, and without effect
# =========================================================================================================

CSRF_CASES = ["missing", "wrong", "another browser's", "empty"]


def _csrf_value(case: str, provider, app_client) -> str | None:
    return {"missing": None, "wrong": "IjEyMyI.Zx.bad", "empty": ""}.get(case) if case != "another browser's" \
        else other_csrf(provider, app_client)


@pytest.mark.parametrize("case", CSRF_CASES)
def test_csrf_on_the_identify_form(provider, app_client, citizen, case):
    browser = provider.flow()
    page = identify_page(browser, app_client[0], APP)
    r = post(browser, page, {"national_id": citizen[0], "mobile": citizen[1]}, _csrf_value(case, provider, app_client))
    assert_no_redirect_page(r)
    provider.outbox.settle(0.3)
    assert provider.outbox.messages(mobile_e164(citizen[1])) == [], "no code was sent"
    code = browser.get(login_url(page).replace("/login?", "/login/code?"))
    assert code.status_code == 303 and "/login?" in code.headers["Location"], "no challenge was opened"


@pytest.mark.parametrize("case", CSRF_CASES)
def test_csrf_on_the_code_form(provider, app_client, citizen, case):
    browser = provider.flow()
    page, otp = code_page(provider, browser, (app_client[0], None, APP), citizen)
    r = post(browser, page, {"otp": otp}, _csrf_value(case, provider, app_client))
    assert_no_redirect_page(r)
    assert "idp_sso" not in r.headers.get("Set-Cookie", ""), "no session was created"
    # No effect: the challenge is intact and the right code still works (no attempt was used).
    done = browser.follow(browser.submit(page, {"otp": otp}), APP)
    assert "code" in redirect_params(done, APP)


@pytest.mark.parametrize("case", CSRF_CASES)
def test_csrf_on_the_resend_form(make_provider, case):
    provider = make_provider(limits={**GENEROUS_IP_LIMITS, "resend_after": 0})
    client = provider.add_client()
    citizen = provider.add_citizen()
    browser = provider.flow()
    page, _ = code_page(provider, browser, client, citizen)
    sent = len(provider.outbox.messages(mobile_e164(citizen[1])))
    r = post(browser, resend_form(page), {}, _csrf_value(case, provider, client))
    assert_no_redirect_page(r)
    provider.outbox.settle(0.3)
    assert len(provider.outbox.messages(mobile_e164(citizen[1]))) == sent, "no code was resent"
    # The same form with its token does resend.
    r = post(browser, resend_form(page), {}, form_fields(page.text)["csrf_token"])
    assert r.status_code == 303
    provider.outbox.last_code(mobile_e164(citizen[1]), after=sent)


class _Page:
    """A fragment of a page (one of several forms) to submit."""

    def __init__(self, text: str, url: str):
        self.text, self.url = text, url


def resend_form(page) -> _Page:
    """The code page's second form, 'send the code again'."""
    start = re.search(r'<form[^>]*class="resend"', page.text).start()
    return _Page(page.text[start:], page.url)


@pytest.mark.parametrize("case", CSRF_CASES)
def test_csrf_on_the_consent_form(provider, app_client, citizen, case):
    untrusted = provider.add_client(trusted=False)
    browser, _ = tokens_for(provider, app_client, citizen)
    page = browser.follow(authorize(browser, untrusted[0], untrusted[2]), untrusted[2])
    assert 'name="decision"' in page.text
    r = post(browser, page, {"decision": "approve"}, _csrf_value(case, provider, app_client))
    assert_no_redirect_page(r)
    assert _granted(provider, citizen, untrusted[0]) == (), "no grant was recorded"
    # The page still works: the citizen's own answer is taken.
    done = browser.follow(browser.submit(page, {"decision": "approve"}), untrusted[2])
    assert "code" in redirect_params(done, untrusted[2])
    assert "openid" in _granted(provider, citizen, untrusted[0])


@pytest.mark.parametrize("case", CSRF_CASES)
def test_csrf_on_the_logout_confirmation(provider, app_client, citizen, case):
    browser, _ = tokens_for(provider, app_client, citizen)
    page = browser.get(f"{provider.url}/logout?" + urlencode({"client_id": app_client[0],
                                                               "post_logout_redirect_uri": BYE}))
    assert 'name="confirm"' in page.text
    r = post(browser, page, {"confirm": "1"}, _csrf_value(case, provider, app_client))
    assert_no_redirect_page(r)
    assert signed_in(browser, app_client[0], APP), "the session was not ended"


@pytest.mark.parametrize("case", CSRF_CASES)
def test_csrf_on_the_authenticator_form(provider, app_client, citizen, case):
    browser, _ = tokens_for(provider, app_client, citizen)
    page = browser.get(f"{provider.url}/account/authenticator")
    assert page.status_code == 200 and 'name="otp"' in page.text, page.text[:300]
    secret = re.search(r'<code dir="ltr">([A-Z2-7 ]+)</code>', page.text).group(1).replace(" ", "")
    r = post(browser, page, {"otp": pyotp.TOTP(secret).now()}, _csrf_value(case, provider, app_client))
    assert_no_redirect_page(r)
    assert not _totp_enrolled(provider, citizen), "no authenticator was enrolled"
    r = browser.submit(page, {"otp": pyotp.TOTP(secret).now()})
    assert r.status_code == 303 and _totp_enrolled(provider, citizen)


@pytest.mark.parametrize("case", CSRF_CASES)
def test_csrf_on_withdrawing_a_service(provider, app_client, citizen, case):
    untrusted = provider.add_client(trusted=False)
    browser, _ = tokens_for(provider, app_client, citizen)
    page = browser.follow(authorize(browser, untrusted[0], untrusted[2]), untrusted[2])
    browser.follow(browser.submit(page, {"decision": "approve"}), untrusted[2])
    services = browser.get(f"{provider.url}/account/services")
    assert untrusted[0] in services.text
    r = post(browser, services, {"client_id": untrusted[0]}, _csrf_value(case, provider, app_client))
    assert_no_redirect_page(r)
    assert _granted(provider, citizen, untrusted[0]), "the grant is still there"


def _granted(provider, citizen, client_id: str) -> tuple[str, ...]:
    from idp.citizens.directory import find
    from idp.protocol import consent

    with provider.app.app_context():
        return consent.granted_scopes(find(citizen[0]).citizen.id, client_id)


def _totp_enrolled(provider, citizen) -> bool:
    from idp.citizens.directory import find
    from idp.login import totp

    with provider.app.app_context():
        return totp.is_enrolled(find(citizen[0]).citizen.id)


# =========================================================================================================
# Session fixation: cookies set before the login are replaced, and the old values are useless
# =========================================================================================================

def _cookie(browser, name: str) -> str | None:
    return next((c.value for c in browser.http.cookies if c.name == name), None)


def test_session_fixation_with_a_chosen_sso_cookie(provider, app_client, citizen):
    planted = secrets.token_urlsafe(32)
    browser = provider.flow()
    browser.http.cookies.set("idp_sso", planted, domain="127.0.0.1", path="/")
    browser.login(app_client[0], APP, *citizen)
    assert _cookie(browser, "idp_sso") not in (None, planted)
    attacker = provider.flow()
    attacker.http.cookies.set("idp_sso", planted, domain="127.0.0.1", path="/")
    assert not signed_in(attacker, app_client[0], APP), "the planted value gives no session"


def test_session_fixation_with_the_attackers_own_session(provider, app_client, citizen):
    attacker, _ = tokens_for(provider, app_client, provider.add_citizen())
    planted = _cookie(attacker, "idp_sso")
    victim = provider.flow()
    victim.http.cookies.set("idp_sso", planted, domain="127.0.0.1", path="/")
    victim.login(app_client[0], APP, *citizen, prompt="login")
    assert _cookie(victim, "idp_sso") != planted
    assert not signed_in(attacker, app_client[0], APP), "the planted session ended at the victim's login"


def test_session_fixation_with_a_planted_flask_session(provider, app_client, citizen):
    """The attacker plants their own idp_session cookie (which holds the CSRF secret) and keeps a
    CSRF token made for it. After the victim's login that token must not work on the victim's
    account forms, so the cookie is replaced at login."""
    attacker = provider.flow()
    attacker_page = identify_page(attacker, app_client[0], APP)
    planted = _cookie(attacker, "idp_session")
    known_token = form_fields(attacker_page.text)["csrf_token"]
    untrusted = provider.add_client(trusted=False)
    victim = provider.flow()
    victim.http.cookies.set("idp_session", planted, domain="127.0.0.1", path="/")
    victim.login(app_client[0], APP, *citizen)
    page = victim.follow(authorize(victim, untrusted[0], untrusted[2]), untrusted[2])
    victim.follow(victim.submit(page, {"decision": "approve"}), untrusted[2])
    services = victim.get(f"{provider.url}/account/services")
    r = post(victim, services, {"client_id": untrusted[0]}, known_token)
    assert r.status_code == 400 and _granted(provider, citizen, untrusted[0]), \
        "the attacker's CSRF token withdrew the victim's grant"
    assert _cookie(victim, "idp_session") != planted, "idp_session was not replaced at login"


# =========================================================================================================
# Cookie bomb: paused requests cannot fill the browser's Cookie header
# =========================================================================================================

def test_cookie_bomb_of_authorization_requests_leaves_a_few_flow_cookies(provider, app_client, citizen):
    """Every paused request is bound to the browser by a cookie. Forty in a row (and cookies of
    the older one-name-per-flow kind, planted) leave at most MAX_FLOWS: the newest flows still
    work, the oldest is refused, and a login still succeeds. tests/browser/test_flow_cookies.py
    does the same with 170 popups at once in Chromium."""
    from idp.protocol.interaction import FLOW_COOKIE_PREFIX, MAX_FLOWS

    browser = provider.flow()
    for _ in range(20):
        rid = secrets.token_urlsafe(24)
        browser.http.cookies.set(FLOW_COOKIE_PREFIX + rid[:12], rid, domain="127.0.0.1", path="/")
    pages = [identify_page(browser, app_client[0], APP) for _ in range(40)]
    flows = [c.name for c in browser.http.cookies if c.name.startswith(FLOW_COOKIE_PREFIX)]
    assert len(flows) <= MAX_FLOWS, flows
    assert len("; ".join(f"{c.name}={c.value}" for c in browser.http.cookies)) < 1024
    assert browser.get(login_url(pages[-1])).status_code == 200, "the newest flow is bound"
    assert browser.get(login_url(pages[-MAX_FLOWS])).status_code == 200, "so are the MAX_FLOWS newest"
    assert browser.get(login_url(pages[-MAX_FLOWS - 1])).status_code == 400, "the oldest was replaced"
    assert "code" in browser.login(app_client[0], APP, *citizen)


# =========================================================================================================
# Clickjacking, caching and cookies
# =========================================================================================================

def _assert_unframeable(r: requests.Response, name: str) -> None:
    assert "text/html" in r.headers.get("Content-Type", ""), (name, r.status_code)
    assert "frame-ancestors 'none'" in r.headers.get("Content-Security-Policy", ""), name
    assert r.headers.get("X-Frame-Options") == "DENY", name


def test_clickjacking_headers_on_every_html_page(provider, app_client, citizen):
    pages = {}
    pages["home"] = requests.get(f"{provider.url}/", timeout=10)
    pages["not found"] = requests.get(f"{provider.url}/nope", timeout=10)
    pages["method not allowed"] = requests.delete(f"{provider.url}/login", timeout=10)
    pages["unknown client"] = requests.get(f"{provider.url}/authorize?client_id=x", timeout=10)
    pages["interaction gone"] = requests.get(f"{provider.url}/login?r=x", timeout=10)
    pages["too large"] = requests.post(f"{provider.url}/authorize", data={"x": "x" * 70_000}, timeout=10)
    browser = provider.flow()
    page = identify_page(browser, app_client[0], APP)
    pages["identify"] = page
    pages["identify with errors"] = browser.submit(page, {"national_id": "1", "mobile": "2"})
    pages["csrf refused"] = post(browser, page, {"national_id": "1"}, None)
    code, otp = code_page(provider, browser, (app_client[0], None, APP), citizen)
    pages["code"] = code
    pages["wrong code"] = browser.submit(code, {"otp": f"{(int(otp) + 1) % 10**6:06d}"})
    browser.follow(browser.submit(code, {"otp": otp}), APP)
    untrusted = provider.add_client(trusted=False)
    pages["consent"] = browser.follow(authorize(browser, untrusted[0], untrusted[2]), untrusted[2])
    pages["account"] = browser.get(f"{provider.url}/account")
    pages["authenticator"] = browser.get(f"{provider.url}/account/authenticator")
    pages["services"] = browser.get(f"{provider.url}/account/services")
    pages["logout confirmation"] = browser.get(f"{provider.url}/logout")
    pages["signed out"] = browser.submit(pages["logout confirmation"], {"confirm": "1"})
    locked = provider.flow()
    lp, lotp = code_page(provider, locked, (app_client[0], None, APP), provider.add_citizen())
    for _ in range(5):
        last = locked.submit(lp, {"otp": f"{(int(lotp) + 1) % 10**6:06d}"})
    pages["locked"] = last
    for name, r in pages.items():
        _assert_unframeable(r, name)


def test_token_responses_are_never_cached(provider, app_client, citizen):
    browser, _ = tokens_for(provider, app_client, citizen)
    code = sso_code(browser, app_client[0], APP, scope="openid offline_access")
    answers = {"code exchanged": browser.exchange(*app_client[:2], APP, code)}
    answers["refreshed"] = refresh(provider, app_client, answers["code exchanged"].json()["refresh_token"])
    answers["code replayed"] = browser.exchange(*app_client[:2], APP, code)
    answers["wrong secret"] = browser.exchange(app_client[0], "wrong", APP, code)
    answers["unsupported grant"] = requests.post(f"{provider.url}/token", data={"grant_type": "password"},
                                                 auth=app_client[:2], timeout=10)
    answers["no body"] = requests.post(f"{provider.url}/token", timeout=10)
    answers["GET"] = requests.get(f"{provider.url}/token", timeout=10)
    answers["too large"] = requests.post(f"{provider.url}/token", data={"code": "x" * 70_000}, timeout=10)
    answers["JSON body"] = requests.post(f"{provider.url}/token", json={"grant_type": "authorization_code"},
                                         auth=app_client[:2], timeout=10)
    for name, r in answers.items():
        assert r.headers.get("Content-Type", "").startswith("application/json"), name
        assert "no-store" in r.headers.get("Cache-Control", ""), (name, r.status_code, r.headers)
    for name in ("code exchanged", "refreshed"):
        assert answers[name].status_code == 200 and answers[name].headers.get("Pragma") == "no-cache", name
    # The other endpoints that answer with tokens or claims.
    token = answers["refreshed"].json()["access_token"]
    for r in (userinfo(provider, token),
              requests.post(f"{provider.url}/introspect", data={"token": token}, auth=app_client[:2], timeout=10),
              requests.post(f"{provider.url}/revoke", data={"token": token}, auth=app_client[:2], timeout=10)):
        assert "no-store" in r.headers.get("Cache-Control", ""), r.url


def test_cookies_are_httponly_on_loopback_http(provider, app_client, citizen):
    browser = provider.flow()
    seen = []
    original = browser.http.request

    def recording(*args, **kwargs):
        r = original(*args, **kwargs)
        seen.extend(r.raw.headers.getlist("Set-Cookie"))
        return r

    browser.http.request = recording
    browser.login(app_client[0], APP, *citizen)
    browser.get(f"{provider.url}/logout")
    assert {c.split("=")[0] for c in seen} >= {"idp_sso", "idp_session"}, seen
    for cookie in seen:
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie, cookie


def test_cookies_are_secure_and_httponly_under_an_https_issuer(tmp_path, redis_url):
    """The server itself runs http on loopback in tests, so the https case is checked in-process:
    every cookie the login sets (and the logout clears) is Secure, HttpOnly and SameSite=Lax."""
    from idp import create_app
    from idp.platform import keys
    from idp.platform.database import upgrade_database
    from idp.protocol import backchannel

    issuer = "https://idp.example.test"
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'idp.sqlite3'}", redis_url, 1,
                             server={"issuer": issuer}, limits=GENEROUS_IP_LIMITS)
    keys.ensure(settings.keys.dir)
    app = create_app(settings)
    upgrade_database(app)
    outbox = Outbox(Path(settings.sms.outbox))
    from idp.citizens.records import add_citizen
    from idp.protocol.agencies import register_client

    with app.app_context():
        client, _ = register_client("Agency", ["https://agency.example/cb"], trusted=True, public=True)
        client_id = client.client_id
        add_citizen(national_id="0084575948", mobile="+989121112233", birth_date="1980-01-01",
                    given_name="آزمون", family_name="شهروند")
    try:
        http = app.test_client()
        set_cookies: list[str] = []

        def call(method: str, url: str, **kw):
            # buffered: the response is read and closed, as a server does (codes go out on close)
            r = http.open(url, method=method, base_url=issuer, headers={"Referer": issuer + "/"}, buffered=True,
                          **kw)
            set_cookies.extend(r.headers.getlist("Set-Cookie"))
            return r

        _, challenge = pkce_pair()
        r = call("GET", "/authorize?" + urlencode({
            "response_type": "code", "client_id": client_id, "redirect_uri": "https://agency.example/cb",
            "scope": "openid", "code_challenge": challenge, "code_challenge_method": "S256"}))
        assert shows_login(r), r.get_data(as_text=True)[:300]  # the first page, answered in place
        assert r.headers.get("Strict-Transport-Security", "").startswith("max-age=")
        page = r
        action = re.search(r'<form[^>]*action="([^"]*)"', page.get_data(as_text=True)).group(1).replace("&amp;", "&")
        r = call("POST", action, data={**form_fields(page.get_data(as_text=True)), "national_id": "0084575948",
                                       "mobile": "09121112233"})
        assert r.status_code == 303, r.get_data(as_text=True)[:500]
        page = call("GET", r.headers["Location"])
        otp = outbox.last_code("+989121112233")
        action = re.search(r'<form[^>]*action="([^"]*)"', page.get_data(as_text=True)).group(1).replace("&amp;", "&")
        r = call("POST", action, data={**form_fields(page.get_data(as_text=True)), "otp": otp})
        assert r.status_code == 303, r.get_data(as_text=True)[:500]
        assert r.headers["Location"].startswith("https://agency.example/cb?code="), r.headers.get("Location")
        confirm = call("GET", "/logout")
        call("POST", "/logout/confirm", data={**form_fields(confirm.get_data(as_text=True)), "confirm": "1"})
    finally:
        backchannel.stop_worker(app)
    names = {c.split("=")[0] for c in set_cookies}
    assert {"idp_sso", "idp_session"} <= names and any(n.startswith("idp_flow_") for n in names), set_cookies
    for cookie in set_cookies:
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie, cookie


# =========================================================================================================
# Host header: only the issuer's host is answered, and no link is ever built from the header
# =========================================================================================================

#: (method, path) of pages and protocol endpoints; the authorization request is filled in by the test.
HOST_PATHS = [("GET", "/"), ("GET", "/authorize"), ("GET", "/login?r=x"), ("GET", "/no/such/page"),
              ("POST", "/token"), ("GET", "/.well-known/openid-configuration"), ("GET", "/jwks"),
              ("GET", "/healthz"), ("GET", "/userinfo"), ("POST", "/login/code?r=x"), ("GET", "/static/idp.css")]
FOREIGN_HOSTS = ["evil.example", "evil.example:80", "127.0.0.1.evil.example", "localhost.evil.example",
                 "10.0.0.1", "EVIL.example", "", "a b", "127.0.0.1@evil.example", "evil.example:99999"]


def _host_request(provider, app_client, method: str, path: str, host: str, **headers) -> requests.Response:
    if path == "/authorize":
        _, challenge = pkce_pair()
        path += "?" + urlencode({"response_type": "code", "client_id": app_client[0], "redirect_uri": APP,
                                 "scope": "openid", "code_challenge": challenge, "code_challenge_method": "S256"})
    data = {"grant_type": "authorization_code", "code": "x"} if path == "/token" else None
    return requests.request(method, provider.url + path, headers={"Host": host, **headers}, data=data,
                            allow_redirects=False, timeout=10)


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
def test_a_foreign_host_header_gets_400_and_no_link_to_it(provider, app_client, host):
    """Plain http with a Host that is not the issuer's once gave a 500 (Authlib refuses a
    non-loopback http URL) whose "try again" link pointed at that host. Now every path answers
    400: JSON with an RFC 6749 error on protocol endpoints, a page elsewhere, naming no host."""
    for method, path in HOST_PATHS:
        r = _host_request(provider, app_client, method, path, host)
        assert r.status_code == 400, (host, path, r.status_code, r.text[:200])
        assert "Location" not in r.headers, (host, path)
        if path.startswith(("/token", "/.well-known/", "/jwks", "/userinfo")):
            assert r.json()["error"] == "invalid_request", (host, path, r.text)
        else:
            assert "text/html" in r.headers["Content-Type"], (host, path)
            assert not re.search(r'(href|action|src)="(?!data:)([a-z][a-z0-9+.-]*:|//|\\)', r.text), \
                (host, path, "a link to another origin")
        if host:
            assert "evil" not in r.text.lower() and host not in r.text, (host, path)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "LOCALHOST"])
def test_loopback_names_reach_a_loopback_issuer_on_any_port(provider, app_client, host):
    """An http issuer is always loopback (idp dev, tests): its other loopback names answer too,
    and links and the discovery document still come from the issuer."""
    for suffix in ("", ":1"):
        r = _host_request(provider, app_client, "GET", "/.well-known/openid-configuration", host + suffix)
        assert r.status_code == 200 and r.json()["issuer"] == provider.url, (host, r.status_code)
        r = _host_request(provider, app_client, "GET", "/authorize", host + suffix)
        assert shows_login(r), (host, r.status_code)


def test_behind_a_proxy_the_forwarded_host_must_be_the_issuers(make_provider):
    """idp serve behind a TLS proxy (docs/deployment.md): an https issuer, proxy_hops = 1, the
    proxy's X-Forwarded-Host and -Proto. The issuer's host is answered; another host, the node's
    own address without the forwarded host, and loopback names (an https issuer is no
    development setup) are refused. The issuer's host over plain http (a proxy that leaves out
    X-Forwarded-Proto) is a 400 for the OAuth endpoints, which need https, not a 500; health
    checks sent with the issuer's Host still answer."""
    issuer = "https://login.example.test"
    provider = make_provider(server={"issuer": issuer, "proxy_hops": 1}, limits=GENEROUS_IP_LIMITS)
    node = "http://" + provider.settings.server.bind
    client_id, _, redirect = provider.add_client(redirect_uri="https://agency.example.test/cb")
    _, challenge = pkce_pair()
    authorize_path = "/authorize?" + urlencode({"response_type": "code", "client_id": client_id,
                                                "redirect_uri": redirect, "scope": "openid",
                                                "code_challenge": challenge, "code_challenge_method": "S256"})

    def get(path: str, **headers) -> requests.Response:
        return requests.get(node + path, headers=headers, allow_redirects=False, timeout=10)

    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    r = get("/.well-known/openid-configuration", **proxied, **{"X-Forwarded-Host": "login.example.test"})
    assert r.status_code == 200 and r.json()["issuer"] == issuer
    r = get(authorize_path, **proxied, **{"X-Forwarded-Host": "login.example.test"})
    assert shows_login(r), (r.status_code, r.text[:300])
    r = get(authorize_path, **proxied, Host="login.example.test")  # a proxy that passes Host on instead
    assert shows_login(r), r.status_code
    for headers in ({**proxied, "X-Forwarded-Host": "evil.example"}, {**proxied, "Host": "evil.example"},
                    proxied, {**proxied, "X-Forwarded-Host": "localhost"}):
        for path in ("/", authorize_path, "/.well-known/openid-configuration", "/healthz"):
            r = get(path, **headers)
            assert r.status_code == 400 and "evil" not in r.text, (headers, path, r.status_code)
    plain_http = {"Host": "login.example.test"}
    assert get(authorize_path, **plain_http).status_code == 400
    r = requests.post(node + "/token", headers=plain_http, data={"grant_type": "authorization_code", "code": "x"},
                      timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request", (r.status_code, r.text)
    assert get("/healthz", **plain_http).status_code == 200
    assert get("/.well-known/openid-configuration", **plain_http).json()["issuer"] == issuer


@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke", "/userinfo"])
def test_cors_is_not_granted_to_arbitrary_origins(provider, app_client, path):
    """The token, introspection and revocation endpoints are for servers, not browsers: no CORS.
    Userinfo may be shared with "*" (bearer tokens, never cookies), never with credentials."""
    origin = "https://evil.example"
    preflight = requests.options(f"{provider.url}{path}", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"}, timeout=10)
    actual = requests.post(f"{provider.url}{path}", data={"grant_type": "x", "token": "x"}, auth=app_client[:2],
                           headers={"Origin": origin}, timeout=10)
    for r in (preflight, actual):
        allowed = r.headers.get("Access-Control-Allow-Origin")
        assert allowed is None or (path == "/userinfo" and allowed == "*"), (path, allowed)
        assert "Access-Control-Allow-Credentials" not in r.headers, path


# =========================================================================================================
# Disabled clients, SSO by cookie only, OTP brute force
# =========================================================================================================

def _disable(provider, client_id: str) -> None:
    from idp.protocol import agencies

    with provider.app.app_context():
        agencies.set_enabled(agencies.get_client(client_id), False)


def test_a_disabled_client_can_neither_authorize_nor_exchange(provider, citizen):
    client = provider.add_client(scope="openid offline_access")
    browser, body = tokens_for(provider, client, citizen, scope="openid offline_access")
    code = sso_code(browser, client[0], client[2])
    _disable(provider, client[0])
    r = authorize(browser, client[0], client[2])
    assert_no_redirect_page(r)
    r = browser.exchange(*client[:2], client[2], code)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
    r = refresh(provider, client, body["refresh_token"])
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
    r = requests.post(f"{provider.url}/introspect", data={"token": body["access_token"]}, auth=client[:2],
                      timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def test_sso_is_by_cookie_only(provider, app_client, citizen):
    """A login for client A in one browser gives client B nothing in another browser, whatever that
    browser knows about the login (its link, the national ID, the ID token)."""
    other = provider.add_client()
    browser = provider.flow()
    page = identify_page(browser, app_client[0], APP)
    rid_url = login_url(page)
    sent = len(provider.outbox.messages(mobile_e164(citizen[1])))
    code_form = browser.follow(browser.submit(page, {"national_id": citizen[0], "mobile": citizen[1]}), APP)
    otp = provider.outbox.last_code(mobile_e164(citizen[1]), after=sent)
    done = browser.submit(code_form, {"otp": otp})
    code = redirect_params(done, APP)["code"]  # the login went straight on to the agency
    attacker = provider.flow()
    # The paused request's links are bound to the browser that started it (and are spent now).
    for url in (rid_url, rid_url.replace("/login?", "/login/code?"),
                rid_url.replace("/login?", "/authorize/resume?"), rid_url.replace("/login?", "/consent?")):
        r = attacker.get(url)
        assert r.status_code == 400 and "Location" not in r.headers, url
    id_token = browser.exchange(*app_client[:2], APP, code).json()["id_token"]
    for extra in ({}, {"login_hint": citizen[0]}, {"id_token_hint": id_token}):
        r = attacker.start(other[0], other[2], **extra)
        assert r.status_code == 200 and 'name="national_id"' in r.text, extra
        r = authorize(attacker, other[0], other[2], prompt="none", **extra)
        assert redirect_params(r, other[2])["error"] == "login_required", extra
    assert "code" in redirect_params(authorize(browser, other[0], other[2]), other[2]), "SSO works with the cookie"


def test_otp_brute_force_is_bounded_by_the_challenge_and_the_limits(make_provider):
    """Five tries per challenge, a resend does not renew them, digits in any script count the
    same; across challenges the wrong codes of the pair add up and the cool-off (after
    failures_before_cooloff = 10) stops guessing, even of the right code."""
    provider = make_provider(limits={**GENEROUS_IP_LIMITS, "resend_after": 0})
    client = provider.add_client()
    citizen = provider.add_citizen()
    mobile = mobile_e164(citizen[1])
    persian = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
    wrong_for = lambda code: f"{(int(code) + 1) % 10**6:06d}"  # noqa: E731
    browser = provider.flow()
    page, right = code_page(provider, browser, client, citizen)
    statuses = [browser.submit(page, {"otp": wrong_for(right).translate(persian) if i % 2 else wrong_for(right)})
                .status_code for i in range(4)]
    sent = len(provider.outbox.messages(mobile))
    assert post(browser, resend_form(page), {}, form_fields(page.text)["csrf_token"]).status_code == 303
    right = provider.outbox.last_code(mobile, after=sent)
    statuses.append(browser.submit(page, {"otp": wrong_for(right)}).status_code)
    assert statuses == [400, 400, 400, 400, 429], statuses
    late = browser.submit(page, {"otp": right})
    assert late.status_code == 400 and not late.is_redirect, ("the challenge is over, even for the right code",
                                                              late.status_code)
    # A second challenge: guessing stops at a cool-off within five more tries (ten in all at most).
    second = provider.flow()
    page, right = code_page(provider, second, client, citizen)
    tries = 0
    while tries < 5:
        r = second.submit(page, {"otp": wrong_for(right)})
        tries += 1
        if r.status_code == 429 and "Retry-After" in r.headers:
            break
        assert r.status_code == 400 and not r.is_redirect, r.status_code  # a wrong code, until the cool-off
    assert r.status_code == 429 and "Retry-After" in r.headers, "a cool-off started"
    # During the cool-off no challenge opens, so not even the right code can be tried.
    third = provider.flow()
    page = identify_page(third, client[0], client[2])
    r = third.submit(page, {"national_id": citizen[0], "mobile": citizen[1]})
    assert r.status_code == 429 and not r.is_redirect, r.status_code


def test_reflected_parameters_are_escaped(provider, app_client, citizen):
    """Input shown back on a page (the logout confirmation's hidden fields, error pages) is escaped."""
    evil = '"><script>alert(1)</script>'
    browser, _ = tokens_for(provider, app_client, citizen)
    for r in (browser.get(f"{provider.url}/logout?" + urlencode({"state": evil, "client_id": app_client[0]})),
              requests.get(f"{provider.url}/authorize?" + urlencode({"client_id": evil, "redirect_uri": evil}),
                           timeout=10),
              requests.get(f"{provider.url}/login?" + urlencode({"r": evil}), timeout=10)):
        assert "<script>alert(1)" not in r.text, r.url


def test_doubled_slashes_get_a_404_not_a_redirect_built_from_the_host_header(provider):
    """werkzeug answered /login//code with a 308 to http://<Host header>/login/code."""
    for path in ("/login//code", "/static//idp.css", "/account//services", "/authorize//resume"):
        r = requests.get(provider.url + path, headers={"Host": "localhost"}, allow_redirects=False, timeout=10)
        assert r.status_code == 404 and "Location" not in r.headers, (path, r.status_code, r.headers.get("Location"))
