"""The national identity provider: ``create_app`` builds the Flask application."""
from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask, render_template, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import Settings, load_settings

__all__ = ["create_app"]


def _database_uri(url: str) -> str:
    """psycopg 3 drives PostgreSQL; a relative SQLite path is relative to the working directory."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
        return "sqlite:///" + str(Path(url[len("sqlite:///"):]).expanduser().resolve())
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def _engine_options(url: str, pool_size: int) -> dict:
    if url.startswith("sqlite"):
        # Wait for a writer instead of failing at once; several processes may share the file.
        return {"connect_args": {"timeout": 30}}
    # No pool_pre_ping (a "SELECT 1" round trip at every checkout, several per request):
    # _ping_idle_connections below checks only connections that sat idle in the pool.
    # LIFO: the connection returned last is reused first, so busy connections stay busy (and are
    # not pinged) while the rest sit idle.
    return {"pool_size": pool_size, "max_overflow": pool_size, "pool_recycle": 1800, "pool_use_lifo": True}


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, with its signing serializer built once per app instead of
    on every request (the secret key does not change while the app runs)."""

    def get_signing_serializer(self, app):
        serializer = app.extensions.get("idp.session_serializer")
        if serializer is None:
            serializer = app.extensions["idp.session_serializer"] = super().get_signing_serializer(app)
        return serializer


def create_app(settings: Settings | None = None, require_keys: bool = True) -> Flask:
    """Load settings, init extensions, register blueprints, error handlers and security headers."""
    from . import account, consent, errors, hosts, i18n, keys, login, oauth, oidc, sms
    from .extensions import csrf, db, migrate
    from .store import Store

    settings = settings or load_settings()
    app = Flask(__name__)
    # No redirect from //a//b to /a/b: werkzeug builds that Location from the Host header.
    app.url_map.merge_slashes = False
    app.session_interface = _SessionInterface()
    app.extensions["idp.settings"] = settings
    app.config.update(
        SECRET_KEY=settings.derived_key("flask-session"),
        SQLALCHEMY_DATABASE_URI=_database_uri(settings.database.url),
        SQLALCHEMY_ENGINE_OPTIONS=_engine_options(settings.database.url, settings.database.pool_size),
        SESSION_COOKIE_NAME="idp_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=settings.is_https,
        SESSION_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=settings.login.pending_ttl,
        WTF_CSRF_SSL_STRICT=settings.is_https,
        MAX_CONTENT_LENGTH=64 * 1024,
        JSON_AS_ASCII=False,
    )
    if settings.server.proxy_hops:
        hops = settings.server.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    hosts.init_app(app)

    db.init_app(app)
    if settings.database.url.startswith("sqlite"):
        _sqlite_pragmas(app)
    else:
        _ping_idle_connections(app)
    migrate.init_app(app, db)
    csrf.init_app(app)
    app.extensions["idp.store"] = Store(settings.store.url, settings.store.prefix)
    app.extensions["idp.keyring"] = keys.KeyRing(
        settings.keys.dir, {settings.keys.id_token_alg, settings.keys.access_token_alg} if require_keys else set())
    app.extensions["idp.sms"] = sms.build_sender(settings)
    oauth.init_app(app)
    i18n.init_app(app)
    errors.init_app(app)
    from . import metrics
    metrics.init_app(app)
    app.register_blueprint(oidc.bp)
    app.register_blueprint(login.bp)
    app.register_blueprint(account.bp)
    app.register_blueprint(consent.bp)
    from . import logout
    app.register_blueprint(logout.bp)

    @app.get("/")
    def home():
        """A short page for people who arrive here directly."""
        return render_template("home.html")

    @app.get("/healthz")
    def healthz():
        """Liveness and readiness: the store and the database answer."""
        from .extensions import store

        store.ping()
        db.session.execute(db.text("SELECT 1"))
        return {"status": "ok"}

    app.after_request(_security_headers)
    logging.getLogger("idp").setLevel(logging.INFO)
    return app


#: A pooled connection idle for longer than this is pinged before use. One used moments ago is
#: not: a PostgreSQL restart takes far longer than this, so every connection it killed has sat
#: idle longer and is replaced before a request sees it, while a busy pool pings almost never.
PING_AFTER_IDLE_SECONDS = 0.05


def _ping_idle_connections(app: Flask) -> None:
    """pool_pre_ping, but only for connections idle longer than PING_AFTER_IDLE_SECONDS: a dead
    one is replaced at checkout (DisconnectionError makes the pool reconnect and retry)."""
    import time

    from sqlalchemy import event, exc

    from .extensions import db

    with app.app_context():
        engine = db.engine

        @event.listens_for(engine, "checkin")
        def _checkin(_dbapi_connection, record):
            record.info["idp_idle_since"] = time.monotonic()

        @event.listens_for(engine, "checkout")
        def _checkout(dbapi_connection, record, _proxy):
            since = record.info.pop("idp_idle_since", None)
            if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
                return  # a new connection, or one in use a moment ago
            try:
                engine.dialect.do_ping(dbapi_connection)
            except Exception as e:  # noqa: BLE001 - any failure: replace the connection
                raise exc.DisconnectionError() from e


def _sqlite_pragmas(app: Flask) -> None:
    """WAL lets readers and one writer work at once; foreign keys are enforced."""
    from sqlalchemy import event

    from .extensions import db

    with app.app_context():
        @event.listens_for(db.engine, "connect")
        def _on_connect(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()


def _security_headers(response):
    """A strict CSP with no inline script, no framing, no sniffing, no referrer leaks."""
    h = response.headers
    h.setdefault("Content-Security-Policy",
                 "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; "
                 "connect-src 'self'; font-src 'self'; base-uri 'none'; frame-ancestors 'none'")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "no-referrer")
    if request.scheme == "https" or request.headers.get("X-Forwarded-Proto") == "https":
        h.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    if response.mimetype == "text/html":
        h.setdefault("Cache-Control", "no-store")
    return response
