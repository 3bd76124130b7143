"""Paused authorization requests ("interactions") and single sign-on sessions, in the store.

An interaction is the authorization request a person is logging in for. It is bound to the
browser that started it by a cookie, so a login link copied to another browser is useless.
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

from .extensions import settings, store

SSO_COOKIE = "idp_sso"
FLOW_COOKIE_PREFIX = "idp_flow_"


def _flow_cookie(rid: str) -> str:
    return FLOW_COOKIE_PREFIX + rid[:12]


def _cookie_args() -> dict[str, Any]:
    return {"httponly": True, "secure": settings.is_https, "samesite": "Lax", "path": "/"}


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


def bind_interaction(response: Response, rid: str) -> None:
    """Tie the interaction to this browser."""
    response.set_cookie(_flow_cookie(rid), rid, max_age=settings.login.pending_ttl, **_cookie_args())


def release_interaction(response: Response, rid: str) -> None:
    """Forget the browser binding once the interaction is answered."""
    response.delete_cookie(_flow_cookie(rid), path="/", secure=settings.is_https, httponly=True, samesite="Lax")


def get_interaction(rid: str | None) -> dict[str, Any] | None:
    """The interaction, when it is alive and belongs to this browser; otherwise None."""
    if not rid or not isinstance(rid, str) or len(rid) > 64:
        return None
    cookie = request.cookies.get(_flow_cookie(rid), "")
    if not hmac.compare_digest(cookie.encode(), rid.encode()):
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
