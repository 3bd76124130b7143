"""What every page and endpoint shares on the web side: CSRF protection, the signed-cookie
Flask session, security headers (SecurityHeaders, wrapped around the app by create_app), the
home page and the health check."""
from __future__ import annotations

import collections
import io
import os
import threading

from flask import Flask, render_template
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


class SecurityHeaders:
    """WSGI middleware: SECURITY_HEADERS on every response, HSTS over https, ``no-store`` on
    HTML; a header the response already has is left as it is. Added to the plain list of
    headers at ``start_response`` (a fraction of what werkzeug's Headers cost per request), on
    every answer of the app, the documents served before Flask (discovery.py) included."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        https = came_over_https(environ.get("wsgi.url_scheme"), environ.get("HTTP_X_FORWARDED_PROTO"))

        def start(status, headers, exc_info=None):
            have = {name.lower() for name, _ in headers}
            headers.extend(h for h in SECURITY_HEADERS if h[0].lower() not in have)
            if https and "strict-transport-security" not in have:
                headers.append(HSTS)
            if "cache-control" not in have:
                content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
                if content_type.split(";", 1)[0].strip().lower() == "text/html":
                    headers.append(("Cache-Control", "no-store"))
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start)


class Turns:
    """``count`` turns taken first come, first served: a turn given back goes straight to the
    longest waiter (a semaphore lets a newcomer take it first, and the tail latency grows)."""

    def __init__(self, count: int):
        self._free = count
        self._lock = threading.Lock()
        self._waiting: collections.deque = collections.deque()
        self._mine = threading.local()

    def __enter__(self):
        with self._lock:
            if self._free and not self._waiting:
                self._free -= 1
                return self
            waiter = getattr(self._mine, "waiter", None)
            if waiter is None:
                waiter = self._mine.waiter = threading.Lock()
            waiter.acquire()
            self._waiting.append(waiter)
        waiter.acquire()  # until a turn is handed over (release below)
        waiter.release()
        return self

    def __exit__(self, *exc):
        with self._lock:
            if self._waiting:
                self._waiting.popleft().release()  # the turn passes on, never back to the pool
            else:
                self._free += 1


class BodyFirst:
    """WSGI middleware for a threaded server: a request's body is read in full (up to the app's
    64 KB limit) before the request takes one of ``concurrency`` turns to run the app.

    A client that sends its body slowly then holds a thread, but no turn, so fresh requests
    still run as long as threads are left; and only a few requests at a time compete for the
    interpreter lock, which a busy worker's throughput depends on (bench/README.md).

    ``draining``: the pids of the workers being replaced (shared memory the serving master
    writes, cli/serve.py). While this worker's pid is among them, every answer says
    ``Connection: close``, so that no kept-alive connection is left idle on it when it stops: a
    request sent on an idle connection just as the worker closes it would get no answer."""

    def __init__(self, wsgi_app, concurrency: int, max_body: int = 64 * 1024, draining=None):
        self.wsgi_app, self.max_body = wsgi_app, max_body
        self.turns = Turns(concurrency)
        self.draining, self.pid = draining, os.getpid()

    def __call__(self, environ, start_response):
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if 0 < length <= self.max_body:
            # a body cut short stays short: CONTENT_LENGTH is left as sent, so the app sees the
            # client's disconnection as before (a 400)
            environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read(length))
        if self.draining is not None and self.pid in self.draining[:]:
            start_response = _closing(start_response)
        with self.turns:
            return self.wsgi_app(environ, start_response)


def _closing(start_response):
    """start_response that asks the client to close the connection after this answer (RFC 9112 §9.6)."""

    def start(status, headers, exc_info=None):
        return start_response(status, [*headers, ("Connection", "close")], exc_info)

    return start


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
