"""Consent: what a citizen allowed an agency service to receive, and the page that asks.

Trusted government agencies (``Client.trusted``) never ask. Any other client asks the first
time, and again whenever it requests a scope the citizen has not yet allowed it; the page then
lists everything requested and marks what is new. A grant is one row per citizen and client
(``consents``), holding the union of every scope allowed so far, so a narrower request later
needs no new answer. The citizen sees and withdraws grants on /account/services, and operators
with ``idp consents list|revoke``.

``openid`` is treated like any other claim: even alone it hands the service a stable
identifier for the person (the pairwise ``sub``, which every token carries), so a non-trusted
client asks for it too. Every consent therefore covers ``openid``.

The page answers a paused authorization request (interaction.py): the decision is written into
it (``consent = "granted" | "denied"``) and the browser goes back to ``/authorize/resume``,
which issues the code or answers access_denied. Whether to ask at all is decided by
:func:`needs_consent` alone (protocol.authorize asks it).

The page says who is signed in (masked), with "Not you?": that ends the session and takes the
same paused request back to the login's first page, so whoever is at the device signs in as
themselves and the agency gets its answer for them.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable

from flask import Blueprint, abort, redirect, render_template, request, url_for
from sqlalchemy.exc import IntegrityError

from ..citizens import directory
from ..citizens.national_id import mask_national_id
from ..platform import audit
from ..platform.database import db, utcnow
from ..platform.errors import InteractionGone
from ..platform.i18n import N_, current_lang, t
from . import clients, interaction, logout, sessions
from .models import Client, Consent, RefreshToken
from .subjects import AGE_OVER

bp = Blueprint("consent", __name__, url_prefix="/consent")

#: The scopes a citizen is asked about, in the order the page lists them.
#: Any other scope a client is allowed is shown by its name.
KNOWN_SCOPES = ("openid", "profile", "phone", "national_id", "age")


# ---- the service -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Grant:
    """One client's standing permission, as shown to the citizen and to operators."""

    client_id: str
    name: str
    name_fa: str | None
    scopes: tuple[str, ...]
    granted_at: dt.datetime
    updated_at: dt.datetime
    #: the client's `sub` is the same for every public-subject client (subjects.subject_for)
    public_sub: bool = False

    @property
    def display_name(self) -> str:
        """The agency's name in the page's language (Persian when it has one)."""
        return self.name_fa if current_lang() == "fa" and self.name_fa else self.name

    def as_dict(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "name": self.name, "name_fa": self.name_fa,
                "scope": " ".join(self.scopes), "granted_at": self.granted_at.isoformat(timespec="seconds"),
                "updated_at": self.updated_at.isoformat(timespec="seconds")}


def ordered(scopes: Iterable[str]) -> tuple[str, ...]:
    """Scopes without repeats, known ones first in page order, then the rest alphabetically."""
    unique = set(scopes)
    return tuple(s for s in KNOWN_SCOPES if s in unique) + tuple(sorted(unique - set(KNOWN_SCOPES)))


def requested_scopes(client: Client, scope: str | None) -> tuple[str, ...]:
    """What a request would release to this client: the scopes it asked for and may have, plus
    ``openid`` always (every token names the citizen by a `sub`)."""
    return ordered(["openid", *client.get_allowed_scope(scope or "").split()])


def _row(citizen_id: int, client_id: str) -> Consent | None:
    return db.session.execute(db.select(Consent).filter_by(citizen_id=citizen_id, client_id=client_id)
                              ).scalar_one_or_none()


def granted_scopes(citizen_id: int, client_id: str) -> tuple[str, ...]:
    """The scopes the citizen has allowed this client so far (empty when none)."""
    row = _row(citizen_id, client_id)
    return tuple(row.scope.split()) if row else ()


def needs_consent(citizen_id: int, client: Client, scope: str | None, prompt: str | None = None) -> bool:
    """Whether the citizen must be asked before ``client`` gets ``scope``.

    Never for a trusted client. Otherwise yes unless an earlier grant covers every requested
    scope (``openid`` included, see the module docstring), or when the request carries
    ``prompt=consent`` (OIDC Core §3.1.2.1: the provider should ask again).
    """
    if client.trusted:
        return False
    if prompt and "consent" in prompt.split():
        return True
    return not set(requested_scopes(client, scope)) <= set(granted_scopes(citizen_id, client.client_id))


def grant(citizen_id: int, client_id: str, scope: str) -> Consent:
    """Remember that the citizen allowed ``client_id`` the scopes in ``scope``, added to what
    was allowed before (an upsert; two approvals racing end with the union of both)."""
    wanted = scope.split()
    for attempt in (1, 2):
        row = _row(citizen_id, client_id)
        if row is None:
            row = Consent(citizen_id=citizen_id, client_id=client_id, scope=" ".join(ordered(wanted)),
                          granted_at=utcnow(), updated_at=utcnow())
            db.session.add(row)
        else:
            merged = " ".join(ordered([*row.scope.split(), *wanted]))
            if merged != row.scope:
                row.scope = merged
                row.updated_at = utcnow()
        try:
            db.session.commit()
            return row
        except IntegrityError:
            # Another request inserted the row first (uq_consents_citizen_client): merge into it.
            db.session.rollback()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def granted(citizen_id: int) -> list[Grant]:
    """Every standing grant of the citizen, the most recently changed first."""
    rows = db.session.execute(
        db.select(Consent, Client).outerjoin(Client, Client.client_id == Consent.client_id)
        .where(Consent.citizen_id == citizen_id).order_by(Consent.updated_at.desc(), Consent.id.desc())).all()
    return [Grant(client_id=c.client_id, name=client.name if client else c.client_id,
                  name_fa=client.name_fa if client else None, scopes=ordered(c.scope.split()),
                  granted_at=c.granted_at, updated_at=c.updated_at, public_sub=_public_sub(client))
            for c, client in rows]


def _public_sub(client: Client | None) -> bool:
    return client is not None and (client.client_metadata or {}).get("subject_type") == "public"


def withdraw(citizen_id: int, client_id: str) -> bool:
    """Forget the citizen's grant to ``client_id`` (the next request asks again) and revoke the
    client's live refresh tokens for the citizen, so it cannot go on fetching fresh tokens.
    Returns False when there was no grant."""
    row = _row(citizen_id, client_id)
    if row is None:
        return False
    db.session.delete(row)
    db.session.execute(db.update(RefreshToken)
                       .where(RefreshToken.citizen_id == citizen_id, RefreshToken.client_id == client_id,
                              RefreshToken.revoked_at.is_(None))
                       .values(revoked_at=utcnow()))
    db.session.commit()
    return True


def describe(scope: str, scopes: Iterable[str] = (), public_sub: bool = False) -> str:
    """What a scope releases, in words, in the page's language: exactly the claims
    subjects.claims_for gives for it (ID tokens carry only `sub` and `sid`), read together with
    the other scopes of the same grant (``scopes``).

    ``openid``: the `sub`, pairwise unless the client is a public-subject one (``public_sub``).
    ``profile``: given_name, family_name, name (the two together), birthdate (and locale, fa-IR).
    ``phone``: phone_number (verified). ``national_id``: national_id. ``age``: age_over_18 only;
    it keeps the date of birth back unless ``profile``, asked for too, gives it anyway.
    """
    if scope == "openid":
        return t("consent.claim.openid_public") if public_sub else t("consent.claim.openid")
    if scope == "age":
        if "profile" in scopes:
            return t("consent.claim.age_with_profile", age=AGE_OVER)
        return t("consent.claim.age", age=AGE_OVER)
    if scope in _CLAIM_KEYS:
        return t(_CLAIM_KEYS[scope])
    return scope


#: The words for each scope on the consent page, marked so that pybabel extract finds the keys.
_CLAIM_KEYS = {"profile": N_("consent.claim.profile"), "phone": N_("consent.claim.phone"),
               "national_id": N_("consent.claim.national_id")}


# ---- the page ----------------------------------------------------------------------------------

@bp.get("")
def page():
    """List what the service asks for (new items marked) with Allow / Don't allow."""
    paused, session, client = sessions.paused_here(request.args.get("r"))
    wanted = requested_scopes(client, paused.scope)
    before = set(granted_scopes(paused.acting_for or session.citizen.id, client.client_id))
    public_sub = _public_sub(client)
    items = [{"scope": s, "text": describe(s, wanted, public_sub), "new": bool(before) and s not in before}
             for s in wanted]
    return render_template("consent.html", rid=paused.id, client_name=clients.display_name(client, current_lang()),
                           items=items, asked_before=bool(before), who=sessions.signed_in_as(session),
                           for_child=_child(paused.acting_for))


def _child(citizen_id: int | None) -> str | None:
    """The child a guardian is answering for (the given name and the national ID masked), or None."""
    person = directory.profile(citizen_id) if citizen_id is not None else None
    if person is None:
        return None
    return f"{person.given_name or ''} ({mask_national_id(person.national_id)})".strip()


@bp.post("/not-me")
def not_me():
    """"Not you?": end this browser's session (its agencies are told, as at any logout) and take
    the same paused request back to the login's first page, where nobody is signed in yet."""
    paused, session, client = sessions.paused_here(request.args.get("r"))
    paused.sid, paused.logged_in, paused.consent, paused.login = None, False, None, None
    paused.guardian_chosen, paused.acting_for = False, None
    if not interaction.save(paused):
        raise InteractionGone()
    logout.end_session(session, reason="not_me", client_id=client.client_id)
    response = redirect(url_for("login.identify", r=paused.id), code=303)
    sessions.forget_cookie(response)
    return response


@bp.post("")
def decide():
    """Record the answer in the interaction and go back to /authorize/resume."""
    paused, session, client = sessions.paused_here(request.args.get("r"))
    decision = request.form.get("decision")
    if decision not in ("approve", "deny"):
        abort(400)
    person = directory.profile(session.citizen.id)
    national_id = person.national_id if person else None
    if decision == "approve":
        scope = " ".join(requested_scopes(client, paused.scope))
        # a guardian acting for a minor allows it for the minor, whose data it is
        grant(paused.acting_for or session.citizen.id, client.client_id, scope)
        paused.consent = "granted"
        audit.record("consent_granted", national_id=national_id, client_id=client.client_id, scope=scope)
    else:
        paused.consent = "denied"
        audit.record("consent_denied", national_id=national_id, client_id=client.client_id)
    if not interaction.save(paused):
        raise InteractionGone()
    return redirect(url_for("authorize.resume", r=paused.id), code=303)
