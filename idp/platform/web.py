"""What every page and endpoint shares on the web side: CSRF protection, the signed-cookie
Flask session, security headers, the home page and the health check."""
from __future__ import annotations

from flask import Flask, render_template, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect

from .database import db
from .store import store

csrf = CSRFProtect()


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, with its signing serializer built once per app instead of
    on every request (the secret key does not change while the app runs)."""

    def get_signing_serializer(self, app):
        serializer = app.extensions.get("idp.session_serializer")
        if serializer is None:
            serializer = app.extensions["idp.session_serializer"] = super().get_signing_serializer(app)
        return serializer


#: On every response: a strict CSP with no inline script, no framing, no sniffing, no referrer leaks.
SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; "
                                "connect-src 'self'; font-src 'self'; base-uri 'none'; frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)
#: On every response to a request that came over https.
HSTS = ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")


def came_over_https(scheme: str, forwarded_proto: str | None) -> bool:
    """Whether the request came over https (here, or at the proxy in front that says so)."""
    return scheme == "https" or forwarded_proto == "https"


def _security_headers(response):
    """SECURITY_HEADERS and, over https, HSTS; HTML is never cached."""
    h = response.headers
    for name, value in SECURITY_HEADERS:
        h.setdefault(name, value)
    if came_over_https(request.scheme, request.headers.get("X-Forwarded-Proto")):
        h.setdefault(*HSTS)
    if response.mimetype == "text/html":
        h.setdefault("Cache-Control", "no-store")
    return response


def home():
    """A short page for people who arrive here directly."""
    return render_template("home.html")


def healthz():
    """Liveness and readiness: the store and the database answer."""
    store.ping()
    db.session.execute(db.text("SELECT 1"))
    return {"status": "ok"}


def init_app(app: Flask, settings) -> None:
    """Cookies, CSRF, the session serializer, the security headers, / and /healthz."""
    app.session_interface = _SessionInterface()
    app.config.update(
        SECRET_KEY=settings.derived_key("flask-session"),
        SESSION_COOKIE_NAME="idp_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=settings.is_https,
        SESSION_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=settings.login.pending_ttl,
        WTF_CSRF_SSL_STRICT=settings.is_https,
        MAX_CONTENT_LENGTH=64 * 1024,
        JSON_AS_ASCII=False,
    )
    csrf.init_app(app)
    app.add_url_rule("/", "home", home, methods=["GET"])
    app.add_url_rule("/healthz", "healthz", healthz, methods=["GET"])
    app.after_request(_security_headers)
