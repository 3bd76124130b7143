"""clients.agency_web against a local stand-in provider: login, callback checks, logout.

The stand-in serves discovery, JWKS, a token endpoint and userinfo from the
real local HTTP server, so Authlib's requests, PKCE and ID token checks run
for real; only the citizen's trip through the login pages is skipped.
"""

from __future__ import annotations

import base64
import hashlib
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc.jwk import RSAKey

from clients.agency_web import create_app

CLIENT_ID, CLIENT_SECRET, PORT = "agency-report-card", "s3cret-value", 5001


@pytest.fixture
def idp(provider, keys, sign):
    """The local server as a full provider; tests change ``idp.id_claims`` to misbehave."""
    provider.routes["/.well-known/openid-configuration"].update(
        authorization_endpoint=provider.url + "/authorize",
        token_endpoint=provider.url + "/token",
        userinfo_endpoint=provider.url + "/userinfo",
        end_session_endpoint=provider.url + "/logout",
        id_token_signing_alg_values_supported=["RS256", "ES256"],
        authorization_response_iss_parameter_supported=True,
    )
    provider.id_claims, provider.id_token_key, provider.send_id_token = {}, None, True
    provider.userinfo = {"sub": "pairwise-7", "given_name": "زهرا", "family_name": "احمدی", "birthdate": "2008-03-21"}

    def token_endpoint(request):
        """Answer the code exchange, checking client authentication and the PKCE verifier."""
        form = {name: values[0] for name, values in parse_qs(request.body.decode()).items()}
        basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {basic}" or form.get("code") != "the-code":
            return 400, {"error": "invalid_grant"}
        verifier = form["code_verifier"].encode()
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()
        if challenge != provider.pending["code_challenge"]:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        now = int(time.time())
        claims = {"iss": provider.url, "sub": "pairwise-7", "aud": CLIENT_ID, "iat": now, "exp": now + 300,
                  "auth_time": 1_735_000_000, "nonce": provider.pending["nonce"],
                  "acr": "urn:ir:idp:otp", "amr": ["otp"], **provider.id_claims}
        answer = {"access_token": "opaque-at", "token_type": "Bearer", "expires_in": 300}
        if provider.send_id_token:
            answer["id_token"] = sign(claims, key=provider.id_token_key, typ="JWT")
        return 200, answer

    provider.routes["/token"] = token_endpoint
    provider.routes["/userinfo"] = lambda request: (200, provider.userinfo)
    return provider


@pytest.fixture
def client(idp):
    """A browser for the agency app, configured from environment variables only."""
    app = create_app(env={
        "AGENCY_ISSUER": idp.url, "AGENCY_CLIENT_ID": CLIENT_ID, "AGENCY_CLIENT_SECRET": CLIENT_SECRET,
        "AGENCY_PORT": str(PORT), "AGENCY_KIND": "report-card",
    })
    return app.test_client()


def start_login(client, idp) -> dict[str, str]:
    """GET /login and return the authorization request's parameters (kept on idp.pending)."""
    response = client.get("/login")
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == idp.url + "/authorize"
    idp.pending = {name: values[0] for name, values in parse_qs(location.query).items()}
    return idp.pending


def test_home_offers_the_login_button(client):
    page = client.get("/").get_data(as_text=True)
    assert 'dir="rtl"' in page and "ورود با درگاه ملی" in page
    assert "Log in with the national identity provider" in page
    assert "<script" not in page


def test_authorization_request_has_pkce_state_and_nonce(client, idp):
    params = start_login(client, idp)
    assert params["response_type"] == "code"
    assert params["client_id"] == CLIENT_ID
    assert params["redirect_uri"] == f"http://127.0.0.1:{PORT}/callback"
    assert params["scope"] == "openid profile"
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43
    assert params["state"] and params["nonce"]
    assert client.get_cookie(f"agency_{PORT}_session") is not None


def test_full_login_shows_verified_claims(client, idp):
    params = start_login(client, idp)
    response = client.get(f"/callback?code=the-code&state={params['state']}&iss={idp.url}")
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert idp.hits["/token"] == 1 and idp.hits["/userinfo"] == 1
    page = client.get("/").get_data(as_text=True)
    assert "زهرا" in page and "2008-03-21" in page and "pairwise-7" in page
    assert "2024-12-24 00:26 UTC" in page  # auth_time shown as a date
    assert "urn:ir:idp:otp" in page and "Term report card" in page


def test_replayed_callback_is_refused(client, idp):
    params = start_login(client, idp)
    callback = f"/callback?code=the-code&state={params['state']}&iss={idp.url}"
    assert client.get(callback).status_code == 302
    client.get("/logout")
    response = client.get(callback)
    assert response.status_code == 400 and "state_mismatch" in response.get_data(as_text=True)


@pytest.mark.parametrize("iss", ["http://127.0.0.1:1", None])
def test_wrong_or_missing_iss_is_refused_before_the_code_is_used(client, idp, iss):
    params = start_login(client, idp)
    query = f"code=the-code&state={params['state']}" + (f"&iss={iss}" if iss else "")
    response = client.get(f"/callback?{query}")
    assert response.status_code == 400 and "issuer_mismatch" in response.get_data(as_text=True)
    assert idp.hits["/token"] == 0


def test_access_denied_is_a_friendly_page(client, idp):
    params = start_login(client, idp)
    response = client.get(f"/callback?error=access_denied&state={params['state']}&iss={idp.url}")
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "ورود لغو شد" in page and "access_denied" in page and "Traceback" not in page


def test_provider_error_text_is_logged_not_shown(client, idp, caplog):
    """A redirect's error and error_description are anyone's to write: the page says only that
    the sign-in did not complete."""
    params = start_login(client, idp)
    response = client.get(f"/callback?error=invalid_request&error_description=Call+0912+now+to+unlock"
                          f"&state={params['state']}&iss={idp.url}")
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "The sign-in could not be completed. Please try again." in page and "ورود کامل نشد" in page
    assert "0912" not in page and "invalid_request" not in page
    assert "Call 0912 now to unlock" in caplog.text and "invalid_request" in caplog.text
    assert idp.hits["/token"] == 0


def test_refused_code_exchange_shows_a_plain_page_not_authlib_text(client, idp, caplog):
    """A wrong client secret: the provider answers invalid_client, and the citizen, who could do
    nothing about it, gets a plain "try again" page with a way back, while the log says why."""
    description = "The client's authentication failed; methods: ['client_secret_basic']"
    idp.routes["/token"] = lambda request: (401, {"error": "invalid_client", "error_description": description})
    params = start_login(client, idp)
    response = client.get(f"/callback?code=the-code&state={params['state']}&iss={idp.url}")
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "The sign-in could not be completed. Please try again." in page and "ورود کامل نشد" in page
    assert 'href="/"' in page
    for raw in ("invalid_client", "methods", "client_secret_basic", "authentication failed", "Traceback"):
        assert raw not in page
    assert "invalid_client" in caplog.text and "methods" in caplog.text
    assert idp.hits["/token"] == 1
    assert "pairwise-7" not in client.get("/").get_data(as_text=True)


@pytest.mark.parametrize(
    "bad_claims",
    [{"nonce": "another-nonce"}, {"aud": "another-client"}, {"iss": "http://127.0.0.1:1"}, {"exp": 1_000_000_000}],
)
def test_bad_id_token_is_refused(client, idp, bad_claims, caplog):
    idp.id_claims = bad_claims
    assert_login_refused(client, idp, ("invalid_claim", "missing_claim", "expired_token"), caplog)


def test_id_token_signed_by_another_key_is_refused(client, idp, caplog):
    idp.id_token_key = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    assert_login_refused(client, idp, ("bad_signature",), caplog)


def test_alg_none_is_refused_even_if_discovery_lists_it(client, idp, caplog):
    discovery = idp.routes["/.well-known/openid-configuration"]
    discovery["id_token_signing_alg_values_supported"] = ["none", "HS256", "RS256"]
    real_token_endpoint = idp.routes["/token"]

    def unsigned_id_token(request):
        """The real answer with the ID token's signature stripped and alg set to none."""
        status, answer = real_token_endpoint(request)
        _, payload, _ = answer["id_token"].split(".")
        header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
        answer["id_token"] = f"{header}.{payload}."
        return status, answer

    idp.routes["/token"] = unsigned_id_token
    assert_login_refused(client, idp, ("unsupported_algorithm",), caplog)


def test_token_response_without_id_token_is_refused(client, idp, caplog):
    idp.send_id_token = False
    assert_login_refused(client, idp, ("has no ID token",), caplog)


def assert_login_refused(client, idp, reasons: tuple[str, ...], caplog=None) -> None:
    """Run the callback, then check it failed with a plain page (no library text), that one of
    ``reasons`` is in the log when ``caplog`` is given, and that nobody is logged in."""
    params = start_login(client, idp)
    response = client.get(f"/callback?code=the-code&state={params['state']}&iss={idp.url}")
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "<code>sign_in_failed</code>" in page or "<code>invalid_response</code>" in page
    if caplog is not None:
        assert any(reason in caplog.text for reason in reasons), caplog.text
        assert not any(reason in page for reason in reasons)
    assert idp.hits["/token"] == 1
    assert "pairwise-7" not in client.get("/").get_data(as_text=True)


def test_userinfo_about_someone_else_is_refused(client, idp, caplog):
    idp.userinfo = {**idp.userinfo, "sub": "someone-else"}
    assert_login_refused(client, idp, ("userinfo sub differs",), caplog)


def test_logout_ends_the_provider_session(client, idp):
    params = start_login(client, idp)
    client.get(f"/callback?code=the-code&state={params['state']}&iss={idp.url}")
    response = client.get("/logout")
    location = urlsplit(response.headers["Location"])
    query = {name: values[0] for name, values in parse_qs(location.query).items()}
    assert f"{location.scheme}://{location.netloc}{location.path}" == idp.url + "/logout"
    assert query["post_logout_redirect_uri"] == f"http://127.0.0.1:{PORT}/"
    assert query["id_token_hint"].count(".") == 2
    assert "pairwise-7" not in client.get("/").get_data(as_text=True)


def test_unreachable_provider_is_a_page_not_a_crash(idp):
    app = create_app(env={"AGENCY_ISSUER": "http://127.0.0.1:9", "AGENCY_CLIENT_ID": "x",
                          "AGENCY_CLIENT_SECRET": "y", "AGENCY_PORT": "5002", "AGENCY_KIND": "tax"})
    response = app.test_client().get("/login")
    assert response.status_code == 502 and "درگاه ملی در دسترس نیست" in response.get_data(as_text=True)


def test_configuration_errors_are_clear():
    with pytest.raises(ValueError, match="AGENCY_CLIENT_SECRET"):
        create_app(env={"AGENCY_ISSUER": "http://127.0.0.1:5000", "AGENCY_CLIENT_ID": "x", "AGENCY_PORT": "5001"})
    with pytest.raises(ValueError, match="AGENCY_KIND"):
        create_app(env={"AGENCY_ISSUER": "http://127.0.0.1:5000", "AGENCY_CLIENT_ID": "x",
                        "AGENCY_CLIENT_SECRET": "y", "AGENCY_PORT": "5001", "AGENCY_KIND": "police"})
