"""Refresh tokens (rotation with reuse detection), and the revocation/introspection views of
our tokens (RFC 6749 §6 and §10.4, RFC 9700 §4.14, RFC 7009, RFC 7662).

A refresh token is stored only as a SHA-256 hash, in a family that starts with a code
exchange. Every use rotates it: one conditional UPDATE claims the presented token, so of two
parallel refreshes exactly one proceeds. A rotated token that comes back within a short grace
window gets a plain ``invalid_grant`` (a client's own race); later, it is reuse, and the whole
family and its single sign-on session are revoked.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749 import InvalidGrantError
from sqlalchemy import bindparam, insert, update

from ..citizens.directory import Citizen, citizen_columns
from ..platform import audit
from ..platform.database import db, execute, utcnow, write_now
from ..platform.settings import settings
from ..platform.store import store
from .models import Client, RefreshToken
from .verify import access_token_revoked


class Reused(InvalidGrantError):
    """A rotated refresh token came back after the grace window (RFC 9700 §4.14.2): its family
    is revoked, and the caller ends the session ``sid`` it was issued within."""

    def __init__(self, sid: str):
        super().__init__("The refresh token was already used.")
        self.sid = sid


def hash_token(token: str) -> str:
    """The stored form of a refresh token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_refresh_token() -> str:
    """An unguessable refresh token (256 bits)."""
    return secrets.token_urlsafe(32)


def allowed(client: Client, scope: str) -> bool:
    """Whether this grant gets a refresh token: offline_access was granted, or client policy."""
    return "offline_access" in (scope or "").split() or bool(client.client_metadata.get("refresh_tokens"))


# The statements of every token request, built once as Core statements on the table: the ORM's
# unit of work (flush) and its bulk UPDATE path cost more CPU than the round trips themselves.
_refresh = RefreshToken.__table__
_INSERT = insert(_refresh)
#: The claimed token's citizen, returned by the claim itself: what the new tokens need of them.
_CITIZEN = citizen_columns(_refresh.c.citizen_id)
_CLAIM = (update(_refresh)
          .where(_refresh.c.token_hash == bindparam("p_hash"), _refresh.c.client_id == bindparam("p_client"),
                 _refresh.c.rotated_at.is_(None), _refresh.c.revoked_at.is_(None))
          .values(rotated_at=bindparam("p_now", type_=_refresh.c.rotated_at.type))
          .returning(*_refresh.c, *_CITIZEN.values()))


def save(token: str, client: Client, principal, scope: str, family_id: str | None = None) -> None:
    """Store a new refresh token (a new family unless it rotates an old one), committing the
    transaction it is part of (a rotation's claim included; a new family's token stands alone)."""
    now = utcnow()
    write_now(_INSERT, {"token_hash": hash_token(token), "family_id": family_id or secrets.token_hex(16),
                        "client_id": client.client_id, "citizen_id": principal.citizen.id,
                        "sid": principal.sid, "scope": scope, "auth_time": principal.auth_time,
                        "method": principal.method, "created_at": now,
                        "expires_at": now + dt.timedelta(seconds=settings.tokens.refresh_token_ttl)})


def find(token: str) -> RefreshToken | None:
    """A refresh token by its value (whatever its state)."""
    if not isinstance(token, str) or len(token) > 256:
        return None
    return db.session.execute(db.select(RefreshToken).filter_by(token_hash=hash_token(token))).scalar_one_or_none()


def claim(token: str, client: Client) -> RefreshToken | None:
    """Take a refresh token for rotation; None when it is not valid for this client.

    One conditional UPDATE ... RETURNING claims the token and reads its citizen (``row.claimed_citizen``),
    and it is not committed here: the
    successor is saved (``save``) in the same transaction, so a request that fails in between
    (an error, the database gone) leaves the presented token as it was, and a parallel refresh
    of the same token waits for the row and then finds it claimed.

    Raises Reused (after revoking the family) when a rotated token comes back late.
    """
    if not isinstance(token, str) or len(token) > 256:
        return None
    now = utcnow()
    claimed = execute(_CLAIM, {"p_hash": hash_token(token), "p_client": client.client_id,
                                          "p_now": now}).mappings().one_or_none()
    if claimed is not None:
        # a read-only copy, in no session: the commit cannot expire it
        row = RefreshToken(**{k: v for k, v in claimed.items() if k not in _CITIZEN})
        if row.is_expired():
            db.session.rollback()
            return None
        row.claimed_citizen = Citizen(row.citizen_id, claimed["c_subject_key"], claimed["c_birth_date"])
        return row
    db.session.rollback()
    row = find(token)
    if row is None or row.client_id != client.client_id or row.revoked_at is not None or row.is_expired():
        return None
    if row.rotated_at is None:
        return None  # claimed and then given back by a request that failed: nothing to punish
    if (now - row.rotated_at).total_seconds() <= settings.tokens.refresh_grace_seconds:
        raise InvalidGrantError("The refresh token was just used; use the new one.")
    revoke_family(row.family_id, reason="refresh_token_reused")
    raise Reused(row.sid)


def keep_claim() -> None:
    """Commit a claim (``claim``) whose successor is not saved: the grant gave no new refresh token."""
    db.session.commit()


def revoke_family(family_id: str, reason: str = "revoked") -> int:
    """Revoke every token of a family (reuse detected, or a revocation request)."""
    result = db.session.execute(update(RefreshToken)
                                .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
                                .values(revoked_at=utcnow()))
    audit.record(reason, commit=False, family=family_id[:8])
    db.session.commit()
    return result.rowcount


def revoke_session(sid: str, commit: bool = True) -> int:
    """Revoke the refresh tokens issued within an SSO session (logout)."""
    result = db.session.execute(update(RefreshToken)
                                .where(RefreshToken.sid == sid, RefreshToken.revoked_at.is_(None))
                                .values(revoked_at=utcnow()))
    if commit:
        db.session.commit()
    return result.rowcount


# ---- the views of our tokens that revocation and introspection work on ----------------------

@dataclass
class AccessToken:
    """One of our JWT access tokens, already verified (signature, issuer)."""

    claims: dict[str, Any]

    def check_client(self, client) -> bool:
        return self.claims.get("client_id") == client.get_client_id()

    def get_scope(self) -> str:
        return self.claims.get("scope", "")

    def is_expired(self) -> bool:
        return self.claims.get("exp", 0) <= time.time()

    def is_revoked(self) -> bool:
        """Revoked, or its session ended (as userinfo refuses it)."""
        return access_token_revoked(self.claims)

    def revoke(self) -> None:
        store.revoke_access_token(self.claims["jti"], int(self.claims["exp"] - time.time()) + 1)


def introspection_of(token: AccessToken | RefreshToken) -> dict[str, Any]:
    """RFC 7662 §2.2 for an active token."""
    if isinstance(token, AccessToken):
        c = token.claims
        out = {"token_type": "Bearer"}
        for name in ("scope", "client_id", "sub", "exp", "iat", "iss", "aud", "jti", "auth_time", "acr", "amr", "act"):
            if name in c:
                out[name] = c[name]
        return out
    return {"token_type": "refresh_token", "scope": token.scope, "client_id": token.client_id,
            "exp": int(token.expires_at.timestamp()), "iat": int(token.created_at.timestamp()),
            "iss": settings.server.issuer}
