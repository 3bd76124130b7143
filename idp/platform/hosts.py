"""The Host header: the provider answers only for its issuer's host.

No link or redirect is built from the Host header (pages link by route or by query only, and
every absolute URL comes from ``[server] issuer``), so a forged Host cannot poison a page. A
request for another host is still refused, before any view runs: it was misrouted or forged,
and code that reads the request's URL (Authlib checks it for https, and an unexpected error
once gave a 500 with a "try again" link to that host) must never see it. Behind a proxy,
ProxyFix has already put the proxy's X-Forwarded-Host in its place.

Accepted: the issuer's host name, any port (a node behind a proxy is reached on its own port);
for an http issuer, which is always loopback, also the other loopback names, so that
``http://localhost:5000`` and ``http://127.0.0.1:5000`` both reach ``idp dev``.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import request
from werkzeug.wsgi import get_host

from .errors import UnknownHost
from .settings import Settings, is_loopback

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def accepted_hosts(settings: Settings) -> frozenset[str]:
    """The host names (lowercase, IPv6 without brackets) this provider answers for."""
    issuer_host = (urlsplit(settings.server.issuer).hostname or "").lower()
    if not settings.is_https and is_loopback(issuer_host):
        return LOOPBACK_NAMES | {issuer_host}
    return frozenset({issuer_host})


def host_name(host: str) -> str | None:
    """The name in a ``host[:port]`` value as werkzeug gives it (empty when malformed)."""
    try:
        return urlsplit("//" + host).hostname
    except ValueError:
        return None


def request_host_name() -> str | None:
    """The name in this request's Host header."""
    return host_name(request.host)


def environ_host_name(environ) -> str | None:
    """The same, for a WSGI environ not (yet) wrapped in a request (werkzeug's own reading)."""
    return host_name(get_host(environ))


def init_app(app) -> None:
    """Refuse other hosts first of all (before CSRF and the views): 400, JSON on protocol paths."""
    accepted = accepted_hosts(app.extensions["idp.settings"])

    known: dict[str, bool] = {}  # Host values seen, accepted or not (bounded: anyone can make up more)

    def check_host():
        host = request.host
        ok = known.get(host)
        if ok is None:
            ok = host_name(host) in accepted
            if len(known) < 256:
                known[host] = ok
        if not ok:
            raise UnknownHost()

    app.before_request_funcs.setdefault(None, []).insert(0, check_host)
