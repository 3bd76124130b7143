"""Fixtures of the interoperability tests: the real provider on a loopback port (SQLite + real
Redis, one for the package), a browser that walks the login pages from any authorization URL a
relying-party library built, and an agency's back-channel logout endpoint (a local http.server).

Nothing here speaks OAuth for the relying party: the libraries under test (Authlib's client,
panva's openid-client) build every protocol request and validate every response themselves. The
Python side only plays the citizen's browser.
"""
from __future__ import annotations

from urllib.parse import urljoin

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from ..conftest import GENEROUS_IP_LIMITS, start_provider
from ..helpers import FlowClient, LogoutReceiver, mobile_e164

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


@pytest.fixture(scope="package")
def interop_provider(tmp_path_factory, redis_url):
    """The provider on SQLite (with real Redis) for the whole interop package; its back-channel
    logout worker is stopped at the end so it cannot outlive the provider."""
    tmp = tmp_path_factory.mktemp("interop")
    live = start_provider(tmp, f"sqlite:///{tmp / 'idp.sqlite3'}", redis_url, limits=GENEROUS_IP_LIMITS)
    yield live
    try:
        from idp.protocol import backchannel

        backchannel.stop_worker(live.app)
    except (ImportError, AttributeError):  # a build without back-channel logout
        pass
    live.stop()
    with live.app.app_context():
        from idp.platform.database import db

        db.engine.dispose()


@pytest.fixture(scope="package")
def discovery(interop_provider) -> dict:
    """The provider's metadata, fetched as any agency would."""
    r = requests.get(f"{interop_provider.url}/.well-known/openid-configuration", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


class Browser(FlowClient):
    """The citizen's browser: follows whatever URL a relying-party library built."""

    def walk_login(self, authorize_url: str, redirect_uri: str, national_id: str, mobile: str) -> str:
        """From the authorization URL through the login pages (the SMS code read from the outbox)
        to the redirect back to the client; returns that callback URL unchanged."""
        page = self.follow(self.get(authorize_url), redirect_uri)
        if not page.is_redirect:
            assert page.status_code == 200 and 'name="national_id"' in page.text, page.text[:500]
            to = mobile_e164(mobile)
            sent_before = len(self.provider.outbox.messages(to))
            page = self.follow(self.submit(page, {"national_id": national_id, "mobile": mobile}), redirect_uri)
            assert page.status_code == 200 and 'name="otp"' in page.text, page.text[:500]
            code = self.provider.outbox.last_code(to, after=sent_before)
            page = self.follow(self.submit(page, {"otp": code}), redirect_uri)
        assert page.is_redirect, f"expected a redirect to the client, got {page.status_code}: {page.text[:300]}"
        location = urljoin(page.url, page.headers["Location"])
        assert location.startswith(redirect_uri + "?"), location
        return location

    def walk_logout(self, end_session_url: str) -> requests.Response:
        """Follow an end_session URL; confirm on the page when the provider asks. Returns the
        provider's last answer (a redirect to the post-logout URI, or the signed-out page)."""
        page = self.get(end_session_url)
        if page.status_code == 200 and 'name="confirm"' in page.text:
            page = self.submit(page, {"confirm": "1"})
        return page

    def signed_in(self, client_id: str, redirect_uri: str) -> bool:
        """Whether a fresh authorization request is answered at once (a live SSO session)."""
        page = self.start(client_id, redirect_uri)
        if page.is_redirect:
            return True
        assert page.status_code == 200 and 'name="national_id"' in page.text, page.text[:300]
        return False


@pytest.fixture()
def browser(interop_provider) -> Browser:
    return Browser(interop_provider)


@pytest.fixture(scope="package")
def logout_receiver():
    r = LogoutReceiver()
    yield r
    r.stop()


def verify_logout_token(provider_url: str, jwks_uri: str, token: str, client_id: str) -> dict:
    """Validate a Logout Token as an agency must (Back-Channel Logout 1.0 §2.6): signature
    against the published JWKS, typ logout+jwt, iss, aud, iat, the event, sid/sub, no nonce."""
    keys = KeySet.import_key_set(requests.get(jwks_uri, timeout=10).json())
    decoded = jwt.decode(token, keys, algorithms=["RS256", "ES256"])
    header, claims = decoded.header, decoded.claims
    assert header.get("typ") == "logout+jwt", header
    assert header.get("kid") in {k["kid"] for k in keys.keys}
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": provider_url},
        aud={"essential": True, "value": client_id},
        iat={"essential": True},
        exp={"essential": True},
        jti={"essential": True},
    ).validate(claims)
    assert claims.get("events") == {BACKCHANNEL_EVENT: {}}, claims
    assert claims.get("sub") or claims.get("sid"), claims
    assert "nonce" not in claims, "a Logout Token must not carry a nonce"
    return {"header": header, "claims": claims}
