"""The token endpoint's two everyday requests, answered without Authlib's request objects and
grant machinery (endpoints.ResourceEndpoints calls them before Flask's dispatch):

- a code exchange (RFC 6749 §4.1.3, RFC 7636 §4.5, OIDC Core §3.1.3): ``grant_type``, ``code``,
  ``redirect_uri`` and ``code_verifier``, once each;
- a refresh (RFC 6749 §6, rotating): ``grant_type`` and ``refresh_token``, once each;

by a client that authenticates with its secret in HTTP Basic (client_secret_basic) and may use
the grant. The steps are the grants' own, in their order, through the same functions
(oauth.redeem_code, code_principal, claim_refresh_token, refresh_principal,
keep_refresh_token, id_token and the server's token generator), and an error once the code or
the refresh token has been taken is Authlib's error with its text. Anything else goes to the
view and Authlib: other shapes (a scope on a refresh, a client_id or secret in the form, a
repeated parameter, other grants), a client that does not authenticate exactly so, a
malformed code_verifier (which Authlib refuses only after taking the code, so it takes it
there). ``tests/test_token_fast_path.py`` asks each request both ways.
"""
from __future__ import annotations

from typing import Any

from authlib.consts import default_json_headers
from authlib.oauth2.base import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidGrantError, InvalidRequestError
from authlib.oauth2.rfc7636.challenge import CODE_VERIFIER_PATTERN
from authlib.oidc.core.grants.util import is_openid_scope
from flask import json

from ..platform import metrics
from . import clients, oauth
from .models import Client

CODE_FIELDS = frozenset({"grant_type", "code", "redirect_uri", "code_verifier"})
REFRESH_FIELDS = frozenset({"grant_type", "refresh_token"})


def common_shape(form: dict[str, str]) -> bool:
    """Whether a token request's form (each name once) is one this module answers."""
    grant = form.get("grant_type")
    if grant == "authorization_code":
        return form.keys() == CODE_FIELDS and CODE_VERIFIER_PATTERN.match(form["code_verifier"]) is not None
    return grant == "refresh_token" and form.keys() == REFRESH_FIELDS


def token_answer(client_id: str, secret: str, form: dict[str, str]) -> tuple[int, bytes, list] | None:
    """The token endpoint's answer for a request in the common shape (``common_shape``), by a
    client with this secret; None (nothing done) when the client does not authenticate so, or may
    not use the grant: the view answers that."""
    grant = form["grant_type"]
    client = clients.find(client_id)
    if client is None or not client.check_client_secret(secret) \
            or not client.check_endpoint_auth_method("client_secret_basic", "token") \
            or not client.check_grant_type(grant):
        return None
    try:
        payload: dict[str, Any] = _exchange(client, form) if grant == "authorization_code" else _refresh(client, form)
        status, headers = 200, default_json_headers
    except OAuth2Error as error:
        status, payload, headers = error()
    body = json.dumps(payload).encode()  # as Authlib's Flask integration writes it
    metrics.token_response(status, grant)
    return status, body, [*headers, ("Content-Length", str(len(body)))]


def _exchange(client: Client, form: dict[str, str]) -> dict[str, Any]:
    """AuthorizationCodeGrant with its PKCE and OpenID Connect extensions, step by step."""
    data = oauth.redeem_code(form["code"], client)
    if data is None:
        raise InvalidGrantError("Invalid 'code' in request.")
    if data["redirect_uri"] and form["redirect_uri"] != data["redirect_uri"]:
        raise InvalidGrantError("Invalid 'redirect_uri' in request.")
    challenge = data.get("code_challenge")
    if not challenge:
        raise InvalidRequestError("The authorization request had no 'code_challenge', "
                                  "but a 'code_verifier' was provided.")
    method = data.get("code_challenge_method") or oauth.S256Verifier.DEFAULT_CODE_CHALLENGE_METHOD
    if not oauth.S256Verifier.CODE_CHALLENGE_METHODS[method](form["code_verifier"], challenge):
        raise InvalidGrantError(description="Code challenge failed.")
    principal = oauth.code_principal(data, client)
    token = oauth.server.generate_token(grant_type="authorization_code", client=client, user=principal,
                                        scope=data["scope"],
                                        include_refresh_token=client.check_grant_type("refresh_token"))
    oauth.keep_refresh_token(token, client, principal, None)
    if token.get("scope") and is_openid_scope(token["scope"]):
        token["id_token"] = oauth.id_token(client, data, principal, token.get("access_token"))
    return token


def _refresh(client: Client, form: dict[str, str]) -> dict[str, Any]:
    """RefreshTokenGrant (rotating) step by step."""
    claimed = oauth.claim_refresh_token(form["refresh_token"], client)
    if not claimed or not claimed.check_client(client):
        raise InvalidGrantError()
    principal = oauth.refresh_principal(claimed, client)
    if not principal:
        raise InvalidRequestError("There is no 'user' for this token.")
    token = oauth.server.generate_token(grant_type="refresh_token", client=client, user=principal,
                                        scope=claimed.get_scope(),
                                        include_refresh_token=oauth.RefreshTokenGrant.INCLUDE_NEW_REFRESH_TOKEN)
    oauth.keep_refresh_token(token, client, principal, claimed)
    return token
