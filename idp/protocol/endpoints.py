"""The protocol endpoints for servers: token, revocation, introspection (Authlib, wired in
oauth.py) and userinfo (OIDC Core §5.3)."""
from __future__ import annotations

import base64
import io
import json
import time
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote

from flask import Blueprint, Flask, Response, request
from flask.ctx import RequestContext

from ..citizens import directory, guardians
from ..platform import metrics
from ..platform.errors import json_error
from ..platform.hosts import accepted_hosts, environ_host_name
from ..platform.web import csrf
from . import clients, issue, tokens
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


def json_body(obj: Any) -> bytes:
    """A JSON answer's bytes (compact, keys sorted, ASCII), the same from the view and from
    ResourceEndpoints."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def _refusal(status: int, error: str | None, description: str) -> tuple[int, dict, str]:
    """A refused bearer token (RFC 6750 §3): the status, the body and the WWW-Authenticate challenge."""
    header = 'Bearer realm="userinfo"'
    if error:
        header += f', error="{error}", error_description="{description}"'
    return status, {"error": error or "invalid_token", "error_description": description}, header


def userinfo_answer(token: str | None) -> tuple[int, dict, str | None]:
    """The UserInfo endpoint's answer for a bearer token: the status, the body (claims for the
    token's scope, or an error) and the WWW-Authenticate challenge of a refusal."""
    if not token:
        return _refusal(401, None, "Access token required")
    try:
        claims = verify_access_token(token)
    except BearerTokenError as exc:
        return _refusal(401, "invalid_token", str(exc))
    if "openid" not in claims.get("scope", "").split():
        return _refusal(403, "insufficient_scope", "The openid scope is required")
    citizen_id = open_ref(claims.get("idp_ref", ""))
    client = clients.find(claims.get("client_id"))  # from the client cache
    person = directory.profile(citizen_id) if isinstance(citizen_id, int) and client is not None else None
    if person is None:
        return _refusal(401, "invalid_token", "Unknown subject")
    info = claims_for(person, client, claims["scope"])
    if claims.get("idp_act_ref") is not None:
        # a guardian acting for a minor: only while they still may (linked, the minor under 18)
        guardian_id = open_ref(claims["idp_act_ref"])
        if guardian_id is None or not client.accepts_guardians or guardians.may_act(guardian_id, person.id) is None:
            return _refusal(401, "invalid_token", "The guardian may no longer act for this citizen")
        info["act"] = claims["act"]
    return 200, info, None


def _answer_headers(body: bytes, challenge: str | None) -> list[tuple[str, str]]:
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
    if challenge:
        headers.append(("WWW-Authenticate", challenge))
    return headers


def _userinfo_wire(token: str | None) -> tuple[int, bytes, list]:
    """UserInfo's answer as it goes out: the status, the body's bytes, the headers."""
    status, info, challenge = userinfo_answer(token)
    body = json_body(info)
    return status, body, _answer_headers(body, challenge)


@bp.route("/userinfo", methods=["GET", "POST"])
@csrf.exempt
def userinfo():
    """The UserInfo endpoint (OIDC Core §5.3): claims for the token's scope."""
    status, body, headers = _userinfo_wire(_bearer_token())
    return Response(body, status=status, headers=headers)


class ResourceEndpoints:
    """WSGI middleware: the two calls agencies' servers make most, answered here in a request
    context of the app but without Flask's dispatch (URL map, hooks, the Response object) or
    Authlib's request objects, which were about a fifth of their CPU:

    - ``GET /userinfo`` with a bearer token in the Authorization header, by the same
      ``userinfo_answer`` as the view above, with the same bytes and headers;
    - ``POST /introspect`` of one of our access tokens by the client it was issued to, with its
      secret in HTTP Basic (RFC 7662 with client_secret_basic): the answer of Authlib's endpoint
      (the token's claims and ``active``, or ``{"active": false}`` when it is invalid, expired or
      revoked), the same bytes and headers;
    - ``POST /token``: a code exchange or a refresh in the shape every agency library sends, by a
      client with its secret in HTTP Basic (issue.py: the grants' own steps without Authlib's
      request objects; the same tokens, and the same errors once a code or refresh token is taken).

    Anything else goes on to Flask: another method, a token in a form, a query string such as
    ``?lang=``, another host, a client that does not authenticate exactly so (a wrong secret is
    refused by the view, as before), a refresh token, a body with anything but ``token`` and
    ``token_type_hint`` once each. (A token of another client is inactive here, as there.) An
    exception on the way (the database or the store away) is answered by the app's error
    handlers, as it would be in the view (errors.py: a 503). Sits inside web.SecurityHeaders,
    which adds the security headers here as everywhere."""

    #: Longest body answered here (an access token is at most MAX_ACCESS_TOKEN).
    MAX_BODY = 8192

    def __init__(self, wsgi_app, app: Flask):
        self.wsgi_app, self.app = wsgi_app, app
        self.hosts = accepted_hosts(app.extensions["idp.settings"])

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO")
        if path == "/userinfo":
            auth = environ.get("HTTP_AUTHORIZATION", "")
            if (environ.get("REQUEST_METHOD") == "GET" and auth[:7].lower() == "bearer "
                    and not environ.get("QUERY_STRING") and environ_host_name(environ) in self.hosts):
                return self.answer(environ, start_response, "/userinfo", _userinfo_wire, auth[7:].strip())
        elif path == "/token" and environ.get("REQUEST_METHOD") == "POST" and not environ.get("QUERY_STRING"):
            request_args = self.token_request(environ)
            if request_args is not None and environ_host_name(environ) in self.hosts:
                return self.answer(environ, start_response, "/token", issue.token_answer, *request_args)
        elif path == "/introspect" and environ.get("REQUEST_METHOD") == "POST" and not environ.get("QUERY_STRING"):
            request_args = self.introspection_request(environ)
            if request_args is not None and environ_host_name(environ) in self.hosts:
                return self.answer(environ, start_response, "/introspect", introspection_answer, *request_args)
        return self.wsgi_app(environ, start_response)

    def answer(self, environ, start_response, path: str, answer, *args):
        t0 = time.perf_counter()
        # These requests never use the signed-cookie session: a null one, so that the context
        # does not open (verify and decode) a cookie a browser may have sent along.
        with RequestContext(self.app, environ, session=self.app.session_interface.make_null_session(self.app)):
            try:
                result = answer(*args)
            except Exception as exc:  # noqa: BLE001 - answered as the view's exception would be
                try:
                    response = self.app.handle_user_exception(exc)
                except Exception as unhandled:  # noqa: BLE001 - no handler: Flask's 500
                    response = self.app.handle_exception(unhandled)
                return self.app.make_response(response)(environ, start_response)
        if result is None:  # not the common case after all: the view answers
            return self.wsgi_app(environ, start_response)
        status, body, headers = result
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        metrics.observe_latency(path, environ["REQUEST_METHOD"], time.perf_counter() - t0)
        return [body]

    def introspection_request(self, environ) -> tuple[str, str, str] | None:
        """(client_id, secret, token) of an introspection request in the common shape, else None."""
        request = self.basic_form(environ)
        if request is None:
            return None
        client_id, secret, form = request
        if not set(form) <= {"token", "token_type_hint"} \
                or form.get("token_type_hint", "access_token") != "access_token" or "." not in form.get("token", ""):
            return None
        return client_id, secret, form["token"]

    def token_request(self, environ) -> tuple[str, str, dict] | None:
        """(client_id, secret, form) of a token request in a shape issue.py answers, else None."""
        request = self.basic_form(environ)
        return request if request is not None and issue.common_shape(request[2]) else None

    def basic_form(self, environ) -> tuple[str, str, dict] | None:
        """(client_id, secret, form) of a form POST with HTTP Basic credentials, each field once,
        else None. The body read here is put back for Flask."""
        content_type = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
        auth = environ.get("HTTP_AUTHORIZATION", "")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None
        if content_type != "application/x-www-form-urlencoded" or auth[:6].lower() != "basic " \
                or not 0 < length <= self.MAX_BODY:
            return None
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        if len(body) != length or not body.isascii():
            return None
        try:
            fields = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True)
            credentials = base64.b64decode(auth[6:].strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        form = dict(fields)
        if len(fields) != len(form) or ":" not in credentials:
            return None
        client_id, secret = credentials.split(":", 1)
        return unquote(client_id), unquote(secret), form


def introspection_answer(client_id: str, secret: str, token: str) -> tuple[int, bytes, list] | None:
    """RFC 7662 for one of our access tokens presented by the client it was issued to, with
    client_secret_basic; None when the request is not that (the view then answers it)."""
    try:
        claims = decode_access_token(token)
    except BearerTokenError:
        claims = None
    revoked = access_token_revoked(claims) if claims is not None else False  # brings the clients version
    client = clients.find(client_id)
    if client is None or not client.check_client_secret(secret) \
            or not client.check_endpoint_auth_method("client_secret_basic", "introspection"):
        return None
    token = tokens.AccessToken(claims) if claims is not None else None
    if token is None or revoked or not token.check_client(client) or token.is_expired():
        payload = {"active": False}
    else:
        payload = tokens.introspection_of(token)
        payload["active"] = True
    body = json.dumps(payload, sort_keys=True).encode()  # as Authlib answers (flask.json)
    return 200, body, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), ("Pragma", "no-cache")]
