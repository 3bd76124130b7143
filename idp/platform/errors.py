"""Errors as classes with a fixed code, turned into responses in one place.

Protocol endpoints answer JSON per RFC 6749 §5.2; people get a localized page. Nothing
escapes as a stack trace: an unexpected error is logged and answered with a plain 500
page or JSON, and an unreachable store or database with 503.
"""
from __future__ import annotations

import json
import logging

import redis
from authlib.oauth2.rfc6749.errors import InsecureTransportError
from flask import Response, render_template, request
from flask.globals import request_ctx
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

log = logging.getLogger("idp.errors")

#: Paths that speak the protocol (JSON errors); everything else is for people.
PROTOCOL_PATHS = ("/token", "/userinfo", "/jwks", "/.well-known/", "/revoke", "/introspect", "/metrics")


class PageError(Exception):
    """An error shown to a person as a localized page."""

    status = 400
    key = "bad_request"  # page.<key>.heading / page.<key>.body
    error = "invalid_request"

    wait_seconds: int | None = None
    #: What a protocol endpoint says instead (error_description, RFC 6749 §5.2), where a page
    #: error can reach one.
    description: str | None = None

    def __init__(self, restart_url: str | None = None):
        super().__init__(self.key)
        self.restart_url = restart_url


class BadAuthorizationRequest(PageError):
    """The authorization request cannot be answered by a redirect (RFC 6749 §4.1.2.1)."""

    def __init__(self, error: str = "invalid_request", description: str | None = None):
        super().__init__()
        self.error = error
        self.description = description


class UnknownClient(BadAuthorizationRequest):
    key = "unknown_client"

    def __init__(self):
        super().__init__("invalid_client", "Unknown client")


class UnknownHost(PageError):
    """The Host header names a host other than the issuer's (hosts.py): a forged or misrouted
    request, answered 400 as RFC 9110 §7.2 allows."""

    error = "unknown_host"
    description = "Unknown host"


class InteractionGone(PageError):
    """The paused request expired or belongs to another browser."""

    key = "interaction"
    error = "interaction_expired"


class ChallengeExpired(PageError):
    key = "expired"
    error = "otp_expired"


class ChallengeLocked(PageError):
    key = "locked"
    status = 429
    error = "otp_locked"


class TooManyRequests(PageError):
    """A named limit or a cool-off: the person is told how long to wait."""

    status = 429
    error = "rate_limited"

    def __init__(self, wait_seconds: int, cooloff: bool = False, restart_url: str | None = None):
        super().__init__(restart_url)
        self.wait_seconds = wait_seconds
        self.key = "cooloff" if cooloff else "rate_limited"
        self.error = "cooloff" if cooloff else "rate_limited"


class SmsFailed(PageError):
    key = "sms_failed"
    status = 503
    error = "sms_unavailable"


def is_protocol_request() -> bool:
    """Whether this request is to a machine-facing endpoint."""
    return request.path.startswith(PROTOCOL_PATHS)


def json_error(status: int, error: str, description: str) -> Response:
    """An RFC 6749 §5.2 error body."""
    return Response(json.dumps({"error": error, "error_description": description}), status=status,
                    mimetype="application/json", headers={"Cache-Control": "no-store"})


def render_page_error(exc: PageError) -> tuple[str, int]:
    """The localized page of an error."""
    return render_template("error.html", error=exc), exc.status


def init_app(app) -> None:
    """Register the handlers."""
    @app.errorhandler(PageError)
    def page_error(exc: PageError):
        if is_protocol_request():
            return json_error(exc.status, "invalid_request", exc.description or "Invalid request")
        body, status = render_page_error(exc)
        headers = {"Retry-After": str(exc.wait_seconds)} if exc.wait_seconds else {}
        return body, status, headers

    @app.errorhandler(CSRFError)
    def csrf_error(exc):
        page = PageError()
        page.key, page.error, page.status = "csrf", "csrf_failed", 400
        return render_page_error(page)

    @app.errorhandler(InsecureTransportError)
    def insecure_transport(exc):
        """Authlib refuses an OAuth request whose URL is plain http and not loopback (RFC 6749
        §3.1, §3.2): an https issuer reached over http, e.g. through a proxy that does not send
        X-Forwarded-Proto, or with [server] proxy_hops = 0. A 400 for the client, a warning for
        the operator."""
        log.warning("an OAuth request over plain http to an https issuer: is X-Forwarded-Proto sent "
                    "and [server] proxy_hops set?")
        if is_protocol_request():
            return json_error(400, "invalid_request", "HTTPS is required")
        page = PageError()
        page.error = "insecure_transport"
        return render_page_error(page)

    @app.errorhandler(redis.RedisError)
    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def unavailable(exc):
        log.error("backing service unavailable: %s", exc.__class__.__name__)
        if is_protocol_request():
            resp = json_error(503, "temporarily_unavailable", "Service temporarily unavailable")
        else:
            page = PageError()
            page.key, page.error, page.status = "unavailable", "temporarily_unavailable", 503
            body, status = render_page_error(page)
            resp = Response(body, status=status, mimetype="text/html")
        resp.headers["Retry-After"] = "5"
        return resp

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if request_ctx.url_adapter is None:
            # The request could not even be routed (e.g. an unusable Host header): no page
            # can be built, so a plain answer.
            if is_protocol_request():
                return json_error(400, "invalid_request", "Bad request")
            return Response("Bad request\n", status=400, mimetype="text/plain")
        if is_protocol_request():
            code = "invalid_request" if exc.code < 500 else "server_error"
            return json_error(exc.code, code, exc.name)
        page = PageError()
        page.key = "not_found" if exc.code == 404 else "bad_request"
        page.error, page.status = exc.name.lower().replace(" ", "_"), exc.code
        return render_page_error(page)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unexpected error")
        if is_protocol_request():
            return json_error(500, "server_error", "Internal error")
        page = PageError()
        page.key, page.error, page.status = "unavailable", "server_error", 500
        return render_page_error(page)
