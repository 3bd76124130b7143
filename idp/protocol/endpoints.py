"""The protocol endpoints for servers: token, revocation, introspection (Authlib, wired in
oauth.py) and userinfo (OIDC Core §5.3)."""
from __future__ import annotations

import json

from flask import Blueprint, Response, jsonify, request

from ..citizens import directory, guardians
from ..platform import metrics
from ..platform.errors import json_error
from ..platform.web import csrf
from . import clients
from .oauth import server
from .subjects import claims_for, open_ref
from .verify import BearerTokenError, access_token_revoked, decode_access_token, verify_access_token

bp = Blueprint("endpoints", __name__)


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
    token = request.form.get("token", "")
    if "." in token and request.form.get("token_type_hint") != "refresh_token":
        # an access token's revocation state first: its round trip also brings the clients version
        # that the client authentication below needs (the answer still waits for that check)
        try:
            access_token_revoked(decode_access_token(token))
        except BearerTokenError:
            pass
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
    client = clients.find(claims.get("client_id"))  # from the client cache
    person = directory.profile(citizen_id) if isinstance(citizen_id, int) and client is not None else None
    if person is None:
        return _bearer_error(401, "invalid_token", "Unknown subject")
    info = claims_for(person, client, claims["scope"])
    if claims.get("idp_act_ref") is not None:
        # a guardian acting for a minor: only while they still may (linked, the minor under 18)
        guardian_id = open_ref(claims["idp_act_ref"])
        if guardian_id is None or not client.accepts_guardians or guardians.may_act(guardian_id, person.id) is None:
            return _bearer_error(401, "invalid_token", "The guardian may no longer act for this citizen")
        info["act"] = claims["act"]
    resp = jsonify(info)
    resp.headers["Cache-Control"] = "no-store"
    return resp
