"""Single sign-on sessions, in the store.

A session is server-side; the browser holds only a random secret in an HttpOnly cookie,
replaced at every login (no session fixation), and the store keeps the session under a hash of
it (``sid``), so whoever reads the store (a replica, a backup) cannot present a session. The
public id ``psid`` is what tokens carry as their `sid` claim (OIDC Back-Channel Logout §2.1):
agencies never learn either of the other two.

The session keeps what an SSO authorization needs of the citizen (the ``Citizen``: id, subject
key, birth date, counted as an adult), so that using it reads no row.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from flask import Response, request
from flask import session as flask_session

from ..citizens import directory
from ..citizens.directory import Citizen
from ..citizens.national_id import mask_national_id
from ..platform.errors import InteractionGone
from ..platform.i18n import use_ui_locales
from ..platform.settings import settings
from ..platform.store import store
from . import clients, interaction
from .interaction import Interaction
from .models import Client

SSO_COOKIE = "idp_sso"


@dataclass
class Session:
    """A live SSO session: who, since when, how, and the clients given a code within it."""

    sid: str
    psid: str
    citizen: Citizen
    auth_time: int
    method: str
    clients: list[str] = field(default_factory=list)
    #: made by this request (``create``): no one else knows its cookie yet
    fresh: bool = field(default=False, compare=False)

    def as_record(self) -> dict[str, Any]:
        return {"sid": self.sid, "psid": self.psid, "citizen_id": self.citizen.id, "auth_time": self.auth_time,
                "method": self.method, "clients": self.clients, "sk": self.citizen.subject_key,
                "bd": self.citizen.birth_date.isoformat(), "adult": self.citizen.adult_counted}

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> Session | None:
        if not record or "sk" not in record:
            return None
        citizen = Citizen(id=record["citizen_id"], subject_key=record["sk"],
                          birth_date=dt.date.fromisoformat(record["bd"]), adult_counted=bool(record.get("adult")))
        return cls(record["sid"], record["psid"], citizen, record["auth_time"], record["method"],
                   list(record.get("clients") or []))


@dataclass(frozen=True)
class SignedInAs:
    """Who a session belongs to, as its own pages show it: the name as the registry has it and
    the national ID masked (its last three digits), enough for a person to tell it is them."""

    name: str | None
    national_id: str


def signed_in_as(session: Session) -> SignedInAs | None:
    """Whom this session signed in (one row read), or None when the citizen is gone."""
    person = directory.profile(session.citizen.id)
    if person is None:
        return None
    name = " ".join(p for p in (person.given_name, person.family_name) if p) or None
    return SignedInAs(name, mask_national_id(person.national_id))


def _cookie_args() -> dict[str, Any]:
    return {"httponly": True, "secure": settings.is_https, "samesite": "Lax", "path": "/"}


def create(citizen: Citizen, method: str) -> tuple[Session, str]:
    """Start a new SSO session (always a new id) and end the browser's old one; returns the
    session and the cookie to set on the answer (``set_cookie``)."""
    # A new Flask session too: a planted session cookie (and the CSRF secret inside it) must
    # not survive the login (session fixation).
    flask_session.clear()
    old = request.cookies.get(SSO_COOKIE)
    if old and len(old) <= 64:
        store.delete_session(store.session_id(old))
    cookie = secrets.token_urlsafe(32)
    session = Session(store.session_id(cookie), secrets.token_urlsafe(16), citizen, int(time.time()), method,
                      fresh=True)
    store.put_session(session.sid, session.as_record(), ttl=settings.login.session_ttl)
    return session, cookie


def set_cookie(response: Response, cookie: str) -> None:
    """Give the browser its new session's cookie."""
    response.set_cookie(SSO_COOKIE, cookie, **_cookie_args())


def current() -> Session | None:
    """The live SSO session of this browser, or None."""
    cookie = request.cookies.get(SSO_COOKIE)
    if not cookie or len(cookie) > 64:
        return None
    return Session.from_record(store.get_session(store.session_id(cookie)))


def by_public_id(psid: Any) -> Session | None:
    """The live session whose public id (the `sid` claim agencies see) this is, or None."""
    return Session.from_record(store.session_by_public_id(psid))


def by_id(sid: str) -> Session | None:
    """A live session by its store id, or None."""
    return Session.from_record(store.get_session(sid))


def note_client(session: Session, client_id: str, adult_counted: bool = False) -> None:
    """Remember that a client received a code within the session (for logout), and that its
    citizen is now counted as an adult (so that its single sign-ons need not ask again).

    A session made by this request is rewritten from what is here (no one else can be using it
    yet: one write, deferrable); an older one is read and rewritten (another request of the same
    browser may have added a client meanwhile)."""
    counted = adult_counted and not session.citizen.adult_counted
    if counted:
        session.citizen = dataclasses.replace(session.citizen, adult_counted=True)
    if client_id in session.clients and not counted:
        return
    if client_id not in session.clients:
        session.clients.append(client_id)
    if session.fresh:
        store.rewrite_session(session.sid, session.as_record())
    else:
        store.add_session_client(session.sid, client_id)


def forget_cookie(response: Response) -> None:
    """Clear the browser's session cookie (the session itself is ended by logout.py)."""
    response.delete_cookie(SSO_COOKIE, path="/", secure=settings.is_https, httponly=True, samesite="Lax")


def paused_here(rid: str | None) -> tuple[Interaction, Session, Client]:
    """The paused request ``rid`` of this browser's signed-in citizen, in its language, with its
    client (the pages that pause a request after the login: consent, the guardian's chooser), or
    the 'start again' page."""
    paused = interaction.load(rid)
    session = current()
    if paused is None or session is None or paused.is_account_visit or paused.sid != session.sid:
        raise InteractionGone()
    use_ui_locales(paused.ui_locales)
    client = clients.find(paused.client_id)
    if client is None:
        raise InteractionGone()
    return paused, session, client
