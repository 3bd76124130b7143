"""The national identity provider: ``create_app`` builds the Flask application.

It only wires: each package's ``init_app`` and blueprints, in the order they stand on each
other (platform, citizens, protocol, login, account, stats). The table modules are imported here so
that the metadata the migrations compare against holds every table.
"""
from __future__ import annotations

import logging

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from .account import views as account_pages
from .citizens import models as _citizen_tables  # noqa: F401 - every table in the metadata
from .login import sms
from .login import views as login_pages
from .platform import database, errors, hosts, i18n, keyring, metrics, web
from .platform.settings import Settings, load_settings
from .platform.store import Store
from .protocol import acting, authorize, consent, discovery, endpoints, logout, oauth
from .stats import gauges as stats_gauges
from .stats import models as _stats_tables  # noqa: F401 - every table in the metadata

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, require_keys: bool = True) -> Flask:
    """Load settings, init the extensions, register the blueprints and the error handlers."""
    settings = settings or load_settings()
    app = Flask(__name__)
    # No redirect from //a//b to /a/b: werkzeug builds that Location from the Host header.
    app.url_map.merge_slashes = False
    app.extensions["idp.settings"] = settings
    hosts.init_app(app)
    database.init_app(app, settings.database.url, settings.database.pool_size)
    web.init_app(app, settings)
    app.extensions["idp.store"] = Store(settings.store.url, settings.store.prefix)
    app.extensions["idp.keyring"] = keyring.KeyRing(
        settings.keys.dir, {settings.keys.id_token_alg, settings.keys.access_token_alg} if require_keys else set())
    app.extensions["idp.sms"] = sms.build_sender(settings)
    oauth.init_app(app)
    i18n.init_app(app)
    errors.init_app(app)
    metrics.init_app(app)
    stats_gauges.register()
    for blueprint in (discovery.bp, authorize.bp, endpoints.bp, login_pages.bp, account_pages.bp, consent.bp,
                      acting.bp, logout.bp):
        app.register_blueprint(blueprint)
    app.wsgi_app = web.SecurityHeaders(discovery.PublishedDocuments(endpoints.ResourceEndpoints(app.wsgi_app, app), app))
    if settings.server.proxy_hops:  # outermost: what runs inside sees the forwarded host and scheme
        hops = settings.server.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    logging.getLogger("idp").setLevel(logging.INFO)
    return app
