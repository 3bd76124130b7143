"""Errors as classes with a fixed code, turned into responses in one place.

Protocol endpoints answer JSON per RFC 6749 §5.2; people get a localized page. Nothing
escapes as a stack trace: an unexpected error is logged and answered with a plain 500
page or JSON, and an unreachable store or database with 503.
"""
from __future__ import annotations

import json
import logging
import time

import redis
from authlib.oauth2.rfc6749.errors import InsecureTransportError
from flask import Response, render_template, request, session, url_for
from flask.globals import request_ctx
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

log = logging.getLogger("idp.errors")

#: Paths that speak the protocol (JSON errors); everything else is for people.
PROTOCOL_PATHS = ("/token", "/userinfo", "/jwks", "/.well-known/", "/revoke", "/introspect", "/metrics")


class PageError(Exception):
    """An error shown to a person as a localized page, with the next step that works: a resend,
    a restart, the agency's home (an address it registered, never one a request names), or the
    provider's home page."""

    status = 400
    key = "bad_request"  # page.<key>.heading / page.<key>.body
    error = "invalid_request"

    wait_seconds: int | None = None
    #: What a protocol endpoint says instead (error_description, RFC 6749 §5.2), where a page
    #: error can reach one.
    description: str | None = None
    #: A form that sends a new code for the same login (POST, with the page's CSRF token); the
    #: seconds before it may be used, and whether the login waits for an app's code.
    resend_url: str | None = None
    resend_in: int = 0
    resend_app: bool = False
    #: The agency the person came from (name, Persian name) and its home: both from its record.
    agency: tuple[str, str | None] | None = None
    home_url: str | None = None
    #: Shown again after the wait is over (a page re-rendered from its saved state).
    waited: bool = False

    def __init__(self, restart_url: str | None = None):
        super().__init__(self.key)
        self.restart_url = restart_url

    def for_agency(self, name: str, name_fa: str | None, home_url: str | None) -> "PageError":
        """Name the agency and link back to its home (an address from its registration)."""
        self.agency = (name, name_fa)
        self.home_url = home_url
        return self


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


class ClientDisabled(BadAuthorizationRequest):
    """A registered client that an operator has disabled: unavailable for now, not unknown. The
    page names no agency and says nothing of why or since when."""

    key = "client_disabled"

    def __init__(self):
        super().__init__("invalid_client", "Client disabled")
        self.error = "client_disabled"


class BadRedirectUri(BadAuthorizationRequest):
    """The redirect_uri is missing, repeated or not one the client registered: a page that links
    to the agency's registered home, never to the address the request named (RFC 9700 §4.11)."""

    key = "bad_redirect"

    def __init__(self, description: str, name: str, name_fa: str | None, home_url: str | None):
        super().__init__("invalid_request", description)
        self.for_agency(name, name_fa, home_url)


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
    """The code is no longer valid; ``resend_url`` when a new one can be sent for the same login."""

    key = "expired"
    error = "otp_expired"

    def __init__(self, restart_url: str | None = None, resend_url: str | None = None, resend_in: int = 0,
                 app: bool = False):
        super().__init__(restart_url)
        self.resend_url, self.resend_in, self.resend_app = resend_url, resend_in, app


class ChallengeLocked(PageError):
    key = "locked"
    status = 429
    error = "otp_locked"


class TooManyRequests(PageError):
    """A named limit or a cool-off: the person is told how long to wait; ``restart_url`` is
    offered only once the wait is over."""

    status = 429
    error = "rate_limited"

    def __init__(self, wait_seconds: int, cooloff: bool = False, restart_url: str | None = None):
        super().__init__(restart_url)
        self.wait_seconds = wait_seconds
        self.key = "cooloff" if cooloff else "rate_limited"
        self.error = "cooloff" if cooloff else "rate_limited"


class SmsFailed(PageError):
    """The text message was not sent: the page offers to send it again (no wait after a failure)."""

    key = "sms_failed"
    status = 503
    error = "sms_unavailable"

    def __init__(self, restart_url: str | None = None, resend_url: str | None = None):
        super().__init__(restart_url)
        self.resend_url = resend_url


# ---- the same page again, in the other language ------------------------------------------------
# An error page answers a form (a POST) more often than not, and its language link is a GET of the
# same address: that would show the form again, or count against the very limit the page is about.
# So the page's state is kept in the signed session cookie (what the page shows, never a secret,
# nothing in the URL), and the language link adds ``shown=1``: a GET with it is answered with the
# same page, re-rendered in the new language, with the wait that is left.

SHOWN_PARAM = "shown"
_SHOWN_KEY = "shown_error"
#: How long a page's state is kept for its language link.
SHOWN_TTL = 3600


def _remember(exc: PageError) -> None:
    """Keep what this page shows (the wait and the resend's wait as moments, not durations)."""
    now, wait = int(time.time()), int(exc.wait_seconds or 0)
    session[_SHOWN_KEY] = {
        "k": exc.key, "e": exc.error, "s": exc.status, "at": now,
        "u": now + wait if wait else (1 if exc.waited else 0),  # 1: a wait that is over
        "r": exc.restart_url, "rs": exc.resend_url, "ri": now + exc.resend_in if exc.resend_in else 0,
        "ra": exc.resend_app, "a": list(exc.agency) if exc.agency else None, "h": exc.home_url,
    }


def _shown_again() -> PageError | None:
    """The page this browser was last shown (within SHOWN_TTL), re-built from its saved state."""
    state = session.get(_SHOWN_KEY)
    if not isinstance(state, dict) or not isinstance(state.get("k"), str):
        return None
    now = int(time.time())
    if now - int(state.get("at", 0)) > SHOWN_TTL:
        return None
    page = PageError(restart_url=state.get("r"))
    page.key, page.error, page.status = state["k"], state.get("e", "invalid_request"), int(state.get("s", 400))
    if state.get("u"):
        page.wait_seconds = max(0, int(state["u"]) - now)
        page.waited = page.wait_seconds == 0
    page.resend_url, page.resend_app = state.get("rs"), bool(state.get("ra"))
    page.resend_in = max(0, int(state.get("ri") or 0) - now)
    agency = state.get("a")
    page.agency = (agency[0], agency[1]) if isinstance(agency, list) and len(agency) == 2 else None
    page.home_url = state.get("h")
    return page


def is_protocol_request() -> bool:
    """Whether this request is to a machine-facing endpoint."""
    return request.path.startswith(PROTOCOL_PATHS)


def json_error(status: int, error: str, description: str) -> Response:
    """An RFC 6749 §5.2 error body."""
    return Response(json.dumps({"error": error, "error_description": description}), status=status,
                    mimetype="application/json", headers={"Cache-Control": "no-store"})


def _flow_id() -> str | None:
    """The request's ``r`` (the login it belongs to) when it has the shape of one."""
    rid = request.args.get("r")
    if rid and len(rid) <= 64 and rid.isascii() and rid.replace("-", "").replace("_", "").isalnum():
        return rid
    return None


def render_page_error(exc: PageError, remember: bool = True) -> tuple[str, int]:
    """The localized page of an error. ``remember``: its language link asks for this same page
    again (shown=1) and carries nothing of the request but its login (``r``): never the
    addresses a refused request named."""
    lang_args = None
    if remember:
        _remember(exc)
        rid = _flow_id()
        lang_args = {**({"r": rid} if rid else {}), SHOWN_PARAM: "1"}
    return render_template("error.html", error=exc, lang_args=lang_args), exc.status


#: The page that shows each form again (a GET), for a form refused as expired (CSRF).
FORM_PAGES = {"login.identify_submit": "login.identify", "login.code_submit": "login.code",
              "login.resend": "login.code", "consent.decide": "consent.page",
              "account.authenticator_confirm": "account.authenticator", "account.services_withdraw": "account.services"}


def _form_again() -> str | None:
    """Where the refused form can be opened again: its own page, on the same login (``r``)."""
    endpoint = FORM_PAGES.get(request.endpoint or "")
    if endpoint is None:
        return None
    rid = _flow_id()
    if rid is None and "r" in request.args:
        return None
    return url_for(endpoint, **({"r": rid} if rid else {}))


def init_app(app) -> None:
    """Register the handlers."""
    @app.errorhandler(PageError)
    def page_error(exc: PageError):
        if is_protocol_request():
            return json_error(exc.status, "invalid_request", exc.description or "Invalid request")
        body, status = render_page_error(exc)
        headers = {"Retry-After": str(exc.wait_seconds)} if exc.wait_seconds else {}
        return body, status, headers

    @app.before_request
    def show_again():
        """``?shown=1`` (an error page's language link): that page again, from its saved state."""
        if request.method == "GET" and b"shown=" in request.query_string and not is_protocol_request() \
                and request.args.get(SHOWN_PARAM) == "1":
            page = _shown_again()
            if page is not None:
                raise page

    @app.errorhandler(CSRFError)
    def csrf_error(exc):
        page = PageError(restart_url=_form_again())
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

    @app.errorhandler(DBAPIError)
    def database_error(exc: DBAPIError):
        """A connection lost or dropped (database.py marks a read-only server so): the 503 of a
        database that is away. Any other database error is a bug: the 500 it always was."""
        if exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError)):
            return unavailable(exc)
        return unexpected(exc)

    @app.errorhandler(redis.RedisError)
    def unavailable(exc):
        log.error("backing service unavailable: %s", exc.__class__.__name__)
        if is_protocol_request():
            resp = json_error(503, "temporarily_unavailable", "Service temporarily unavailable")
        else:
            page = PageError()
            page.key, page.error, page.status = "unavailable", "temporarily_unavailable", 503
            body, status = render_page_error(page, remember=False)  # asked again: tried again
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
        return render_page_error(page, remember=False)  # asked again, the same address says the same

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unexpected error")
        if is_protocol_request():
            return json_error(500, "server_error", "Internal error")
        page = PageError()
        page.key, page.error, page.status = "unavailable", "server_error", 500
        return render_page_error(page, remember=False)
