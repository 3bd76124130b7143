"""Blueprint of the citizen's login: identify (national ID + mobile), then the one-time code.

The contract (DESIGN §5): a form with ``national_id`` and ``mobile`` and hidden CSRF input,
then a form with ``otp``, then back to ``/authorize/resume`` and on to the agency.

Limits are checked before anything is looked up or verified (limits.py), and every path
a stranger can take does the same work and shows the same page whether or not the national
ID is registered and the mobile is its owner's.
"""
from __future__ import annotations

from flask import Blueprint, make_response, redirect, render_template, request, url_for

from ..citizens import counting
from ..citizens.models import Citizen
from ..citizens.national_id import (
    InvalidMobile,
    InvalidNationalId,
    mask_mobile,
    normalize_digits,
    parse_mobile,
    parse_national_id,
)
from ..platform import audit, metrics
from ..platform.database import db
from ..platform.errors import ChallengeExpired, ChallengeLocked, InteractionGone, SmsFailed, TooManyRequests
from ..platform.i18n import current_lang, t, use_ui_locales
from ..protocol import sessions
from . import codes, limits, totp

bp = Blueprint("login", __name__, url_prefix="/login")


def _interaction(rid: str | None) -> dict:
    """The paused request of this browser, or the 'start again from the agency' page."""
    interaction = sessions.get_interaction(rid)
    if interaction is None:
        raise InteractionGone()
    use_ui_locales(dict(interaction["args"]).get("ui_locales"))
    return interaction


def _client_name(interaction: dict) -> str:
    if interaction.get("return_to"):
        return t("account.title")
    from ..protocol.oauth import client_cache

    client = client_cache.get(interaction["client_id"])
    if client is None:
        raise InteractionGone()
    return client.name_fa if current_lang() == "fa" and client.name_fa else client.name


def _limited(exc: limits.RateLimited, rid: str) -> TooManyRequests:
    return TooManyRequests(exc.retry_after, cooloff=exc.cooloff, restart_url=url_for("login.identify", r=rid))


def _identify_page(rid: str, interaction: dict, errors: dict, values: dict, status: int = 200):
    return render_template("identify.html", rid=rid, client_name=_client_name(interaction), errors=errors,
                           values=values), status


@bp.get("")
def identify():
    """The first form: national ID and mobile."""
    rid = request.args.get("r")
    interaction = _interaction(rid)
    return _identify_page(rid, interaction, {}, _hinted_values(interaction))


def _hinted_values(interaction: dict) -> dict:
    """Prefill the national ID from a login_hint (OIDC Core §3.1.2.1) when it is one."""
    hint = dict(interaction["args"]).get("login_hint") or ""
    try:
        return {"national_id": parse_national_id(hint)}
    except InvalidNationalId:
        return {}


@bp.post("")
def identify_submit():
    """Check the two fields; open a challenge (a code is sent only to the registered owner)."""
    rid = request.args.get("r")
    interaction = _interaction(rid)
    try:
        limits.check_ip("starts_per_ip")
    except limits.RateLimited as exc:
        raise _limited(exc, rid) from None
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
        values = {"national_id": normalize_digits(raw_nid)[:10], "mobile": normalize_digits(raw_mobile)[:16],
                  "method": "totp" if request.form.get("method") == "totp" else "sms"}
        return _identify_page(rid, interaction, errors, values, 400)

    keys = limits.Keys.of(national_id, mobile, audit.client_ip())
    subject_fp = audit.fingerprint("nid", national_id)
    kind = "totp" if request.form.get("method") == "totp" else "sms"
    try:
        limits.check_send(keys, sms=kind == "sms")
    except limits.RateLimited as exc:
        raise _limited(exc, rid) from None
    citizen = counting.find_by_national_id(national_id)
    matched = citizen is not None and citizen.mobile == mobile
    challenge_id = codes.start(citizen.id if matched else None, mobile, kind=kind,
                             totp_ready=matched and totp.is_enrolled(citizen), count_in=limits.sent_window(keys))
    audit.record("login_started", subject_fp=subject_fp, client_id=interaction["client_id"],
                 code_to=mask_mobile(mobile), matched=matched)
    interaction.update({"challenge": challenge_id, "mobile_masked": mask_mobile(mobile), "nid_fp": subject_fp,
                        "pair_fp": keys.pair, "mobile_fp": keys.mobile})
    if not sessions.update_interaction(rid, interaction):
        raise InteractionGone()
    return redirect(url_for("login.code", r=rid), code=303)


def _code_page(rid: str, interaction: dict, error: str | None = None, notice: str | None = None,
               status: int = 200, resend_error: str | None = None):
    """The code form, or the page that says why it cannot be used."""
    restart = url_for("login.identify", r=rid)
    state = codes.status(interaction["challenge"])
    if state is None:
        raise ChallengeExpired(restart_url=restart)
    if state["failed"]:
        raise SmsFailed(restart_url=url_for("login.code", r=rid))
    return render_template("otp.html", rid=rid, mobile=interaction["mobile_masked"], seconds=state["seconds"],
                           resend_in=state["resend_in"], resend_url=url_for("login.resend", r=rid),
                           kind=state["kind"], error=error, notice=notice, resend_error=resend_error), status


@bp.get("/code")
def code():
    """The second form: the one-time code."""
    rid = request.args.get("r")
    interaction = _interaction(rid)
    if not interaction.get("challenge"):
        return redirect(url_for("login.identify", r=rid), code=303)
    return _code_page(rid, interaction, notice=t("otp.resent") if request.args.get("sent") else None)


@bp.post("/resend")
def resend():
    """Send a new code for the same challenge, after the wait (or at once after a failed send)."""
    rid = request.args.get("r")
    interaction = _interaction(rid)
    if not interaction.get("challenge"):
        return redirect(url_for("login.identify", r=rid), code=303)
    keys = limits.Keys(ip="", pair=interaction["pair_fp"], mobile=interaction["mobile_fp"])
    try:
        limits.check_ip("starts_per_ip")
        # the wait first: a press refused as too soon must not spend the owner's send budget
        challenge = codes.resendable(interaction["challenge"])
        limits.check_send(keys)
        codes.resend(interaction["challenge"], challenge, count_in=limits.sent_window(keys))
    except limits.RateLimited as exc:
        raise _limited(exc, rid) from None
    except codes.ResendTooSoon as exc:
        return _code_page(rid, interaction, resend_error=t("otp.resend_wait", seconds=exc.wait), status=429)
    except codes.OtpExpired:
        raise ChallengeExpired(restart_url=url_for("login.identify", r=rid)) from None
    audit.record("code_resent", subject_fp=interaction.get("nid_fp"), client_id=interaction["client_id"],
                 code_to=interaction["mobile_masked"])
    return redirect(url_for("login.code", r=rid, sent=1), code=303)


@bp.post("/code")
def code_submit():
    """Verify the code; on success rotate the SSO session and resume the authorization request."""
    rid = request.args.get("r")
    interaction = _interaction(rid)
    challenge_id = interaction.get("challenge")
    restart = url_for("login.identify", r=rid)
    if not challenge_id:
        return redirect(restart, code=303)
    pair_fp, subject_fp = interaction["pair_fp"], interaction.get("nid_fp")
    try:
        limits.check_ip("code_checks_per_ip")
        limits.check_cooloff(pair_fp)
    except limits.RateLimited as exc:
        raise _limited(exc, rid) from None
    entered = normalize_digits(request.form.get("otp", ""))[:16]
    if not (len(entered) == 6 and entered.isascii() and entered.isdigit()):
        return _code_page(rid, interaction, error=t("error.otp_format"), status=400)
    try:
        citizen_id, method = codes.verify(challenge_id, entered)
    except (codes.OtpInvalid, codes.TooManyAttempts) as exc:
        locked = isinstance(exc, codes.TooManyAttempts)
        audit.record("otp_locked" if locked else "otp_wrong", subject_fp=subject_fp,
                     client_id=interaction["client_id"])
        wait = limits.record_wrong_code(pair_fp, subject_fp)
        if wait:
            raise TooManyRequests(wait, cooloff=True, restart_url=restart) from None
        if locked:
            raise ChallengeLocked(restart_url=restart) from None
        return _code_page(rid, interaction, error=t("error.otp_invalid", remaining=exc.remaining), status=400)
    except codes.OtpExpired:
        raise ChallengeExpired(restart_url=restart) from None

    limits.record_right_code(pair_fp)
    citizen = db.session.get(Citizen, citizen_id)
    response = make_response(redirect(url_for("oidc.resume", r=rid), code=303))
    session = sessions.create_session(citizen, method, response)
    interaction.update({"sid": session["sid"], "challenge": None, "fresh": True})
    if not sessions.update_interaction(rid, interaction):
        raise InteractionGone()
    # the audit event is committed in the auth event's transaction (one commit, not two)
    audit.record("login_succeeded", subject_fp=subject_fp, client_id=interaction["client_id"], method=method,
                 commit=False)
    counting.record_authentication(citizen, interaction["client_id"], method)
    metrics.login(method, "success")
    return response
