"""Blueprint of the citizen's login: identify (national ID + mobile), then the one-time code.

The contract (DESIGN §5): a form with ``national_id`` and ``mobile`` and hidden CSRF input,
then a form with ``otp``, then back to ``/authorize/resume`` and on to the agency.
"""
from __future__ import annotations

from flask import Blueprint, make_response, redirect, render_template, request, url_for

from . import audit, citizens, otp, sessions
from .errors import ChallengeExpired, ChallengeLocked, InteractionGone, SmsFailed
from .extensions import db
from .i18n import current_lang, t, use_ui_locales
from .models import Client
from .national_id import InvalidMobile, InvalidNationalId, mask_mobile, normalize_digits, parse_mobile, \
    parse_national_id
from .sms import SmsError

bp = Blueprint("login", __name__, url_prefix="/login")


def _interaction(rid: str | None) -> dict:
    """The paused request of this browser, or the 'start again from the agency' page."""
    interaction = sessions.get_interaction(rid)
    if interaction is None:
        raise InteractionGone()
    use_ui_locales(dict(interaction["args"]).get("ui_locales"))
    return interaction


def _client_name(interaction: dict) -> str:
    client = db.session.execute(db.select(Client).filter_by(client_id=interaction["client_id"])).scalar_one()
    return (client.name_fa if current_lang() == "fa" and client.name_fa else client.name)


@bp.get("")
def identify():
    """The first form: national ID and mobile."""
    rid = request.args.get("r")
    interaction = _interaction(rid)
    return render_template("identify.html", rid=rid, client_name=_client_name(interaction), errors={}, values={})


@bp.post("")
def identify_submit():
    """Check the two fields; open a challenge (a code is sent only to the registered owner)."""
    rid = request.args.get("r")
    interaction = _interaction(rid)
    raw_nid, raw_mobile = request.form.get("national_id", ""), request.form.get("mobile", "")
    errors = {}
    try:
        national_id = parse_national_id(raw_nid)
    except InvalidNationalId:
        errors["national_id"] = t("error.national_id")
    try:
        mobile = parse_mobile(raw_mobile)
    except InvalidMobile:
        errors["mobile"] = t("error.mobile")
    if errors:
        values = {"national_id": normalize_digits(raw_nid)[:10], "mobile": normalize_digits(raw_mobile)[:16]}
        return render_template("identify.html", rid=rid, client_name=_client_name(interaction),
                               errors=errors, values=values), 400

    citizen = citizens.find_by_national_id(national_id)
    matched = citizen is not None and citizen.mobile == mobile
    try:
        challenge_id = otp.start(citizen.id if matched else None, mobile)
    except SmsError:
        audit.record("sms_failed", national_id=national_id, client_id=interaction["client_id"])
        raise SmsFailed(restart_url=url_for("login.identify", r=rid))
    audit.record("login_started", national_id=national_id, client_id=interaction["client_id"],
                 matched=matched, **({"code_sent_to": mask_mobile(mobile)} if matched else {}))
    interaction.update({"challenge": challenge_id, "mobile_masked": mask_mobile(mobile),
                        "nid_fp": audit.fingerprint("nid", national_id)})
    if not sessions.update_interaction(rid, interaction):
        raise InteractionGone()
    return redirect(url_for("login.code", r=rid), code=303)


@bp.get("/code")
def code():
    """The second form: the one-time code."""
    rid = request.args.get("r")
    interaction = _interaction(rid)
    if not interaction.get("challenge"):
        return redirect(url_for("login.identify", r=rid), code=303)
    seconds = otp.remaining_seconds(interaction["challenge"])
    if seconds <= 0:
        raise ChallengeExpired(restart_url=url_for("login.identify", r=rid))
    return render_template("otp.html", rid=rid, mobile=interaction["mobile_masked"], seconds=seconds, error=None)


@bp.post("/code")
def code_submit():
    """Verify the code; on success rotate the SSO session and resume the authorization request."""
    rid = request.args.get("r")
    interaction = _interaction(rid)
    challenge_id = interaction.get("challenge")
    restart = url_for("login.identify", r=rid)
    if not challenge_id:
        return redirect(restart, code=303)
    entered = normalize_digits(request.form.get("otp", ""))[:16]
    if not (len(entered) == 6 and entered.isascii() and entered.isdigit()):
        seconds = otp.remaining_seconds(challenge_id)
        if seconds <= 0:
            raise ChallengeExpired(restart_url=restart)
        return render_template("otp.html", rid=rid, mobile=interaction["mobile_masked"], seconds=seconds,
                               error=t("error.otp_format")), 400
    try:
        citizen_id = otp.verify(challenge_id, entered)
    except otp.OtpInvalid as exc:
        audit.record("otp_wrong", subject_fp=interaction.get("nid_fp"), client_id=interaction["client_id"])
        return render_template("otp.html", rid=rid, mobile=interaction["mobile_masked"],
                               seconds=otp.remaining_seconds(challenge_id),
                               error=t("error.otp_invalid", remaining=exc.remaining)), 400
    except otp.TooManyAttempts:
        audit.record("otp_locked", subject_fp=interaction.get("nid_fp"), client_id=interaction["client_id"])
        raise ChallengeLocked(restart_url=restart)
    except otp.OtpExpired:
        raise ChallengeExpired(restart_url=restart)

    citizen = db.session.get(citizens.Citizen, citizen_id)
    response = make_response(redirect(url_for("oidc.resume", r=rid), code=303))
    session = sessions.create_session(citizen.id, "sms", response)
    interaction.update({"sid": session["sid"], "challenge": None})
    if not sessions.update_interaction(rid, interaction):
        raise InteractionGone()
    citizens.record_authentication(citizen, interaction["client_id"], "sms")
    audit.record("login_succeeded", national_id=citizen.national_id, client_id=interaction["client_id"],
                 method="sms")
    return response
