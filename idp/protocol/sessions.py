"""Paused authorization requests ("interactions") and single sign-on sessions, in the store.

An interaction is the authorization request a person is logging in for. It is bound to the
browser that started it by a cookie, so a login link copied to another browser is useless. A
browser holds at most MAX_FLOWS such cookies (the oldest is replaced), so no page can fill its
Cookie header with them.
An SSO session is server-side; the browser holds only a random secret in an HttpOnly cookie,
replaced at every login (no session fixation), and the store keeps only a hash of it.
"""
from __future__ import annotations

import hmac
import secrets
import time
from typing import Any

from flask import Response, request
from flask import session as flask_session

from ..platform.settings import settings
from ..platform.store import store

SSO_COOKIE = "idp_sso"
FLOW_COOKIE_PREFIX = "idp_flow_"

#: Logins in progress that one browser can hold at once (tabs of several agencies, a retried
#: popup); one more replaces the oldest. Each has its own cookie, so that two tabs logging in
#: at the same time never rewrite each other's binding, but the cookies have these fixed names
#: (idp_flow_0 ...) rather than one name per flow. Names per flow once let a page that opened
#: /authorize in 170 popups leave 170 cookies: the Cookie header passed 8 KiB and the browser
#: got 431 from every page for 15 minutes. Deleting the oldest names at each answer is not
#: enough: requests in flight together all carry the jar as it was when they were sent, and no
#: answer can delete cookies it never saw, so the count still grows with the requests in flight
#: (9 with Chromium's six HTTP/1.1 connections; HTTP/2 allows a hundred streams). Fixed names
#: cap it at MAX_FLOWS cookies of about 60 bytes whatever the browser does.
MAX_FLOWS = 5
FLOW_COOKIES = tuple(f"{FLOW_COOKIE_PREFIX}{slot}" for slot in range(MAX_FLOWS))


def _cookie_args() -> dict[str, Any]:
    return {"httponly": True, "secure": settings.is_https, "samesite": "Lax", "path": "/"}


def _delete_cookie(response: Response, name: str) -> None:
    response.delete_cookie(name, path="/", secure=settings.is_https, httponly=True, samesite="Lax")


# ---- interactions ------------------------------------------------------------------------------

ACCOUNT_CLIENT = "idp-account"


def start_interaction(args: list[tuple[str, str]], client_id: str, return_to: str | None = None,
                      **state: Any) -> str:
    """Pause an authorization request (or, with ``return_to``, a visit to the citizen's own
    account pages); returns its id. Call bind_interaction on the response."""
    rid = secrets.token_urlsafe(24)
    store.put_pending(rid, {"args": args, "client_id": client_id, "created": int(time.time()),
                            "return_to": return_to, **state}, ttl=settings.login.pending_ttl)
    return rid


def _now_ms() -> int:
    return int(time.time() * 1000)


def _flow_bindings() -> dict[str, tuple[int, str]]:
    """This browser's live flow cookies: name -> (when it was set, the interaction id).

    A cookie is ``<unix time in milliseconds>.<interaction id>`` (milliseconds, so that flows
    started within one second are still told apart by age); a malformed one, or one older than
    an interaction can live, counts as absent (its name is free for the next flow)."""
    now = _now_ms()
    bindings = {}
    for name in FLOW_COOKIES:
        created, _, rid = request.cookies.get(name, "").partition(".")
        if created.isdigit() and len(created) <= 15 and rid and len(rid) <= 64 \
                and now - int(created) < settings.login.pending_ttl * 1000:
            bindings[name] = (int(created), rid)
    return bindings


def _binding_of(rid: str, bindings: dict[str, tuple[int, str]]) -> str | None:
    """The name of the cookie that binds ``rid``, comparing every cookie in constant time."""
    found = None
    for name, (_, bound) in bindings.items():
        if hmac.compare_digest(bound.encode(), rid.encode()):
            found = name
    return found


def bind_interaction(response: Response, rid: str) -> None:
    """Tie the interaction to this browser: in its own cookie if it has one, else in a free
    name, else in place of the oldest flow (which then shows the "no longer valid" page)."""
    bindings = _flow_bindings()
    name = _binding_of(rid, bindings)
    if name is None:
        free = [n for n in FLOW_COOKIES if n not in bindings]
        # A random free name: two tabs that start at the same moment see the same cookies, and
        # would otherwise both take the first free name.
        name = secrets.choice(free) if free else min(bindings, key=lambda n: bindings[n][0])
    # Cookies of an older release, one per flow, go as soon as this browser is seen.
    for stale in request.cookies:
        if stale.startswith(FLOW_COOKIE_PREFIX) and stale not in FLOW_COOKIES:
            _delete_cookie(response, stale)
    response.set_cookie(name, f"{_now_ms()}.{rid}", max_age=settings.login.pending_ttl,
                        **_cookie_args())


def release_interaction(response: Response, rid: str) -> None:
    """Forget the browser binding once the interaction is answered."""
    name = _binding_of(rid, _flow_bindings())
    if name is not None:
        _delete_cookie(response, name)


def get_interaction(rid: str | None) -> dict[str, Any] | None:
    """The interaction, when it is alive and belongs to this browser; otherwise None."""
    if not rid or not isinstance(rid, str) or len(rid) > 64:
        return None
    if _binding_of(rid, _flow_bindings()) is None:
        return None
    return store.get_pending(rid)


def update_interaction(rid: str, interaction: dict[str, Any]) -> bool:
    """Save changes to an interaction (False if it has expired meanwhile)."""
    return store.update_pending(rid, interaction)


def end_interaction(rid: str) -> None:
    """Delete an interaction."""
    store.delete_pending(rid)


# ---- single sign-on sessions ---------------------------------------------------------------------

def create_session(citizen, method: str, response: Response) -> dict[str, Any]:
    """Start a new SSO session (always a new id) and set its cookie; ends the browser's old one.

    The session keeps what an SSO authorization needs of the citizen (the subject key, the birth
    date, whether they are counted as a unique adult), so that it reads no row: citizens are
    never deleted, and a subject key never changes."""
    # A new Flask session too: a planted session cookie (and the CSRF secret inside it) must
    # not survive the login (session fixation).
    flask_session.clear()
    old = request.cookies.get(SSO_COOKIE)
    if old and len(old) <= 64:
        store.delete_session(store.session_id(old))
    # The cookie holds a secret that is never stored: the store knows the session by a hash of
    # it (`sid`), so whoever reads the store (a replica, a backup) cannot present a session.
    # The public id `psid` is what tokens carry as their `sid` claim (OIDC Back-Channel Logout
    # §2.1): agencies never learn either of the other two.
    cookie = secrets.token_urlsafe(32)
    sid = store.session_id(cookie)
    session = {"sid": sid, "psid": secrets.token_urlsafe(16), "citizen_id": citizen.id,
               "auth_time": int(time.time()), "method": method, "clients": [],
               "sk": citizen.subject_key, "bd": citizen.birth_date.isoformat(),
               "adult": citizen.first_adult_authenticated_at is not None}
    store.put_session(sid, session, ttl=settings.login.session_ttl)
    response.set_cookie(SSO_COOKIE, cookie, **_cookie_args())
    return session


def current_session() -> dict[str, Any] | None:
    """The live SSO session of this browser, or None."""
    cookie = request.cookies.get(SSO_COOKIE)
    if not cookie or len(cookie) > 64:
        return None
    return store.get_session(store.session_id(cookie))


def note_client(session: dict[str, Any], client_id: str) -> None:
    """Remember that a client received a code within the session (for logout)."""
    if client_id not in session.get("clients", []):
        store.add_session_client(session["sid"], client_id)
