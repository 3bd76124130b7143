"""The paused authorization request ("interaction"): an authorization request that has been
validated once and waits, in the store, while the person logs in or consents.

It is typed (:class:`Interaction`), written only through :func:`start` and :func:`save`, and
bound to the browser that started it by a cookie, so a login link copied to another browser is
useless. A browser holds at most MAX_FLOWS such cookies (the oldest is replaced), so no page can
fill its Cookie header with them.

The same record carries a visit to the citizen's own account pages (``return_to``), which
needs a login but no client.
"""
from __future__ import annotations

import dataclasses
import hmac
import secrets
import time
from dataclasses import dataclass

from flask import Response, request

from ..platform.settings import settings
from ..platform.store import store

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

#: The client id of a visit to the citizen's own account pages.
ACCOUNT_CLIENT = "idp-account"


@dataclass
class LoginStep:
    """Where the login stands: the one-time-code challenge it opened and the fingerprints its
    limits are counted by (written by the login pages)."""

    challenge: str
    mobile_masked: str
    nid_fp: str
    pair_fp: str
    mobile_fp: str


@dataclass
class Interaction:
    """A validated authorization request (or an account visit) and the progress of its login."""

    id: str
    client_id: str
    created: int
    # the request, as validated by protocol.authorize
    redirect_uri: str = ""
    scope: str = ""
    state: str | None = None
    nonce: str | None = None
    code_challenge: str = ""
    code_challenge_method: str = "S256"
    prompt: tuple[str, ...] = ()
    max_age: int | None = None
    acr_values: tuple[str, ...] = ()
    login_hint: str | None = None
    ui_locales: str | None = None
    hinted_sub: str | None = None  # the `sub` a valid id_token_hint named
    client_name: str = ""  # for the login pages: the agency's names
    client_name_fa: str | None = None
    return_to: str | None = None  # an account page, instead of a client
    # the progress
    login: LoginStep | None = None
    sid: str | None = None  # the SSO session this interaction goes on with (after a login or consent)
    logged_in: bool = False  # the person logged in during this interaction (in session ``sid``)
    consent: str | None = None  # granted | denied, once asked
    # a guardian's choice (protocol.acting), at an agency that accepts guardians
    guardian_chosen: bool = False  # the guardian answered the chooser
    acting_for: int | None = None  # the linked minor's citizen id, when they chose to act for them

    @property
    def is_account_visit(self) -> bool:
        return self.return_to is not None

    def as_record(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: dict) -> Interaction:
        values = dict(record)
        values["prompt"] = tuple(values.get("prompt") or ())
        values["acr_values"] = tuple(values.get("acr_values") or ())
        if values.get("login"):
            values["login"] = LoginStep(**values["login"])
        return cls(**values)


def new(client_id: str, **fields) -> Interaction:
    """A new interaction (not stored yet): a random id, now."""
    return Interaction(id=secrets.token_urlsafe(24), client_id=client_id, created=int(time.time()), **fields)


def start(interaction: Interaction, response: Response) -> None:
    """Store the interaction for [login] pending_ttl seconds and bind it to this browser."""
    store.put_pending(interaction.id, interaction.as_record(), ttl=settings.login.pending_ttl)
    _bind(response, interaction.id)


def load(rid: str | None) -> Interaction | None:
    """The interaction, when it is alive and belongs to this browser; otherwise None."""
    if not rid or not isinstance(rid, str) or len(rid) > 64:
        return None
    if _binding_of(rid, _flow_bindings()) is None:
        return None
    record = store.get_pending(rid)
    return None if record is None else Interaction.from_record(record)


def save(interaction: Interaction) -> bool:
    """Save changes, keeping the remaining lifetime (False if it has expired meanwhile)."""
    return store.update_pending(interaction.id, interaction.as_record())


def end(interaction: Interaction, response: Response) -> None:
    """The interaction is answered: delete it and forget its browser binding."""
    store.delete_pending(interaction.id)
    name = _binding_of(interaction.id, _flow_bindings())
    if name is not None:
        _delete_cookie(response, name)


# ---- the browser binding -------------------------------------------------------------------------

def _cookie_args() -> dict:
    return {"httponly": True, "secure": settings.is_https, "samesite": "Lax", "path": "/"}


def _delete_cookie(response: Response, name: str) -> None:
    response.delete_cookie(name, path="/", secure=settings.is_https, httponly=True, samesite="Lax")


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


def _bind(response: Response, rid: str) -> None:
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
    response.set_cookie(name, f"{_now_ms()}.{rid}", max_age=settings.login.pending_ttl, **_cookie_args())
