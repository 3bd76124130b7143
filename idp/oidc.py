"""Blueprint of the protocol endpoints: discovery, JWKS, authorize, token, userinfo.

``/authorize`` reads top to bottom: validate the request (Authlib, tightened in oauth.py)
-> find the citizen's SSO session -> with none, pause the request and send the person to
the login pages -> with one, issue the code. The login pages come back through
``/authorize/resume``, which replays the paused request with the fresh login.
"""
from __future__ import annotations

import json
import re
from urllib.parse import urlencode

from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Request
from authlib.oauth2 import OAuth2Error
from flask import Blueprint, Request, Response, jsonify, redirect, request, url_for
from werkzeug.test import EnvironBuilder

from . import citizens, sessions
from .errors import BadAuthorizationRequest, InteractionGone, UnknownClient
from .extensions import csrf, db, keyring, settings
from .i18n import use_ui_locales
from .models import Citizen
from .oauth import BearerTokenError, Principal, claims_for, discovery_document, issuer_parameter, \
    open_ref, server, verify_access_token

bp = Blueprint("oidc", __name__)

_MAX_PARAM = 2048
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ---- discovery ---------------------------------------------------------------------------------

@bp.get("/.well-known/openid-configuration")
def discovery():
    """OpenID Provider Metadata (OIDC Discovery 1.0 §4)."""
    resp = jsonify(discovery_document())
    resp.headers["Cache-Control"] = "public, max-age=300"
    resp.headers["Access-Control-Allow-Origin"] = "*"
    return resp


@bp.get("/jwks")
def jwks():
    """The public signing keys (RFC 7517). Cached briefly so rotations reach clients quickly."""
    resp = Response(json.dumps(keyring.jwks()), mimetype="application/jwk-set+json")
    resp.headers["Cache-Control"] = "public, max-age=300"
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


def _replayed_request(pairs: list[list[str]]) -> Request:
    """A request object carrying a paused authorization request's parameters."""
    env = EnvironBuilder(path="/authorize", base_url=settings.server.issuer,
                         query_string=urlencode([(k, v) for k, v in pairs])).get_environ()
    return Request(env)


def _principal(session: dict | None) -> Principal | None:
    """The citizen of a live session, or None."""
    if not session:
        return None
    citizen = db.session.get(Citizen, session["citizen_id"])
    if citizen is None:
        return None
    return Principal(citizen, session["auth_time"], session["method"], session["sid"])


def _error_response(error: OAuth2Error) -> Response:
    """A redirect to the validated redirect URI with the error and `iss`, else a page."""
    if error.redirect_uri:
        response = server.handle_error_response(None, error)
        issuer_parameter.add_issuer_parameter(server, response)
        return response
    if error.error == "invalid_client":
        raise UnknownClient()
    raise BadAuthorizationRequest(error.error, error.description)


def _authorize(http_request: Request, session: dict | None, fresh: bool = False) -> Response:
    """Answer one authorization request for the holder of ``session`` (or pause it for a login)."""
    oauth_request = FlaskOAuth2Request(http_request)
    use_ui_locales(http_request.values.get("ui_locales"))
    principal = _principal(session)
    try:
        grant = server.get_consent_grant(oauth_request, end_user=principal)
    except OAuth2Error as error:
        return _error_response(error)
    except ValueError:
        # Authlib refuses to build an error description from hostile input (AUTHLIB-NOTES §7).
        raise BadAuthorizationRequest("invalid_request", "Malformed request") from None
    client = grant.request.client
    if principal is None:
        rid = sessions.start_interaction(list(http_request.values.items(multi=True)), client.client_id)
        response = redirect(url_for("login.identify", r=rid), code=303)
        sessions.bind_interaction(response, rid)
        return response
    response = server.create_authorization_response(oauth_request, grant=grant, grant_user=principal)
    if response.status_code in (301, 302, 303) and "code=" in response.headers.get("Location", ""):
        sessions.note_client(session, client.client_id)
        if not fresh:
            citizens.record_authentication(principal.citizen, client.client_id, principal.method, sso=True)
    return response


@bp.route("/authorize", methods=["GET", "POST"])
@csrf.exempt
def authorize():
    """The authorization endpoint (RFC 6749 §3.1, OIDC Core §3.1.2)."""
    _request_pairs(request)
    return _authorize(request._get_current_object(), sessions.current_session())


@bp.get("/authorize/resume")
def resume():
    """Come back from the login pages: answer the paused request with the fresh session."""
    rid = request.args.get("r")
    interaction = sessions.get_interaction(rid)
    session = sessions.current_session()
    if not interaction or not session or interaction.get("sid") != session["sid"]:
        raise InteractionGone()
    sessions.end_interaction(rid)
    if interaction.get("return_to"):
        response = redirect(interaction["return_to"], code=303)
    else:
        response = _authorize(_replayed_request(interaction["args"]), session, fresh=True)
    sessions.release_interaction(response, rid)
    return response


# ---- token -------------------------------------------------------------------------------------

@bp.post("/token")
@csrf.exempt
def token():
    """The token endpoint (RFC 6749 §3.2); responses are never cached (§5.1)."""
    response = server.create_token_response()
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
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
    client = server.query_client(claims.get("client_id"))
    citizen = db.session.get(Citizen, citizen_id) if citizen_id else None
    if citizen is None or client is None:
        return _bearer_error(401, "invalid_token", "Unknown subject")
    resp = jsonify(claims_for(citizen, client, claims["scope"]))
    resp.headers["Cache-Control"] = "no-store"
    return resp
