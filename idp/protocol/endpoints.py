"""Blueprint of the protocol endpoints: discovery, JWKS, authorize, token, userinfo.

``/authorize`` reads top to bottom: validate the request (Authlib, tightened in oauth.py)
-> find the citizen's SSO session -> with none, pause the request and send the person to
the login pages -> with one, issue the code. The login pages come back through
``/authorize/resume``, which replays the paused request with the fresh login.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import time
from urllib.parse import urlencode

from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Request
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import AccessDeniedError, InvalidRequestError
from authlib.oidc.core.errors import (
    ConsentRequiredError,
    LoginRequiredError,
    RequestNotSupportedError,
    RequestURINotSupportedError,
)
from flask import Blueprint, Request, Response, current_app, jsonify, redirect, request, url_for
from werkzeug.test import EnvironBuilder

from ..citizens import counting
from ..citizens.models import Citizen
from ..login import limits
from ..platform import metrics
from ..platform.database import db
from ..platform.errors import BadAuthorizationRequest, InteractionGone, TooManyRequests, UnknownClient, json_error
from ..platform.i18n import use_ui_locales
from ..platform.keys import JWKS_CACHE_SECONDS, keyring
from ..platform.settings import settings
from ..platform.web import csrf
from . import sessions
from .oauth import (
    ACR,
    BearerTokenError,
    Principal,
    claims_for,
    client_and_citizen,
    client_cache,
    discovery_document,
    issuer_parameter,
    open_ref,
    server,
    subject_for,
    verify_access_token,
)

bp = Blueprint("oidc", __name__)

_MAX_PARAM = 2048
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ---- discovery ---------------------------------------------------------------------------------

@bp.get("/.well-known/openid-configuration")
def discovery():
    """OpenID Provider Metadata (OIDC Discovery 1.0 §4)."""
    body = current_app.extensions.get("idp.discovery_json")
    if body is None:  # the document depends on the settings alone: serialized once
        body = current_app.extensions["idp.discovery_json"] = json.dumps(discovery_document()).encode()
    resp = Response(body, mimetype="application/json")
    resp.headers["Cache-Control"] = "public, max-age=300"
    resp.headers["Access-Control-Allow-Origin"] = "*"
    return resp


@bp.get("/jwks")
def jwks():
    """The public signing keys (RFC 7517). Cached briefly so rotations reach clients quickly."""
    resp = Response(keyring.jwks_json(), mimetype="application/jwk-set+json")
    # Rotation publishes a key at least twice this long before it signs (keys.py).
    resp.headers["Cache-Control"] = f"public, max-age={JWKS_CACHE_SECONDS}"
    resp.headers["Access-Control-Allow-Origin"] = "*"
    return resp


# ---- authorization -----------------------------------------------------------------------------

def _request_pairs(req: Request) -> list[tuple[str, str]]:
    """The authorization request's parameters, checked for size and control characters."""
    pairs = list(req.values.items(multi=True))
    if len(pairs) > 40:
        raise BadAuthorizationRequest("invalid_request", "Too many parameters")
    for key, value in pairs:
        if len(key) > 64 or len(value) > _MAX_PARAM or _CONTROL.search(key) or _CONTROL.search(value):
            raise BadAuthorizationRequest("invalid_request", "Malformed parameter")
    return pairs


#: The authorization request parameters this provider understands, with the longest value of
#: each it accepts. Only these are kept while the person logs in (RFC 6749 §3.1: unrecognized
#: parameters are ignored), so the store holds a few KB per paused request, whatever is sent.
UNDERSTOOD = {"response_type": 32, "client_id": 64, "redirect_uri": 2048, "scope": 512, "state": 1024,
              "nonce": 256, "code_challenge": 128, "code_challenge_method": 16, "prompt": 64, "max_age": 10,
              "acr_values": 256, "login_hint": 256, "id_token_hint": 2048, "ui_locales": 64, "response_mode": 32}


def _check_lengths(http_request: Request, redirect_uri: str) -> None:
    """Refuse a parameter longer than its cap (the redirect URI is validated by now)."""
    for name, longest in UNDERSTOOD.items():
        if len(http_request.values.get(name) or "") > longest:
            raise InvalidRequestError(f"Parameter '{name}' is too long", redirect_uri=redirect_uri)


def _kept_parameters(http_request: Request) -> list[tuple[str, str]]:
    """What is stored of a request that pauses for a login: the understood parameters, once each
    (repeats were refused before this point)."""
    return [(name, http_request.values[name]) for name in UNDERSTOOD if name in http_request.values]


def _replayed_request(pairs: list[list[str]]) -> Request:
    """A request object carrying a paused authorization request's parameters."""
    env = EnvironBuilder(path="/authorize", base_url=settings.server.issuer,
                         query_string=urlencode([(k, v) for k, v in pairs])).get_environ()
    return Request(env)


def _principal(session: dict | None) -> Principal | None:
    """The citizen of a live session, or None."""
    if not session or not session.get("psid"):
        return None
    if "sk" in session:  # what the session keeps of the citizen: no row to read
        citizen = Citizen(id=session["citizen_id"], subject_key=session["sk"],
                          birth_date=dt.date.fromisoformat(session["bd"]))
        return Principal(citizen, session["auth_time"], session["method"], session["psid"],
                         adult_counted=bool(session.get("adult")))
    citizen = db.session.get(Citizen, session["citizen_id"])
    if citizen is None:
        return None
    return Principal(citizen, session["auth_time"], session["method"], session["psid"])


def _error_response(error: OAuth2Error) -> Response:
    """A redirect to the validated redirect URI with the error and `iss`, else a page."""
    if error.redirect_uri:
        response = server.handle_error_response(None, error)
        issuer_parameter.add_issuer_parameter(server, response)
        return response
    if error.error == "invalid_client":
        raise UnknownClient()
    raise BadAuthorizationRequest(error.error, error.description)


#: OIDC parameters that must appear at most once (Authlib checks the OAuth ones).
_SINGLE = ("nonce", "prompt", "max_age", "acr_values", "login_hint", "id_token_hint", "ui_locales",
           "code_challenge", "code_challenge_method")


def _check_single_values(http_request: Request, redirect_uri: str) -> None:
    for name in _SINGLE:
        if len(http_request.values.getlist(name)) > 1:
            raise InvalidRequestError(f"Multiple '{name}' in request.", redirect_uri=redirect_uri)


def _check_unsupported(http_request: Request, redirect_uri: str) -> None:
    """Refuse what discovery says is not supported, rather than ignore it (OIDC Core §6, §3.1.2.1)."""
    if http_request.values.get("request"):
        raise RequestNotSupportedError(redirect_uri=redirect_uri)
    if http_request.values.get("request_uri"):
        raise RequestURINotSupportedError(redirect_uri=redirect_uri)
    mode = http_request.values.get("response_mode")
    if mode and mode != "query":
        raise InvalidRequestError("Only response_mode=query is supported", redirect_uri=redirect_uri)


def _max_age(http_request: Request, redirect_uri: str) -> int | None:
    raw = http_request.values.get("max_age")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 10:
        raise InvalidRequestError("Invalid 'max_age'", redirect_uri=redirect_uri)
    return int(raw)


def _needs_login(principal: Principal | None, http_request: Request, client, prompts: set[str],
                 redirect_uri: str) -> bool:
    """Whether the person must prove who they are now (OIDC Core §3.1.2.1 prompt, max_age,
    acr_values, id_token_hint)."""
    if principal is None or "login" in prompts:
        return True
    max_age = _max_age(http_request, redirect_uri)
    if max_age is not None and time.time() - principal.auth_time > max_age:
        return True
    wanted = (http_request.values.get("acr_values") or "").split()
    if wanted and principal.acr not in wanted and ACR["sms"] not in wanted:
        return True  # only an authenticator-app login satisfies this request
    hint = http_request.values.get("id_token_hint")
    if hint:
        from .logout import verify_hint  # the one check of our ID tokens used as hints

        verified = verify_hint(hint)
        if verified is None:
            raise InvalidRequestError("Invalid 'id_token_hint'", redirect_uri=redirect_uri)
        if verified.claims.get("sub") != subject_for(principal.citizen, client):
            return True  # the agency expects someone else
    return False


def _pause(http_request: Request, client, session: dict | None, paused: tuple[str, dict] | None,
           endpoint: str, **state) -> Response:
    """Keep the request in the store and send the person to a page (login or consent)."""
    if paused:
        rid, interaction = paused
        interaction.update(state)
        if not sessions.update_interaction(rid, interaction):
            raise InteractionGone()
    else:
        try:
            limits.check_ip("paused_requests_per_ip")
        except limits.RateLimited as exc:
            raise TooManyRequests(exc.retry_after) from None
        rid = sessions.start_interaction(_kept_parameters(http_request), client.client_id, **state)
    response = redirect(url_for(endpoint, r=rid), code=303)
    sessions.bind_interaction(response, rid)
    return response


def _consent_needed(principal: Principal, client, scope: str, prompts: set[str]) -> bool:
    try:
        from . import consent
    except ImportError:  # the consent pages are not installed
        return False
    return "consent" in prompts or consent.needs_consent(principal.citizen.id, client, scope)


def _authorize(http_request: Request, session: dict | None, paused: tuple[str, dict] | None = None) -> Response:
    """Answer one authorization request for the holder of ``session``, or pause it.

    Reads top to bottom: validate the request (Authlib, tightened in oauth.py) -> single-valued
    parameters -> must the person log in now? -> must they consent? -> issue the code.
    ``paused`` is the interaction this request comes back from (after a login or consent).
    """
    oauth_request = FlaskOAuth2Request(http_request)
    use_ui_locales(http_request.values.get("ui_locales"))
    principal = _principal(session)
    interaction = paused[1] if paused else {}
    # Logged in during this very interaction: prompt=login, max_age and acr are satisfied.
    fresh = bool(session) and interaction.get("sid") == session["sid"] and bool(interaction.get("fresh"))
    try:
        try:
            grant = server.get_consent_grant(oauth_request, end_user=principal)
        except OAuth2Error as error:
            if error.redirect_uri:  # a repeated prompt must not be read as its first value
                _check_single_values(http_request, error.redirect_uri)
            raise
        client = grant.request.client
        redirect_uri = oauth_request.payload.redirect_uri or client.get_default_redirect_uri()
        _check_single_values(http_request, redirect_uri)
        _check_lengths(http_request, redirect_uri)
        _check_unsupported(http_request, redirect_uri)
        prompts = set((http_request.values.get("prompt") or "").split())
        if not fresh and _needs_login(principal, http_request, client, prompts, redirect_uri):
            if "none" in prompts:
                raise LoginRequiredError(redirect_uri=redirect_uri)
            return _pause(http_request, client, session, paused, "login.identify")
        if interaction.get("consent") == "denied":
            raise AccessDeniedError(redirect_uri=redirect_uri)
        if interaction.get("consent") != "granted" and _consent_needed(principal, client, grant.request.scope,
                                                                        prompts):
            if "none" in prompts:
                raise ConsentRequiredError(redirect_uri=redirect_uri)
            return _pause(http_request, client, session, paused, "consent.page", sid=session["sid"])
    except OAuth2Error as error:
        error.state = http_request.values.get("state")
        return _finish(paused, _error_response(error))
    except ValueError:
        # Authlib refuses to build an error description from hostile input (AUTHLIB-NOTES §7).
        raise BadAuthorizationRequest("invalid_request", "Malformed request") from None
    response = server.create_authorization_response(oauth_request, grant=grant, grant_user=principal)
    if response.status_code in (301, 302, 303) and "code=" in response.headers.get("Location", ""):
        sessions.note_client(session, client.client_id)
        if not fresh:
            counting.record_authentication(principal.citizen, client.client_id, principal.method, sso=True,
                                           counted=principal.adult_counted)
            metrics.login(principal.method, "sso")
    return _finish(paused, response)


def _finish(paused: tuple[str, dict] | None, response: Response) -> Response:
    """The request is answered: forget its interaction."""
    if paused:
        sessions.end_interaction(paused[0])
        sessions.release_interaction(response, paused[0])
    return response


@bp.route("/authorize", methods=["GET", "POST"])
@csrf.exempt
def authorize():
    """The authorization endpoint (RFC 6749 §3.1, OIDC Core §3.1.2)."""
    _request_pairs(request)
    if not request.values.get("redirect_uri"):
        # OIDC Core §3.1.2.1: REQUIRED (RFC 6749 would fall back on the registered one). Without
        # it there is nowhere validated to send the error to: a page (the unknown-client page
        # when the client is not known either).
        client = client_cache.get(request.values.get("client_id") or "")
        if client is None or not client.is_enabled:
            raise UnknownClient()
        raise BadAuthorizationRequest("invalid_request", "Missing 'redirect_uri'")
    return _authorize(request._get_current_object(), sessions.current_session())


@bp.get("/authorize/resume")
def resume():
    """Come back from the login or consent pages and answer the paused request."""
    rid = request.args.get("r")
    interaction = sessions.get_interaction(rid)
    session = sessions.current_session()
    if not interaction or not session or interaction.get("sid") != session["sid"]:
        raise InteractionGone()
    if interaction.get("return_to"):
        response = redirect(interaction["return_to"], code=303)
        return _finish((rid, interaction), response)
    return _authorize(_replayed_request(interaction["args"]), session, paused=(rid, interaction))


# ---- token -------------------------------------------------------------------------------------

@bp.post("/token")
@csrf.exempt
def token():
    """The token endpoint (RFC 6749 §3.2); responses are never cached (§5.1)."""
    if any(len(values) > 1 for values in request.form.listvalues()):
        # RFC 6749 §3.2: request parameters MUST NOT be included more than once (Authlib
        # would take the first `code` of several).
        response = json_error(400, "invalid_request", "Repeated parameter")
        metrics.token_response(400)
        return response
    response = server.create_token_response()
    metrics.token_response(response.status_code)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


@bp.post("/revoke")
@csrf.exempt
def revoke():
    """Token revocation (RFC 7009)."""
    response = server.create_endpoint_response("revocation")
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/introspect")
@csrf.exempt
def introspect():
    """Token introspection (RFC 7662), for agencies' APIs."""
    response = server.create_endpoint_response("introspection")
    response.headers["Cache-Control"] = "no-store"
    return response


# ---- userinfo ----------------------------------------------------------------------------------

def _bearer_token() -> str | None:
    """The access token from the Authorization header or, for POST, the form (RFC 6750 §2)."""
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    if request.method == "POST" and request.mimetype == "application/x-www-form-urlencoded":
        return request.form.get("access_token")
    return None


def _bearer_error(status: int, error: str | None, description: str) -> Response:
    header = 'Bearer realm="userinfo"'
    if error:
        header += f', error="{error}", error_description="{description}"'
    body = json.dumps({"error": error or "invalid_token", "error_description": description})
    return Response(body, status=status, mimetype="application/json",
                    headers={"WWW-Authenticate": header, "Cache-Control": "no-store"})


@bp.route("/userinfo", methods=["GET", "POST"])
@csrf.exempt
def userinfo():
    """The UserInfo endpoint (OIDC Core §5.3): claims for the token's scope."""
    token = _bearer_token()
    if not token:
        return _bearer_error(401, None, "Access token required")
    try:
        claims = verify_access_token(token)
    except BearerTokenError as exc:
        return _bearer_error(401, "invalid_token", str(exc))
    if "openid" not in claims.get("scope", "").split():
        return _bearer_error(403, "insufficient_scope", "The openid scope is required")
    citizen_id = open_ref(claims.get("idp_ref", ""))
    client, citizen = client_and_citizen(claims.get("client_id"), citizen_id)  # the client is cached
    if citizen is None or client is None:
        return _bearer_error(401, "invalid_token", "Unknown subject")
    resp = jsonify(claims_for(citizen, client, claims["scope"]))
    resp.headers["Cache-Control"] = "no-store"
    return resp
