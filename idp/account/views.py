"""Blueprint of the citizen's own account pages: the authenticator app and connected services.

Setting up (or replacing) an authenticator app needs a fresh SMS login: whoever holds the
session must have just proved the mobile, so a borrowed session cannot add an attacker's app.
"""
from __future__ import annotations

import time

from flask import Blueprint, redirect, render_template, request, url_for

from ..citizens.models import Citizen
from ..login import totp
from ..platform import audit
from ..platform.database import db
from ..platform.i18n import t
from ..protocol import consent, sessions

bp = Blueprint("account", __name__, url_prefix="/account")

FRESH_SECONDS = 600


def _login_again(return_to: str):
    """Send the person through the SMS login, then back to ``return_to``."""
    rid = sessions.start_interaction([], sessions.ACCOUNT_CLIENT, return_to=return_to)
    response = redirect(url_for("login.identify", r=rid), code=303)
    sessions.bind_interaction(response, rid)
    return response


def _fresh_sms_session() -> tuple[dict, Citizen] | None:
    session = sessions.current_session()
    if not session or session["method"] != "sms" or time.time() - session["auth_time"] > FRESH_SECONDS:
        return None
    citizen = db.session.get(Citizen, session["citizen_id"])
    return (session, citizen) if citizen else None


@bp.get("")
def overview():
    """What the citizen has set up."""
    session = sessions.current_session()
    if not session:
        return _login_again(url_for("account.overview"))
    citizen = db.session.get(Citizen, session["citizen_id"])
    if citizen is None:
        return _login_again(url_for("account.overview"))
    return render_template("account.html", citizen=citizen, enrolled=totp.is_enrolled(citizen),
                           enrolled_now=request.args.get("enrolled"))


@bp.get("/authenticator")
def authenticator():
    """Show a new secret as a QR code and as text, to be confirmed with a first code."""
    fresh = _fresh_sms_session()
    if fresh is None:
        return _login_again(url_for("account.authenticator"))
    session, citizen = fresh
    secret = totp.pending_secret(session["sid"]) or totp.begin_enrolment(session["sid"])
    return _enrol_page(secret, citizen)


def _enrol_page(secret: str, citizen: Citizen, error: str | None = None, status: int = 200):
    uri = totp.provisioning_uri(secret, totp.account_label(citizen.national_id))
    return render_template("authenticator.html", qr=totp.qr_data_uri(uri), secret=totp.grouped(secret),
                           replacing=totp.is_enrolled(citizen), error=error), status


@bp.post("/authenticator")
def authenticator_confirm():
    """Enrol the app once its first code is right."""
    fresh = _fresh_sms_session()
    if fresh is None:
        return _login_again(url_for("account.authenticator"))
    session, citizen = fresh
    code = request.form.get("otp", "").strip()
    from ..citizens.national_id import normalize_digits

    if totp.confirm_enrolment(session["sid"], citizen, normalize_digits(code)[:16]):
        audit.record("totp_enrolled", national_id=citizen.national_id, client_id=sessions.ACCOUNT_CLIENT)
        return redirect(url_for("account.overview", enrolled=1), code=303)
    secret = totp.pending_secret(session["sid"]) or totp.begin_enrolment(session["sid"])
    return _enrol_page(secret, citizen, error=t("error.totp_enrol"), status=400)


# ---- connected services (consent.py) -----------------------------------------------------------

def _signed_in() -> Citizen | None:
    """The citizen of this browser's SSO session (any factor will do for viewing grants)."""
    session = sessions.current_session()
    return db.session.get(Citizen, session["citizen_id"]) if session else None


@bp.get("/services")
def services():
    """The services the citizen allowed to receive information, each with a way to withdraw."""
    citizen = _signed_in()
    if citizen is None:
        return _login_again(url_for("account.services"))
    return render_template("services.html", grants=consent.granted(citizen.id), describe=consent.describe,
                           withdrawn=request.args.get("withdrawn"))


@bp.post("/services/withdraw")
def services_withdraw():
    """Withdraw one grant; the service asks again at its next sign-in."""
    citizen = _signed_in()
    if citizen is None:
        return _login_again(url_for("account.services"))
    client_id = request.form.get("client_id", "")[:64]
    if consent.withdraw(citizen.id, client_id):
        audit.record("consent_withdrawn", national_id=citizen.national_id, client_id=client_id, via="account")
    return redirect(url_for("account.services", withdrawn=1), code=303)
