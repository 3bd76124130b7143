"""The authorization endpoint (RFC 6749 §4.1.1, OIDC Core §3.1.2) as one pipeline.

``/authorize`` reads top to bottom::

    validate(values)            the named checks, once: the result is a typed Interaction
    proceed(interaction)        with the browser's SSO session:
      must the person log in?   prompt, max_age, acr_values, id_token_hint: decided here only
        -> pause                the interaction is stored and the login's first page is the
                                answer (no redirect to it); the login pages hand it back
                                through after_login (no second validation, no rebuilt request)
      for whom?                 a guardian at an agency that accepts guardians, with linked
        -> pause                minors under 18 today: the chooser (protocol.acting), which comes
                                back through /authorize/resume
      must they consent?        consent.needed: decided here only (for the minor, when the
        -> pause                guardian acts for one): the consent page, back through /authorize/resume
      finish                    the authentication is recorded (the one place), then the code
                                goes to the validated redirect URI with state and iss

Until the client and its redirect URI are known to match, a bad request gets a page, never a
redirect (§4.1.2.1); after that every error goes back to the client with ``state`` and ``iss``
(RFC 9207). Error descriptions are fixed ASCII text: nothing of the request is echoed in them.
"""
from __future__ import annotations

import re
import time
from typing import Callable
from urllib.parse import urlencode

from flask import Blueprint, Response, make_response, redirect, request, url_for
from werkzeug.datastructures import MultiDict

from ..citizens import counting, guardians
from ..citizens.directory import Citizen
from ..platform import audit, limits, metrics
from ..platform.database import utcnow
from ..platform.errors import (
    BadAuthorizationRequest,
    BadRedirectUri,
    ClientDisabled,
    InteractionGone,
    TooManyRequests,
    UnknownClient,
)
from ..platform.i18n import use_ui_locales
from ..platform.settings import settings
from ..platform.store import store
from ..platform.web import csrf
from . import clients, consent, interaction, oauth, sessions
from .discovery import ACR
from .interaction import Interaction
from .models import Client
from .sessions import Session
from .subjects import subject_for
from .verify import verify_hint

bp = Blueprint("authorize", __name__)

#: The authorization request parameters this provider understands, with the longest value of
#: each it accepts. Only these are kept while the person logs in (RFC 6749 §3.1: unrecognized
#: parameters are ignored), so the store holds a few KB per paused request, whatever is sent.
UNDERSTOOD = {"response_type": 32, "client_id": 64, "redirect_uri": 2048, "scope": 512, "state": 1024,
              "nonce": 256, "code_challenge": 128, "code_challenge_method": 16, "prompt": 64, "max_age": 10,
              "acr_values": 256, "login_hint": 256, "id_token_hint": 2048, "ui_locales": 64, "response_mode": 32}
#: Any parameter at all: how many, how long (a page refuses more before anything is looked up).
MAX_PARAMETERS = 40
MAX_PARAMETER = 2048
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: An S256 code challenge is BASE64URL(SHA-256(verifier)) without padding: 43 characters.
_S256_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
PROMPTS = frozenset({"none", "login", "consent", "select_account"})

#: The login's first page for a paused interaction. ``GET /authorize`` answers with it instead
#: of a redirect to it (one request less per login; reloading the page runs the request again,
#: as going back to it does). The login package, a layer above, registers it (show_login_with).
_login_page: Callable[[Interaction], Response] | None = None


def show_login_with(page: Callable[[Interaction], Response]) -> None:
    """Register the login's first page (called once by the login package)."""
    global _login_page
    _login_page = page


class Refused(Exception):
    """An authorization error for the client's validated redirect URI (RFC 6749 §4.1.2.1)."""

    def __init__(self, error: str, description: str | None = None):
        super().__init__(error)
        self.error = error
        self.description = description


class ToClient(Exception):
    """A Refused error with where it goes: the validated redirect URI and the request's state."""

    def __init__(self, refused: Refused, redirect_uri: str, state: str | None):
        super().__init__(refused.error)
        self.refused, self.redirect_uri, self.state = refused, redirect_uri, state


# ---- validation: the named checks, in order ---------------------------------------------------

def _check_transport() -> None:
    """TLS (RFC 6749 §3.1): an https issuer answers authorization requests over https only
    (a proxy that leaves out X-Forwarded-Proto gets a page saying so, never a redirect)."""
    if settings.is_https and request.scheme != "https":
        raise BadAuthorizationRequest("invalid_request", "https is required")


def _check_parameters(values: MultiDict) -> None:
    """Bounded in number and length, no control characters (a page: nothing is trusted yet)."""
    pairs = list(values.items(multi=True))
    if len(pairs) > MAX_PARAMETERS:
        raise BadAuthorizationRequest("invalid_request", "Too many parameters")
    for key, value in pairs:
        if len(key) > 64 or len(value) > MAX_PARAMETER or _CONTROL.search(key) or _CONTROL.search(value):
            raise BadAuthorizationRequest("invalid_request", "Malformed parameter")


def _check_client(values: MultiDict) -> Client:
    """One client_id naming an enabled client (else the unknown-service page, or for a client an
    operator disabled, the page that says the service is unavailable for now)."""
    if len(values.getlist("client_id")) != 1:
        raise UnknownClient()
    client = clients.find(values.get("client_id"))
    if client is None:
        raise ClientDisabled() if clients.is_disabled(values.get("client_id")) else UnknownClient()
    return client


def _check_redirect_uri(values: MultiDict, client: Client) -> str:
    """Present (OIDC Core §3.1.2.1 makes it REQUIRED), once, and exactly one the client
    registered (RFC 9700 §4.1.3); otherwise a page, never a redirect, whose only link to the
    agency is the home it registered."""
    given = values.getlist("redirect_uri")
    if len(given) != 1 or not given[0]:
        raise BadRedirectUri("Missing or repeated 'redirect_uri'", client.name, client.name_fa,
                             clients.home_url(client))
    if not client.check_redirect_uri(given[0]):
        raise BadRedirectUri("The redirect_uri is not registered for this client", client.name, client.name_fa,
                             clients.home_url(client))
    return given[0]


def _check_single_values(values: MultiDict) -> None:
    """Every parameter at most once (RFC 6749 §3.1): a repeated prompt must not be read as its
    first value."""
    for name in UNDERSTOOD:
        if len(values.getlist(name)) > 1:
            raise Refused("invalid_request", f"Repeated '{name}'")


def _check_lengths(values: MultiDict) -> None:
    for name, longest in UNDERSTOOD.items():
        if len(values.get(name) or "") > longest:
            raise Refused("invalid_request", f"Parameter '{name}' is too long")


def _check_unsupported(values: MultiDict) -> None:
    """Refuse what discovery says is not supported, rather than ignore it (OIDC Core §6)."""
    if values.get("request"):
        raise Refused("request_not_supported", "Request objects are not supported")
    if values.get("request_uri"):
        raise Refused("request_uri_not_supported", "request_uri is not supported")
    mode = values.get("response_mode")
    if mode and mode != "query":
        raise Refused("invalid_request", "Only response_mode=query is supported")


def _check_response_type(values: MultiDict, client: Client) -> None:
    """The authorization code flow only (RFC 9700 §2.1.2: no implicit)."""
    response_type = values.get("response_type")
    if not response_type:
        raise Refused("invalid_request", "Missing 'response_type'")
    if response_type != "code":
        raise Refused("unsupported_response_type", "Only response_type=code is supported")
    if not client.check_response_type(response_type):
        raise Refused("unauthorized_client", "The client may not use this response_type")


def _check_pkce(values: MultiDict) -> str:
    """PKCE with S256 for every client (RFC 7636, RFC 9700 §2.1.1): never plain, never absent."""
    challenge = values.get("code_challenge")
    if not challenge:
        raise Refused("invalid_request", "PKCE is required: code_challenge is missing")
    if values.get("code_challenge_method") != "S256":
        raise Refused("invalid_request", "code_challenge_method must be S256")
    if not _S256_CHALLENGE.fullmatch(challenge):
        raise Refused("invalid_request", "Invalid 'code_challenge'")
    return challenge


def _check_nonce(values: MultiDict, client: Client) -> str | None:
    """A nonce already bound to a code of this client is a replay (OIDC Core §3.1.2.1)."""
    nonce = values.get("nonce") or None
    if nonce is not None and store.nonce_used(client.client_id, nonce):
        raise Refused("invalid_request", "Invalid 'nonce'")
    return nonce


def _check_prompt(values: MultiDict) -> tuple[str, ...]:
    """Known values (others are ignored); `none` only alone (OIDC Core §3.1.2.1)."""
    prompts = tuple(p for p in (values.get("prompt") or "").split() if p in PROMPTS)
    if "none" in prompts and len(set((values.get("prompt") or "").split())) > 1:
        raise Refused("invalid_request", "prompt=none cannot be combined")
    return prompts


def _check_max_age(values: MultiDict) -> int | None:
    raw = values.get("max_age")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 10:
        raise Refused("invalid_request", "Invalid 'max_age'")
    return int(raw)


def _check_id_token_hint(values: MultiDict) -> str | None:
    """One of our ID tokens (verify.verify_hint); the `sub` it names."""
    hint = values.get("id_token_hint")
    if not hint:
        return None
    verified = verify_hint(hint)
    if verified is None:
        raise Refused("invalid_request", "Invalid 'id_token_hint'")
    return verified.claims["sub"]


def validate(values: MultiDict) -> Interaction:
    """Run the named checks once; the validated request as a new Interaction (not stored)."""
    _check_transport()
    _check_parameters(values)
    client = _check_client(values)
    redirect_uri = _check_redirect_uri(values, client)
    try:
        _check_single_values(values)
        _check_lengths(values)
        _check_unsupported(values)
        _check_response_type(values, client)
        code_challenge = _check_pkce(values)
        nonce = _check_nonce(values, client)
        prompt = _check_prompt(values)
        max_age = _check_max_age(values)
        hinted_sub = _check_id_token_hint(values)
    except Refused as refused:
        raise ToClient(refused, redirect_uri, values.get("state")) from None
    return interaction.new(client.client_id, redirect_uri=redirect_uri, scope=values.get("scope") or "",
                           state=values.get("state"), nonce=nonce, code_challenge=code_challenge,
                           code_challenge_method="S256", prompt=prompt, max_age=max_age,
                           acr_values=tuple((values.get("acr_values") or "").split()),
                           login_hint=values.get("login_hint"), ui_locales=values.get("ui_locales"),
                           hinted_sub=hinted_sub, client_name=client.name, client_name_fa=client.name_fa)


# ---- the decisions -----------------------------------------------------------------------------

def _logged_in_here(paused: Interaction, session: Session) -> bool:
    """The person logged in during this very interaction: prompt=login, max_age and acr are
    satisfied by that login."""
    return paused.logged_in and paused.sid == session.sid


def must_log_in(paused: Interaction, session: Session | None, client: Client) -> bool:
    """Whether the person must prove who they are now (OIDC Core §3.1.2.1: prompt, max_age,
    acr_values, id_token_hint). Asked in this one place."""
    if session is None:
        return True
    if _logged_in_here(paused, session):
        return False
    if "login" in paused.prompt:
        return True
    if paused.max_age is not None and time.time() - session.auth_time > paused.max_age:
        return True
    if paused.acr_values and ACR[session.method] not in paused.acr_values and ACR["sms"] not in paused.acr_values:
        return True  # only an authenticator-app login satisfies this request
    if paused.hinted_sub is not None and paused.hinted_sub != subject_for(session.citizen, client):
        return True  # the agency expects someone else
    return False


def proceed(paused: Interaction, session: Session | None, stored: bool) -> Response:
    """Answer the validated request for the holder of ``session``, or pause it for a page.
    ``stored``: the interaction is already in the store (coming back from a page)."""
    use_ui_locales(paused.ui_locales)
    if paused.is_account_visit:
        if session is None or not _logged_in_here(paused, session):
            return _pause(paused, stored, "login.identify")
        return _finish(paused, session, None)
    client = clients.find(paused.client_id)
    if client is None:
        raise ClientDisabled()  # disabled while the person was logging in
    if must_log_in(paused, session, client):
        if "none" in paused.prompt:
            raise ToClient(Refused("login_required"), paused.redirect_uri, paused.state)
        return _pause(paused, stored, "login.identify")
    if client.accepts_guardians and not paused.guardian_chosen and "none" not in paused.prompt \
            and guardians.minors_of(session.citizen.id):
        # prompt=none cannot show the chooser: the guardian goes on as themselves
        paused.sid = session.sid
        return _pause(paused, stored, "acting.page")
    if paused.consent == "denied":
        raise ToClient(Refused("access_denied", "The citizen did not allow it"), paused.redirect_uri, paused.state)
    if paused.consent != "granted" and consent.needs_consent(paused.acting_for or session.citizen.id, client,
                                                            paused.scope, " ".join(paused.prompt)):
        if "none" in paused.prompt:
            raise ToClient(Refused("consent_required"), paused.redirect_uri, paused.state)
        paused.sid = session.sid
        return _pause(paused, stored, "consent.page")
    return _finish(paused, session, client)


def _pause(paused: Interaction, stored: bool, endpoint: str) -> Response:
    """Keep the interaction and send the person to a page (login or consent); a new request
    for a login from a GET shows the first login page at once."""
    if (not stored and endpoint == "login.identify" and _login_page is not None and request.method == "GET"
            and not paused.is_account_visit):
        response = make_response(_login_page(paused))
    else:
        response = redirect(url_for(endpoint, r=paused.id), code=303)
    if stored:
        if not interaction.save(paused):
            raise InteractionGone()
    else:
        try:
            limits.check_ip("paused_requests_per_ip")
        except limits.RateLimited as exc:
            raise TooManyRequests(exc.retry_after) from None
        interaction.start(paused, response)
    return response


def _finish(paused: Interaction, session: Session, client: Client | None) -> Response:
    """The person is authenticated for this request: record it (the one place an authentication
    is recorded: a login made here, or a single sign-on), then the code for the client, or the
    account page the person was on."""
    fresh = _logged_in_here(paused, session)
    at = utcnow()
    counting.record_authentication(session.citizen, paused.client_id, session.method, sso=not fresh, at=at)
    # an adult is counted now (by this or an earlier authentication): the new session says so
    counted = fresh and counting.is_adult(session.citizen, counting.local_date(at))
    if not fresh:
        metrics.login(session.method, "sso")
    if client is None:
        response = redirect(paused.return_to, code=303)
    else:
        subject, actor = session.citizen, None
        if paused.acting_for is not None:
            # the guardian acts for a linked minor: the code's subject is the minor, the guardian its
            # actor; the minor is not counted as authenticated (the guardian was, above)
            subject, actor = _minor_for(paused, session, client), session.citizen
        code = oauth.save_code(client.client_id, paused.redirect_uri, paused.scope, paused.nonce,
                               paused.code_challenge, paused.code_challenge_method, subject,
                               session.auth_time, session.method, session.psid, actor=actor)
        sessions.note_client(session, client.client_id, adult_counted=counted)
        response = _to_client(paused.redirect_uri, {"code": code, "state": paused.state})
    interaction.end(paused, response)
    return response


def _minor_for(paused: Interaction, session: Session, client: Client) -> Citizen:
    """The minor the guardian chose, checked again now (linked, under 18 today, an agency that
    accepts guardians); audited for both. Otherwise access_denied for the agency."""
    minor = guardians.may_act(session.citizen.id, paused.acting_for) if client.accepts_guardians else None
    fps = oauth.guardian_fingerprints(session.citizen.id, paused.acting_for)
    if minor is None:
        audit.record("guardian_act_refused", subject_fp=fps[0], client_id=client.client_id, minor_fp=fps[1],
                     step="code")
        raise ToClient(Refused("access_denied", "The guardian may not act for this citizen"), paused.redirect_uri,
                       paused.state)
    audit.record("guardian_acted", subject_fp=fps[0], client_id=client.client_id, minor_fp=fps[1], step="code",
                 scope=paused.scope)
    return minor


def _to_client(redirect_uri: str, params: dict[str, str | None]) -> Response:
    """A redirect to the validated redirect URI with the response and `iss` (RFC 9207 §2)."""
    query = urlencode([(k, v) for k, v in params.items() if v is not None] + [("iss", settings.server.issuer)])
    return redirect(redirect_uri + ("&" if "?" in redirect_uri else "?") + query, code=303)


def _refusal(error: ToClient, paused: Interaction | None = None) -> Response:
    response = _to_client(error.redirect_uri, {"error": error.refused.error,
                                               "error_description": error.refused.description,
                                               "state": error.state})
    if paused is not None:
        interaction.end(paused, response)
    return response


# ---- the entry points --------------------------------------------------------------------------

@bp.route("/authorize", methods=["GET", "POST"])
@csrf.exempt
def authorize():
    """The authorization endpoint: validate once, then proceed with the browser's session."""
    try:
        paused = validate(request.values)
        use_ui_locales(paused.ui_locales)
        with store.deferred():  # a single sign-on's code, counters and session: one round trip
            return proceed(paused, sessions.current(), stored=False)
    except ToClient as error:
        return _refusal(error)


@bp.get("/authorize/resume")
def resume():
    """Come back from the consent page and answer the paused request."""
    paused = interaction.load(request.args.get("r"))
    session = sessions.current()
    if paused is None or session is None or paused.sid != session.sid:
        raise InteractionGone()
    try:
        return proceed(paused, session, stored=True)
    except ToClient as error:
        return _refusal(error, paused)


def after_login(paused: Interaction, citizen: Citizen, method: str) -> Response:
    """The login pages proved who the person is: a new SSO session (always a new id), and the
    paused request goes on from where it stopped, without a second validation."""
    with store.deferred():  # the new session, the code, the counters, the end of the request: one round trip
        session, cookie = sessions.create(citizen, method)
        paused.sid, paused.logged_in, paused.login = session.sid, True, None
        paused.guardian_chosen, paused.acting_for = False, None  # a choice belongs to whoever made it
        try:
            response = proceed(paused, session, stored=True)
        except ToClient as error:
            response = _refusal(error, paused)
    sessions.set_cookie(response, cookie)
    return response


def account_visit(return_to: str) -> Response:
    """Send the person through the login, then back to one of their account pages."""
    visit = interaction.new(interaction.ACCOUNT_CLIENT, return_to=return_to)
    return proceed(visit, None, stored=False)
