"""Blueprint of the citizen's own account pages: who is signed in, the authenticator app,
connected services, the citizen's own record (record.py: sign-ins, exchanges between agencies,
live sessions), and signing out (here, or everywhere: every session of the citizen ends and
each one's agencies are told by back-channel logout, as at any logout, protocol.logout).

Setting up (or replacing) an authenticator app needs a fresh SMS login: whoever holds the
session must have just proved the mobile, so a borrowed session cannot add an attacker's app.
Without the session a page needs, the person goes through the login and comes back
(protocol.authorize.account_visit).
"""
from __future__ import annotations

import time

from flask import Blueprint, make_response, redirect, render_template, request, url_for

from ..citizens import directory
from ..citizens.national_id import normalize_digits
from ..login import totp
from ..platform import audit
from ..platform.i18n import t
from ..protocol import authorize, consent, logout, sessions
from ..protocol.interaction import ACCOUNT_CLIENT
from ..protocol.sessions import Session
from . import record

bp = Blueprint("account", __name__, url_prefix="/account")

FRESH_SECONDS = 600


def _fresh_sms_session() -> Session | None:
    """This browser's session, if it was started by an SMS login in the last FRESH_SECONDS."""
    session = sessions.current()
    if session is None or session.method != "sms" or time.time() - session.auth_time > FRESH_SECONDS:
        return None
    return session


@bp.get("")
def overview():
    """What the citizen has set up."""
    session = sessions.current()
    if session is None:
        return authorize.account_visit(url_for("account.overview"))
    return render_template("account.html", enrolled=totp.is_enrolled(session.citizen.id),
                           enrolled_now=request.args.get("enrolled"), who=sessions.signed_in_as(session))


@bp.post("/logout")
def sign_out():
    """End this browser's session (CSRF-checked); its agencies are told by back-channel logout."""
    session = sessions.current()
    if session is not None:
        logout.end_session(session, reason="account")
    return _signed_out(everywhere=False)


@bp.post("/logout/everywhere")
def sign_out_everywhere():
    """End every session of this browser's citizen, on every device (CSRF-checked), each with
    its back-channel logouts; another citizen's sessions are untouched."""
    session = sessions.current()
    if session is not None:
        logout.logout_everywhere(session.citizen.id, reason="account_everywhere")
    return _signed_out(everywhere=True)


def _signed_out(everywhere: bool):
    """The signed-out page, with the browser's session cookie cleared. Without a session (signed
    out meanwhile, in another tab or elsewhere) the same page: there is nothing left to end."""
    response = make_response(render_template("logout_done.html", everywhere=everywhere))
    sessions.forget_cookie(response)
    return response


@bp.get("/authenticator")
def authenticator():
    """Show a new secret as a QR code and as text, to be confirmed with a first code."""
    session = _fresh_sms_session()
    if session is None:
        return authorize.account_visit(url_for("account.authenticator"))
    secret = totp.pending_secret(session.sid) or totp.begin_enrolment(session.sid)
    return _enrol_page(secret, session)


def _enrol_page(secret: str, session: Session, error: str | None = None, status: int = 200):
    person = directory.profile(session.citizen.id)
    uri = totp.provisioning_uri(secret, totp.account_label(person.national_id if person else ""))
    return render_template("authenticator.html", qr=totp.qr_data_uri(uri), secret=totp.grouped(secret),
                           replacing=totp.is_enrolled(session.citizen.id), error=error,
                           who=sessions.signed_in_as(session)), status


@bp.post("/authenticator")
def authenticator_confirm():
    """Enrol the app once its first code is right."""
    session = _fresh_sms_session()
    if session is None:
        return authorize.account_visit(url_for("account.authenticator"))
    code = normalize_digits(request.form.get("otp", "").strip())[:16]
    if not code:
        secret = totp.pending_secret(session.sid) or totp.begin_enrolment(session.sid)
        return _enrol_page(secret, session, error=t("error.otp_empty"), status=400)
    if totp.confirm_enrolment(session.sid, session.citizen.id, code):
        person = directory.profile(session.citizen.id)
        audit.record("totp_enrolled", national_id=person.national_id if person else None, client_id=ACCOUNT_CLIENT)
        return redirect(url_for("account.overview", enrolled=1), code=303)
    secret = totp.pending_secret(session.sid) or totp.begin_enrolment(session.sid)
    return _enrol_page(secret, session, error=t("error.totp_enrol"), status=400)


# ---- connected services (protocol.consent) ---------------------------------------------------------

@bp.get("/services")
def services():
    """The services the citizen allowed to receive information, each with a way to withdraw."""
    session = sessions.current()
    if session is None:
        return authorize.account_visit(url_for("account.services"))
    return render_template("services.html", grants=consent.granted(session.citizen.id), describe=consent.describe,
                           withdrawn=request.args.get("withdrawn"), who=sessions.signed_in_as(session))


@bp.post("/services/withdraw")
def services_withdraw():
    """Withdraw one grant; the service asks again at its next sign-in. Back to the page it was
    withdrawn on (``back=record``: the record page; anything else: the services page)."""
    back = "account.record_page" if request.form.get("back") == "record" else "account.services"
    session = sessions.current()
    if session is None:
        return authorize.account_visit(url_for(back))
    client_id = request.form.get("client_id", "")[:64]
    if consent.withdraw(session.citizen.id, client_id):
        person = directory.profile(session.citizen.id)
        audit.record("consent_withdrawn", national_id=person.national_id if person else None, client_id=client_id,
                     via="account")
    return redirect(url_for(back, withdrawn=1), code=303)


# ---- the citizen's own record (record.py) ----------------------------------------------------------

@bp.get("/record")
def record_page():
    """The signed-in citizen's record: latest sign-ins, connected services, exchanges between
    agencies made for them, live sessions (this device marked), and (for a guardian, once there
    are guardians) what was done for each child. Only this citizen's own data."""
    session = sessions.current()
    if session is None:
        return authorize.account_visit(url_for("account.record_page"))
    citizen_id = session.citizen.id
    person = directory.profile(citizen_id)
    return render_template("record.html", sign_ins=record.sign_ins(citizen_id),
                           exchanges=record.exchanges(person.national_id) if person else [],
                           live=record.live_sessions(citizen_id, session.sid),
                           guardian=record.guardian_actions(citizen_id, person.national_id) if person else [],
                           grants=consent.granted(citizen_id), describe=consent.describe, when=record.when,
                           withdrawn=request.args.get("withdrawn"), who=sessions.signed_in_as(session))
