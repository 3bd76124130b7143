"""A demo agency web app: a confidential OpenID Connect client of the national provider.

Everything comes from environment variables (see clients/README.md). The
login is the authorization code flow with PKCE S256, state and nonce, done
by Authlib's Flask client, which also verifies the ID token against the
provider's JWKS. Run it with ``python -m clients.agency_web``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from authlib.integrations.flask_client import OAuth
from flask import Flask, Response

from clients.agency_web.agencies import AGENCIES, Agency


@dataclass(frozen=True)
class Settings:
    """The agency's configuration, read once from the environment."""

    issuer: str
    client_id: str
    client_secret: str
    host: str
    port: int
    agency: Agency
    secret_key: str

    @property
    def base_url(self) -> str:
        """Where this app is reached; the redirect URIs are built on it."""
        return f"http://{self.host}:{self.port}"

    @property
    def redirect_uri(self) -> str:
        """The registered redirect URI; the provider matches it exactly."""
        return self.base_url + "/callback"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read AGENCY_* variables, failing with a clear message when one is missing."""
        missing = [name for name in ("AGENCY_ISSUER", "AGENCY_CLIENT_ID", "AGENCY_CLIENT_SECRET", "AGENCY_PORT")
                   if not env.get(name)]
        if missing:
            raise ValueError("missing environment variables: " + ", ".join(missing))
        kind = env.get("AGENCY_KIND", "report-card")
        if kind not in AGENCIES:
            raise ValueError(f"AGENCY_KIND must be one of {', '.join(AGENCIES)}")
        return cls(
            issuer=env["AGENCY_ISSUER"].rstrip("/"),
            client_id=env["AGENCY_CLIENT_ID"],
            client_secret=env["AGENCY_CLIENT_SECRET"],
            host=env.get("AGENCY_HOST") or "127.0.0.1",
            port=int(env["AGENCY_PORT"]),
            agency=AGENCIES[kind],
            secret_key=env.get("AGENCY_SECRET_KEY") or secrets.token_hex(32),
        )


def create_app(env: Mapping[str, str] | None = None) -> Flask:
    """Build the agency app from ``env`` (default: the process environment)."""
    settings = Settings.from_env(os.environ if env is None else env)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        # Cookies are scoped by host, not port, and every demo app runs on
        # 127.0.0.1: a per-port name keeps agencies (and the provider's idp_*
        # cookies) from overwriting one another.
        SESSION_COOKIE_NAME=f"agency_{settings.port}_session",
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_HTTPONLY=True,
    )
    app.extensions["agency_settings"] = settings
    app.extensions["agency_provider"] = OAuth(app).register(
        name="idp",
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        server_metadata_url=settings.issuer + "/.well-known/openid-configuration",
        client_kwargs={"scope": "openid profile", "code_challenge_method": "S256", "default_timeout": 10},
    )
    app.jinja_env.filters["timestamp"] = format_timestamp
    app.after_request(add_security_headers)

    from clients.agency_web import views

    app.register_blueprint(views.bp)
    return app


def format_timestamp(value: object) -> str:
    """A NumericDate (seconds since 1970) as a readable UTC date and time."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "—"
    return datetime.fromtimestamp(value, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def add_security_headers(response: Response) -> Response:
    """A strict CSP (no script at all), no framing, and no Referer leaking a code."""
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response
