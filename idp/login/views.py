"""Blueprint of the citizen's login: identify (national ID + mobile), then the one-time code.

The contract (DESIGN §5): a form with ``national_id`` and ``mobile`` and hidden CSRF input,
then a form with ``otp``, then the paused authorization request goes on
(protocol.authorize.after_login): on to the consent page where one is needed, else straight
back to the agency with a code.

Limits are checked before anything is looked up or verified (platform.limits), and every path
a stranger can take does the same work and shows the same page whether or not the national
ID is registered and the mobile is its owner's.
"""
from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for

from ..citizens import directory
from ..citizens.national_id import (
    InvalidMobile,
    InvalidNationalId,
    mask_mobile,
    normalize_digits,
    parse_mobile,
    parse_national_id,
)
from ..platform import audit, limits, metrics
from ..platform.errors import ChallengeExpired, ChallengeLocked, InteractionGone, SmsFailed, TooManyRequests
from ..platform.i18n import current_lang, t, use_ui_locales
from ..platform.store import store
from ..protocol import authorize, clients, interaction
from ..protocol.interaction import Interaction, LoginStep
from . import codes

bp = Blueprint("login", __name__, url_prefix="/login")


def _paused(rid: str | None) -> Interaction:
    """The paused request of this browser, or the 'start again from the agency' page."""
    paused = interaction.load(rid)
    if paused is None:
        raise InteractionGone()
    use_ui_locales(paused.ui_locales)
    return paused


def _gone(paused: Interaction) -> InteractionGone:
    """The 'no longer valid' page for a login that ended meanwhile, with a link back to its agency."""
    gone = InteractionGone()
    client = clients.find(paused.client_id)
    return gone.for_agency(client.name, client.name_fa, clients.home_url(client)) if client is not None else gone


def _client_name(paused: Interaction) -> str:
    """Who the person is logging in for, in the page's language."""
    if paused.is_account_visit:
        return t("account.title")
    return paused.client_name_fa if current_lang() == "fa" and paused.client_name_fa else paused.client_name


def _limited(exc: limits.RateLimited, rid: str) -> TooManyRequests:
    return TooManyRequests(exc.retry_after, cooloff=exc.cooloff, restart_url=url_for("login.identify", r=rid))


def _identify_page(paused: Interaction, errors: dict, values: dict, status: int = 200):
    return render_template("identify.html", rid=paused.id, client_name=_client_name(paused), errors=errors,
                           values=values), status


def first_page(paused: Interaction):
    """The first form for a paused interaction, as /authorize answers it or at /login."""
    return _identify_page(paused, {}, _hinted_values(paused))


authorize.show_login_with(first_page)


@bp.get("")
def identify():
    """The first form: national ID and mobile."""
    return first_page(_paused(request.args.get("r")))


def _hinted_values(paused: Interaction) -> dict:
    """Prefill the national ID from a login_hint (OIDC Core §3.1.2.1) when it is one."""
    hint = paused.login_hint or ""
    try:
        return {"national_id": parse_national_id(hint)}
    except InvalidNationalId:
        return {}


@bp.post("")
def identify_submit():
    """Check the two fields; open a challenge (a code is sent only to the registered owner)."""
    paused = _paused(request.args.get("r"))
    rid = paused.id
    raw_nid, raw_mobile = request.form.get("national_id", ""), request.form.get("mobile", "")
    errors = {}
    # An empty field is asked for, not called wrong. Both checks are on the form alone, before
    # anything is looked up, so they tell nothing about who is registered.
    try:
        national_id = parse_national_id(raw_nid)
    except InvalidNationalId:
        errors["national_id"] = t("error.national_id") if raw_nid.strip() else t("error.national_id_empty")
    try:
        mobile = parse_mobile(raw_mobile)
    except InvalidMobile:
        errors["mobile"] = t("error.mobile") if raw_mobile.strip() else t("error.mobile_empty")
    if errors:
        try:
            limits.check_ip("starts_per_ip")  # a refused form counts against its address all the same
        except limits.RateLimited as exc:
            raise _limited(exc, rid) from None
        values = {"national_id": normalize_digits(raw_nid)[:10], "mobile": normalize_digits(raw_mobile)[:16],
                  "method": "totp" if request.form.get("method") == "totp" else "sms"}
        return _identify_page(paused, errors, values, 400)

    keys = limits.Keys.of(national_id, mobile, audit.client_ip())
    subject_fp = audit.fingerprint("nid", national_id)
    kind = "totp" if request.form.get("method") == "totp" else "sms"
    try:
        limits.check_start(keys, sms=kind == "sms")  # the address, then the pair and the mobile
    except limits.RateLimited as exc:
        raise _limited(exc, rid) from None
    registered = directory.find(national_id)
    matched = registered is not None and registered.mobile == mobile
    challenge_id = codes.start(registered.citizen if matched else None, mobile, kind=kind,
                               totp_ready=matched and registered.has_app, count_in=limits.sent_window(keys))
    audit.record("login_started", subject_fp=subject_fp, client_id=paused.client_id,
                 code_to=mask_mobile(mobile), matched=matched)
    paused.login = LoginStep(challenge_id, mask_mobile(mobile), subject_fp, keys.pair, keys.mobile)
    if not interaction.save(paused):
        raise _gone(paused)
    return redirect(url_for("login.code", r=rid), code=303)


def _expired(paused: Interaction, state: dict | None = None) -> ChallengeExpired:
    """The 'code has expired' page: with a form for a new code while the challenge is kept (the
    resend goes through the same limits as any other), else only 'start again'."""
    rid = paused.id
    restart = url_for("login.identify", r=rid)
    state = state if state is not None else codes.status(paused.login.challenge)
    if state is None:
        return ChallengeExpired(restart_url=restart)
    return ChallengeExpired(restart_url=restart, resend_url=url_for("login.resend", r=rid),
                            resend_in=state["resend_in"], app=state["kind"] == "totp")


def _code_page(paused: Interaction, error: str | None = None, notice: str | None = None,
               status: int = 200, resend_error: str | None = None):
    """The code form, or the page that says why it cannot be used."""
    rid = paused.id
    restart = url_for("login.identify", r=rid)
    state = codes.status(paused.login.challenge)
    if state is None:
        raise ChallengeExpired(restart_url=restart)
    if state["failed"]:  # a new try is a resend (none to wait for after a failure)
        raise SmsFailed(restart_url=restart, resend_url=url_for("login.resend", r=rid))
    if state["seconds"] <= 0:
        raise _expired(paused, state)
    return render_template("otp.html", rid=rid, mobile=paused.login.mobile_masked, seconds=state["seconds"],
                           resend_in=state["resend_in"], resend_url=url_for("login.resend", r=rid),
                           kind=state["kind"], error=error, notice=notice, resend_error=resend_error), status


@bp.get("/code")
def code():
    """The second form: the one-time code."""
    paused = _paused(request.args.get("r"))
    if paused.login is None:
        return redirect(url_for("login.identify", r=paused.id), code=303)
    return _code_page(paused, notice=t("otp.resent") if request.args.get("sent") else None)


@bp.post("/resend")
def resend():
    """Send a new code for the same challenge, after the wait (or at once after a failed send)."""
    paused = _paused(request.args.get("r"))
    rid, step = paused.id, paused.login
    if step is None:
        return redirect(url_for("login.identify", r=rid), code=303)
    keys = limits.Keys(ip="", pair=step.pair_fp, mobile=step.mobile_fp)
    try:
        limits.check_ip("starts_per_ip")
        # the wait first: a press refused as too soon must not spend the owner's send budget
        challenge = codes.resendable(step.challenge)
        limits.check_send(keys)
        codes.resend(step.challenge, challenge, count_in=limits.sent_window(keys))
    except limits.RateLimited as exc:
        raise _limited(exc, rid) from None
    except codes.ResendTooSoon as exc:
        return _code_page(paused, resend_error=t("otp.resend_wait", seconds=exc.wait), status=429)
    except codes.OtpExpired:
        raise _expired(paused) from None
    audit.record("code_resent", subject_fp=step.nid_fp, client_id=paused.client_id, code_to=step.mobile_masked)
    return redirect(url_for("login.code", r=rid, sent=1), code=303)


@bp.post("/code")
def code_submit():
    """Verify the code; on success the paused request goes on with a new SSO session."""
    paused = _paused(request.args.get("r"))
    rid, step = paused.id, paused.login
    restart = url_for("login.identify", r=rid)
    if step is None:
        return redirect(restart, code=303)
    try:
        limits.check_code_ip(step.pair_fp)  # the address, then the pair's cool-off
    except limits.RateLimited as exc:
        raise _limited(exc, rid) from None
    entered = normalize_digits(request.form.get("otp", ""))[:16]
    if not entered.strip():
        return _code_page(paused, error=t("error.otp_empty"), status=400)
    if not (len(entered) == 6 and entered.isascii() and entered.isdigit()):
        return _code_page(paused, error=t("error.otp_format"), status=400)
    try:
        citizen_id, method, citizen = codes.verify(step.challenge, entered)
    except (codes.OtpInvalid, codes.TooManyAttempts) as exc:
        locked = isinstance(exc, codes.TooManyAttempts)
        audit.record("otp_locked" if locked else "otp_wrong", subject_fp=step.nid_fp, client_id=paused.client_id)
        wait = limits.record_wrong_code(step.pair_fp, step.nid_fp)
        if wait:
            raise TooManyRequests(wait, cooloff=True, restart_url=restart) from None
        if locked:
            raise ChallengeLocked(restart_url=restart) from None
        return _code_page(paused, error=t("error.otp_invalid", remaining=exc.remaining), status=400)
    except codes.OtpExpired:
        raise _expired(paused) from None

    citizen = citizen or directory.get(citizen_id)
    if citizen is None:
        raise ChallengeExpired(restart_url=restart)
    metrics.login(method, "success")
    # committed with the authentication it precedes (protocol.authorize records it), or at once
    # when the request pauses again for consent
    audit.record("login_succeeded", subject_fp=step.nid_fp, client_id=paused.client_id, method=method,
                 commit=False)
    try:
        with store.deferred():  # the run of wrong codes ends with the session, the code and the rest: one round trip
            limits.record_right_code(step.pair_fp)
            response = authorize.after_login(paused, citizen, method)
    except Exception:
        limits.record_right_code(step.pair_fp)  # a right code ends the run whatever happened next
        raise
    audit.commit()
    return response
