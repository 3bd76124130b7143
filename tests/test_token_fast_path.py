"""The token endpoint's everyday requests answered before Flask's dispatch (protocol/issue.py):
a code exchange and a refresh with client_secret_basic get the same tokens, and once a code or
refresh token is taken the same errors, as Authlib's grants give the same request sent with
client_secret_post (which the fast path leaves to the view); and what it must leave to the view
reaches it."""
from __future__ import annotations

import base64
import hashlib

import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from idp.platform.web import SECURITY_HEADERS
from idp.protocol import issue
from idp.protocol.subjects import open_ref

from .helpers import redirect_params

HEADERS = ("Content-Type", "Cache-Control", "Pragma", "WWW-Authenticate", *(name for name, _ in SECURITY_HEADERS))
#: Claims that differ between two tokens of the same grant (time, the token's own id, the request's
#: nonce, the sealed citizen reference: sealed anew each time, opened and compared below).
VARYING = {"iat", "exp", "jti", "at_hash", "nonce", "idp_ref"}


def _codes(provider, count: int, scope: str = "openid profile offline_access"):
    """A client, and ``count`` codes of one citizen (a login, then single sign-on), with verifiers."""
    client = provider.add_client(scope="openid profile offline_access")
    client_id, _, redirect = client
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    codes = [(browser.login(client_id, redirect, national_id, mobile, scope=scope)["code"], browser.last_verifier)]
    while len(codes) < count:
        answer = browser.start(client_id, redirect, scope=scope)
        codes.append((redirect_params(answer, redirect)["code"], browser.last_verifier))
    return client, codes


def _token(provider, client, fields: dict, through_view: bool) -> requests.Response:
    client_id, secret, _ = client
    if through_view:  # client_secret_post: Authlib's grants answer
        return requests.post(f"{provider.url}/token", data={**fields, "client_id": client_id, "client_secret": secret},
                             timeout=10)
    return requests.post(f"{provider.url}/token", data=fields, auth=(client_id, secret), timeout=10)


def _exchange(provider, client, code: str, verifier: str, through_view: bool, change: dict | None = None) \
        -> requests.Response:
    fields = {"grant_type": "authorization_code", "code": code, "redirect_uri": client[2], "code_verifier": verifier}
    return _token(provider, client, {**fields, **(change or {})}, through_view)


def _same_answer(fast: requests.Response, view: requests.Response) -> None:
    assert fast.status_code == view.status_code, (fast.text, view.text)
    for name in HEADERS:
        assert fast.headers.get(name) == view.headers.get(name), name


def _same_jwt(provider, fast: str, view: str) -> tuple[dict, dict]:
    keys = KeySet.import_key_set(requests.get(f"{provider.url}/jwks", timeout=10).json())
    a = jwt.decode(fast, keys, algorithms=["RS256", "ES256"])
    b = jwt.decode(view, keys, algorithms=["RS256", "ES256"])
    assert a.header == b.header
    assert a.claims.keys() == b.claims.keys()
    assert {k: v for k, v in a.claims.items() if k not in VARYING} == \
        {k: v for k, v in b.claims.items() if k not in VARYING}
    if "idp_ref" in a.claims:
        with provider.app.app_context():
            assert open_ref(a.claims["idp_ref"]) == open_ref(b.claims["idp_ref"]) is not None
    return a.claims, b.claims


def _at_hash(access_token: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(access_token.encode()).digest()[:16]).rstrip(b"=").decode()


def test_a_code_exchange_and_a_refresh_the_same_both_ways(provider):
    client, codes = _codes(provider, 2)
    fast, view = (_exchange(provider, client, *codes[0], through_view=False),
                  _exchange(provider, client, *codes[1], through_view=True))
    _same_answer(fast, view)
    a, b = fast.json(), view.json()
    assert fast.status_code == 200 and a.keys() == b.keys() == {"access_token", "token_type", "expires_in", "scope",
                                                                 "refresh_token", "id_token"}
    assert (a["token_type"], a["expires_in"], a["scope"]) == (b["token_type"], b["expires_in"], b["scope"])
    access, _ = _same_jwt(provider, a["access_token"], b["access_token"])
    assert access["client_id"] == client[0] and access["jti"].startswith("c")
    id_a, id_b = _same_jwt(provider, a["id_token"], b["id_token"])
    assert id_a["at_hash"] == _at_hash(a["access_token"]) and id_b["at_hash"] == _at_hash(b["access_token"])
    assert id_a["aud"] == [client[0]] and id_a["azp"] == client[0] and id_a["nonce"]

    refresh = {"grant_type": "refresh_token"}
    fast = _token(provider, client, {**refresh, "refresh_token": a["refresh_token"]}, through_view=False)
    view = _token(provider, client, {**refresh, "refresh_token": b["refresh_token"]}, through_view=True)
    _same_answer(fast, view)
    ra, rb = fast.json(), view.json()
    assert fast.status_code == 200 and ra.keys() == rb.keys() == {"access_token", "token_type", "expires_in", "scope",
                                                                  "refresh_token"}
    assert ra["refresh_token"] != a["refresh_token"], "rotated"
    _same_jwt(provider, ra["access_token"], rb["access_token"])

    # the rotated tokens, back at once (inside the grace window): the same refusal both ways
    fast = _token(provider, client, {**refresh, "refresh_token": a["refresh_token"]}, through_view=False)
    view = _token(provider, client, {**refresh, "refresh_token": b["refresh_token"]}, through_view=True)
    _same_answer(fast, view)
    assert fast.status_code == 400 and fast.json() == view.json() and fast.json()["error"] == "invalid_grant"
    # a refresh token that never was
    fast = _token(provider, client, {**refresh, "refresh_token": "x" * 43}, through_view=False)
    view = _token(provider, client, {**refresh, "refresh_token": "x" * 43}, through_view=True)
    _same_answer(fast, view)
    assert fast.json() == view.json() == {"error": "invalid_grant"}


def test_refusals_once_the_code_is_taken_are_the_same_both_ways(provider):
    client, codes = _codes(provider, 6)
    cases = [
        ({"redirect_uri": client[2] + "x"}, "Invalid 'redirect_uri' in request."),
        ({"code_verifier": "v" * 43}, "Code challenge failed."),
        ({"code": "never-issued-" + "x" * 30}, "Invalid 'code' in request."),
    ]
    pairs = iter(codes)
    for change, description in cases:
        fast = _exchange(provider, client, *next(pairs), through_view=False, change=change)
        view = _exchange(provider, client, *next(pairs), through_view=True, change=change)
        _same_answer(fast, view)
        assert fast.status_code == 400 and fast.json() == view.json() == \
            {"error": "invalid_grant", "error_description": description}


def test_a_replayed_code_is_refused_and_revokes_what_it_issued_both_ways(provider):
    client, codes = _codes(provider, 2)
    for (code, verifier), through_view in zip(codes, (False, True)):
        first = _exchange(provider, client, code, verifier, through_view=through_view)
        assert first.status_code == 200
        again = _exchange(provider, client, code, verifier, through_view=not through_view)
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
        # RFC 6749 §4.1.2: what the code issued is revoked
        info = requests.get(f"{provider.url}/userinfo", timeout=10,
                            headers={"Authorization": f"Bearer {first.json()['access_token']}"})
        assert info.status_code == 401
        refreshed = _token(provider, client, {"grant_type": "refresh_token",
                                              "refresh_token": first.json()["refresh_token"]}, through_view=False)
        assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"


def test_another_clients_code_is_burnt_on_the_fast_path(provider):
    client, codes = _codes(provider, 1)
    other = provider.add_client(scope="openid profile offline_access", redirect_uri=client[2])
    stolen = _exchange(provider, other, *codes[0], through_view=False)
    assert stolen.status_code == 400 and stolen.json() == {"error": "invalid_grant",
                                                           "error_description": "Invalid 'code' in request."}
    assert _exchange(provider, client, *codes[0], through_view=False).status_code == 400, "burnt"


def test_requests_in_other_shapes_are_left_to_the_view(provider):
    client, codes = _codes(provider, 2)
    client_id, secret, redirect = client
    # a malformed verifier: Authlib takes the code, then refuses the request
    short = _exchange(provider, client, codes[0][0], "short", through_view=False)
    assert short.status_code == 400 and short.json() == {"error": "invalid_request",
                                                         "error_description": "Invalid 'code_verifier'"}
    assert _exchange(provider, client, *codes[0], through_view=False).status_code == 400, "the code was taken"
    # a wrong secret: invalid_client, the code left as it was
    wrong = requests.post(f"{provider.url}/token", auth=(client_id, secret + "x"), timeout=10,
                          data={"grant_type": "authorization_code", "code": codes[1][0], "redirect_uri": redirect,
                                "code_verifier": codes[1][1]})
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    tokens = _exchange(provider, client, *codes[1], through_view=False)
    assert tokens.status_code == 200
    # a refresh asking for less: Authlib's grant narrows the scope
    narrower = _token(provider, client, {"grant_type": "refresh_token", "refresh_token": tokens.json()["refresh_token"],
                                         "scope": "openid"}, through_view=False)
    assert narrower.status_code == 200 and narrower.json()["scope"] == "openid"
    # a repeated parameter
    repeated = requests.post(f"{provider.url}/token", auth=(client_id, secret), timeout=10,
                             data=[("grant_type", "refresh_token"), ("refresh_token", "a"), ("refresh_token", "b")])
    assert repeated.status_code == 400 and repeated.json()["error_description"] == "Repeated parameter"


def test_the_shapes_the_fast_path_takes():
    code = {"grant_type": "authorization_code", "code": "c", "redirect_uri": "r", "code_verifier": "v" * 43}
    assert issue.common_shape(code)
    assert issue.common_shape({"grant_type": "refresh_token", "refresh_token": "t"})
    assert not issue.common_shape({**code, "code_verifier": "v" * 42})  # Authlib's "Invalid 'code_verifier'"
    assert not issue.common_shape({**code, "client_id": "x"})
    assert not issue.common_shape({"grant_type": "refresh_token", "refresh_token": "t", "scope": "openid"})
    assert not issue.common_shape({"grant_type": "client_credentials"})
