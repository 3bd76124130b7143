"""A small agency API that accepts the identity provider's access tokens.

``GET /api/me`` needs ``Authorization: Bearer <token>`` (RFC 6750 §2.1). The
token is checked offline with :mod:`clients.jwt_verify` and the answer is
what the token says about its holder, and, for a token another agency
obtained by token exchange, who acted (``act``, ``actors``). Run it with ``python -m clients.agency_api``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from flask import Flask, Response, jsonify, request

from clients.jwt_verify import AccessTokenVerifier, InvalidAccessToken, SigningKeysUnavailable, actors

REALM = "agency-api"


def create_app(env: Mapping[str, str] | None = None, verifier: AccessTokenVerifier | None = None) -> Flask:
    """Build the API from environment variables (AGENCY_ISSUER, AGENCY_API_AUDIENCE)."""
    env = os.environ if env is None else env
    if verifier is None:
        issuer = env.get("AGENCY_ISSUER", "").rstrip("/")
        if not issuer:
            raise ValueError("AGENCY_ISSUER is required, e.g. http://127.0.0.1:5000")
        audience = env.get("AGENCY_API_AUDIENCE", "").strip()
        if not audience:
            # an API that took any client's token would take one minted for another agency
            # (token substitution): it must name the client whose tokens it serves
            raise ValueError("AGENCY_API_AUDIENCE is required: the client_id of the agency app whose tokens "
                             "this API takes")
        verifier = AccessTokenVerifier(issuer, audience=audience)

    app = Flask(__name__)
    app.extensions["access_token_verifier"] = verifier

    @app.get("/api/me")
    def me() -> Response:
        """Who the bearer token was issued for, and to which client."""
        token = bearer_token()
        if token is None:
            return challenge(401)
        try:
            claims = verifier.verify(token)
        except SigningKeysUnavailable:
            return jsonify(error="temporarily_unavailable"), 503
        except InvalidAccessToken as error:
            return challenge(401, "invalid_token", error.reason)
        body = {name: claims.get(name) for name in ("sub", "client_id", "scope", "acr", "amr")}
        # A token another agency obtained for this one by token exchange names who acted (RFC 8693 §4.1).
        body["act"] = claims.get("act")
        body["actors"] = actors(claims)
        response = jsonify(body)
        response.headers["Cache-Control"] = "no-store"
        return response

    return app


def bearer_token() -> str | None:
    """The token from ``Authorization: Bearer``, or None when there is none (RFC 6750 §2.1)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


def challenge(status: int, error: str | None = None, description: str | None = None) -> Response:
    """A response with an RFC 6750 §3 ``WWW-Authenticate: Bearer`` challenge.

    A request with no credentials gets a bare challenge, without an error
    code, as §3.1 asks; a bad token gets ``error="invalid_token"``.
    """
    params = [f'realm="{REALM}"']
    if error:
        params.append(f'error="{error}"')
    if description:
        # §3: error_description may not hold '"', '\\' or non-ASCII characters.
        params.append('error_description="%s"' % re.sub(r'[^\x20-\x21\x23-\x5b\x5d-\x7e]', "", description))
    body = {"error": error, "error_description": description} if error else {"error": "unauthorized"}
    response = jsonify(body)
    response.status_code = status
    response.headers["WWW-Authenticate"] = "Bearer " + ", ".join(params)
    response.headers["Cache-Control"] = "no-store"
    return response
