"""Our own tokens when they come back: access tokens presented as bearer tokens (RFC 6750,
RFC 9068) and ID tokens presented as hints (``id_token_hint`` at /authorize and /logout).

Both are checked against the published keys the key ring holds, already parsed: no key is
parsed and no key set is built per request.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from flask import g, has_request_context
from joserfc import jwt
from joserfc.errors import JoseError

from ..platform.keyring import keyring
from ..platform.settings import settings
from ..platform.store import store
from . import clients
from .models import Client

#: Longest token accepted: an access token, an ID token used as a hint.
MAX_ACCESS_TOKEN = 4096
MAX_HINT = 8192


class BearerTokenError(Exception):
    """An access token presented to a resource of ours is not valid (RFC 6750 §3.1)."""


def decode_access_token(token: str) -> dict[str, Any]:
    """The claims of one of our access tokens: signature, typ, iss, exp checked, not revocation.
    Kept for the rest of the request (introspection looks at a token twice)."""
    memo = g.get("idp_decoded") if has_request_context() else None
    if memo is not None and memo[0] == token:
        return memo[1]
    if not token or len(token) > MAX_ACCESS_TOKEN:
        raise BearerTokenError("malformed token")
    try:
        header, claims = keyring.verify(token)  # only what our own keys signed, as we sign it
    except ValueError as exc:
        raise BearerTokenError("signature or format invalid") from exc
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in ("at+jwt", "application/at+jwt"):
        raise BearerTokenError("not an access token")
    if claims.get("iss") != settings.server.issuer:
        raise BearerTokenError("wrong issuer")
    if not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
        raise BearerTokenError("expired")
    if not isinstance(claims.get("jti"), str):
        raise BearerTokenError("revoked")
    if has_request_context():
        g.idp_decoded = (token, claims)
    return claims


def access_token_revoked(claims: dict[str, Any]) -> bool:
    """Whether the token was revoked or its session ended: one store round trip, which also
    brings the clients version for the request's client lookups. Kept for the request."""
    memo = g.setdefault("idp_revoked", {}) if has_request_context() else {}
    jti = claims.get("jti", "")
    if jti not in memo:
        need = clients.client_cache.needs_version()
        revoked, version = store.access_token_state(jti, claims.get("sid"), with_version=need)
        if need:
            clients.client_cache.note_version(version)
        memo[jti] = revoked
    return memo[jti]


def verify_access_token(token: str, check_revoked: bool = True) -> dict[str, Any]:
    """Check one of our access tokens: signature, typ, iss, exp and (unless told) revocation,
    the token's own or its session's."""
    claims = decode_access_token(token)
    if check_revoked and access_token_revoked(claims):
        raise BearerTokenError("revoked")
    return claims


@dataclass
class Hint:
    """A verified id_token_hint: one of our ID tokens (possibly expired)."""

    claims: dict[str, Any]
    client: Client

    @property
    def sid(self) -> str | None:
        sid = self.claims.get("sid")
        return sid if isinstance(sid, str) and sid else None


def verify_hint(token: str | None) -> Hint | None:
    """The hint when it is an ID token this provider issued to a known client, else None.

    Checked: the signature against our published keys, ``typ`` (an access token or a Logout
    Token is not an ID token), ``iss``, and ``aud`` naming an enabled client (``azp`` when
    there are several). ``exp`` is not checked: an expired hint still identifies the session
    (RP-Initiated Logout §2).
    """
    if not token or len(token) > MAX_HINT:
        return None
    try:
        decoded = jwt.decode(token, keyring.public_key_set(), algorithms=["RS256", "ES256"])
    except (JoseError, ValueError, TypeError, KeyError):
        return None
    typ = decoded.header.get("typ")
    if typ is not None and str(typ).upper() != "JWT":
        return None
    claims = decoded.claims
    if claims.get("iss") != settings.server.issuer or "events" in claims:
        return None
    aud = claims.get("aud")
    auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if len(auds) == 1:
        client_id = auds[0]
    elif claims.get("azp") in auds:
        client_id = claims["azp"]
    else:
        return None
    client = clients.find(client_id)
    if client is None or not isinstance(claims.get("sub"), str):
        return None
    return Hint(claims, client)
