"""Blueprint of the citizen's own account pages: the authenticator app.

Setting up (or replacing) an authenticator app needs a fresh SMS login: whoever holds the
session must have just proved the mobile, so a borrowed session cannot add an attacker's app.
"""
from __future__ import annotations

import time

from flask import Blueprint, redirect, render_template, request, url_for

from . import audit, sessions, totp
from .extensions import db
from .i18n import t
from .models import Citizen

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
    from .national_id import normalize_digits

    if totp.confirm_enrolment(session["sid"], citizen, normalize_digits(code)[:16]):
        audit.record("totp_enrolled", national_id=citizen.national_id, client_id=sessions.ACCOUNT_CLIENT)
        return redirect(url_for("account.overview", enrolled=1), code=303)
    secret = totp.pending_secret(session["sid"]) or totp.begin_enrolment(session["sid"])
    return _enrol_page(secret, citizen, error=t("error.totp_enrol"), status=400)
