"""clients.agency_api: GET /api/me with RFC 6750 bearer tokens, verified against a local JWKS server."""

from __future__ import annotations

import re

import pytest

from clients.agency_api import challenge, create_app
from clients.tests.conftest import access_token_claims

#: RFC 6750 §3: the characters allowed inside error_description.
DESCRIPTION_CHARS = re.compile(r'^[\x20\x21\x23-\x5b\x5d-\x7e]*$')
CHALLENGE = re.compile(r'^Bearer realm="agency-api", error="invalid_token", error_description="([^"]*)"$')


@pytest.fixture
def api(provider):
    """A test client of the API, built from environment variables only."""
    app = create_app(env={"AGENCY_ISSUER": provider.url + "/", "AGENCY_API_AUDIENCE": "https://api.agency.example"})
    return app.test_client()


def test_valid_token_returns_who_it_is_for(provider, api, sign):
    token = sign(access_token_claims(provider.url))
    response = api.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json == {
        "sub": "pairwise-subject-1",
        "client_id": "agency-web",
        "scope": "openid profile",
        "acr": "urn:ir:idp:otp",
        "amr": ["otp", "sms"],
        "act": None,
        "actors": [],
    }
    assert response.headers["Cache-Control"] == "no-store"
    assert "WWW-Authenticate" not in response.headers


def test_an_exchanged_token_shows_who_acted(provider, api, sign):
    """A token another agency obtained for this one by token exchange (RFC 8693 §4.1)."""
    act = {"sub": "agency-b", "act": {"sub": "agency-a"}}
    token = sign(access_token_claims(provider.url, act=act))
    response = api.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json["act"] == act and response.json["actors"] == ["agency-b", "agency-a"]
    bad = sign(access_token_claims(provider.url, act={"sub": "agency-b", "act": "agency-a"}))
    response = api.get("/api/me", headers={"Authorization": f"Bearer {bad}"})
    assert response.status_code == 401
    assert 'error_description="invalid claim act"' in response.headers["WWW-Authenticate"]


def test_scheme_name_is_case_insensitive(provider, api, sign):
    token = sign(access_token_claims(provider.url))
    assert api.get("/api/me", headers={"Authorization": f"bearer {token}"}).status_code == 200


def test_missing_token_gets_a_bare_challenge(api):
    """RFC 6750 §3.1: no credentials at all, so no error code."""
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}):
        response = api.get("/api/me", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="agency-api"'


@pytest.mark.parametrize(
    ("overrides", "header", "reason"),
    [
        ({"exp": 1_000_000_300, "iat": 1_000_000_000}, {}, "token expired"),
        ({"aud": "https://someone-else.example"}, {}, "invalid claim aud"),
        ({}, {"typ": "JWT"}, "typ header is not at+jwt"),
    ],
)
def test_bad_token_gets_invalid_token(provider, api, sign, overrides, header, reason):
    token = sign(access_token_claims(provider.url, **overrides), **header)
    response = api.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    match = CHALLENGE.match(response.headers["WWW-Authenticate"])
    assert match, response.headers["WWW-Authenticate"]
    assert match.group(1) == reason
    assert response.json == {"error": "invalid_token", "error_description": reason}


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer not.a.jwt", "Bearer a b"])
def test_malformed_bearer_value_is_invalid_token(api, value):
    response = api.get("/api/me", headers={"Authorization": value})
    assert response.status_code == 401
    assert CHALLENGE.match(response.headers["WWW-Authenticate"])


def test_token_in_query_string_is_ignored(provider, api, sign):
    """RFC 9700 §2.4 / RFC 6750 §2.3: tokens in URLs leak; only the header counts."""
    token = sign(access_token_claims(provider.url))
    assert api.get(f"/api/me?access_token={token}").status_code == 401


def test_description_is_stripped_of_forbidden_characters():
    app = create_app(env={"AGENCY_ISSUER": "http://127.0.0.1:9", "AGENCY_API_AUDIENCE": "demo-app"})
    with app.test_request_context():
        header = challenge(401, "invalid_token", 'bad "quoted" \\ value — ü').headers["WWW-Authenticate"]
    match = CHALLENGE.match(header)
    assert match and DESCRIPTION_CHARS.match(match.group(1))
    assert match.group(1) == "bad quoted  value  "


def test_unreachable_keys_are_a_server_problem(provider, api, sign):
    del provider.routes["/jwks"]
    token = sign(access_token_claims(provider.url))
    response = api.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503


def test_issuer_is_required():
    with pytest.raises(ValueError, match="AGENCY_ISSUER"):
        create_app(env={})


def test_audience_is_required():
    """An API that took any client's token would take one minted for another agency."""
    with pytest.raises(ValueError, match="AGENCY_API_AUDIENCE is required"):
        create_app(env={"AGENCY_ISSUER": "http://127.0.0.1:9"})
