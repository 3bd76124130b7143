"""The citizen's own record (/account/record): what the provider already keeps about the
citizen's use of their identity, read for that citizen alone.

* **sign-ins**: the citizen's rows of ``auth_events`` (when, for which agency, SMS or app, a
  fresh login or single sign-on), as long as they are kept (idp.stats rolls them up and then
  deletes them);
* **exchanges**: the token exchanges between agencies made with the citizen's tokens (RFC 8693),
  the audit events ``token_exchanged`` under the citizen's national-ID fingerprint;
* **sessions**: the citizen's live SSO sessions in the store, this browser's marked;
* **guardian actions**: what a guardian did for each linked minor (:func:`guardian_actions`).

Place: the provider stores no location and no address of the citizen (``audit_events.ip_fp`` is a
keyed fingerprint, which cannot be turned into a place), so the page says so instead of showing
one. Every query here is keyed by the signed-in citizen's own id or fingerprint.
"""
from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass

from markupsafe import Markup

from ..citizens.models import AuthEvent, CitizenRow, GuardianLink
from ..citizens.national_id import mask_national_id
from ..platform.audit import AuditEvent, fingerprint
from ..platform.database import db
from ..platform.i18n import current_lang, digits, jdate, t
from ..platform.settings import settings
from ..platform.store import store
from ..protocol.clients import client_cache, display_name
from ..protocol.consent import describe, ordered
from ..protocol.interaction import ACCOUNT_CLIENT

#: How many sign-ins and exchanges the page lists, newest first.
SHOWN = 20


def when(at: dt.datetime) -> Markup:
    """An instant as the citizen reads it, in the configured time zone ([stats] timezone): the
    Jalali date with Persian digits in Persian, the Gregorian date in English, and the time."""
    local = at.astimezone(zoneinfo.ZoneInfo(settings.stats.timezone))
    text = t("record.at", date=jdate(local.date()), time=digits(local.strftime("%H:%M")))
    return Markup('<time datetime="{}">{}</time>').format(local.isoformat(timespec="minutes"), text)


def agency_name(client_id: str) -> str:
    """An agency's name in the page's language; the provider's own account pages by their name;
    a client no longer registered by its id."""
    if client_id == ACCOUNT_CLIENT:
        return t("record.account_pages")
    client = client_cache.get(client_id)
    return display_name(client, current_lang()) if client is not None else client_id


def method_name(method: str) -> str:
    return t("record.method.totp") if method == "totp" else t("record.method.sms")


@dataclass(frozen=True)
class SignIn:
    at: dt.datetime
    agency: str
    method: str
    sso: bool


def sign_ins(citizen_id: int, count: int = SHOWN) -> list[SignIn]:
    """The citizen's latest authentications, newest first."""
    rows = db.session.execute(
        db.select(AuthEvent.occurred_at, AuthEvent.client_id, AuthEvent.method, AuthEvent.sso)
        .where(AuthEvent.citizen_id == citizen_id)
        .order_by(AuthEvent.occurred_at.desc(), AuthEvent.id.desc()).limit(count)).all()
    return [SignIn(at, agency_name(client_id), method_name(method), bool(sso)) for at, client_id, method, sso in rows]


@dataclass(frozen=True)
class Exchange:
    at: dt.datetime
    caller: str
    callee: str
    received: tuple[str, ...]


def exchanges(national_id: str, count: int = SHOWN) -> list[Exchange]:
    """The token exchanges made with the citizen's tokens (which agency called which, when, and
    what the called one received), newest first."""
    rows = db.session.execute(
        db.select(AuditEvent.occurred_at, AuditEvent.client_id, AuditEvent.details)
        .where(AuditEvent.event == "token_exchanged", AuditEvent.subject_fp == fingerprint("nid", national_id))
        .order_by(AuditEvent.id.desc()).limit(count)).all()
    found = []
    for at, caller, details in rows:
        details = details if isinstance(details, dict) else {}
        scopes = ordered(str(details.get("scope") or "").split())
        callee = str(details.get("to") or "-")
        target = client_cache.get(callee)
        public_sub = target is not None and (target.client_metadata or {}).get("subject_type") == "public"
        found.append(Exchange(at, agency_name(caller or "-"), agency_name(callee),
                              tuple(describe(s, scopes, public_sub) for s in scopes)))
    return found


@dataclass(frozen=True)
class LiveSession:
    started: dt.datetime
    method: str
    agencies: tuple[str, ...]
    this_device: bool


def live_sessions(citizen_id: int, current_sid: str) -> list[LiveSession]:
    """The citizen's live SSO sessions, this browser's first, then the newest first."""
    found = []
    for record in store.citizen_sessions(citizen_id):
        started = dt.datetime.fromtimestamp(int(record.get("auth_time") or 0), dt.timezone.utc)
        agencies = tuple(agency_name(c) for c in dict.fromkeys(record.get("clients") or []))
        found.append(LiveSession(started, method_name(str(record.get("method"))), agencies,
                                 record.get("sid") == current_sid))
    return sorted(found, key=lambda s: (not s.this_device, -s.started.timestamp()))


@dataclass(frozen=True)
class ForChild:
    at: dt.datetime
    agency: str
    child: str  # the child's given name and masked national ID, or "" for a child no longer linked


def guardian_actions(guardian_id: int, national_id: str, count: int = SHOWN) -> list[ForChild]:
    """What this citizen, as a guardian, did for their children: each time they acted for one at
    an agency (the ``guardian_acted`` events of the code step, under the guardian's fingerprint),
    newest first. A child is named from the guardian's own links; one unlinked since shows as ""."""
    rows = db.session.execute(
        db.select(AuditEvent.occurred_at, AuditEvent.client_id, AuditEvent.details)
        .where(AuditEvent.event == "guardian_acted", AuditEvent.subject_fp == fingerprint("nid", national_id))
        .order_by(AuditEvent.id.desc()).limit(count * 2)).all()  # a code step and a token step per use
    if not rows:
        return []
    children = db.session.execute(
        db.select(CitizenRow.national_id, CitizenRow.given_name)
        .join(GuardianLink, GuardianLink.minor_id == CitizenRow.id)
        .where(GuardianLink.guardian_id == guardian_id)).all()
    named = {fingerprint("nid", nid): f"{given or ''} ({mask_national_id(nid)})".strip() for nid, given in children}
    found = []
    for at, client_id, details in rows:
        details = details if isinstance(details, dict) else {}
        if details.get("step") != "code":
            continue
        found.append(ForChild(at, agency_name(client_id or "-"), named.get(str(details.get("minor_fp")), "")))
    return found[:count]
