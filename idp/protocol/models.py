"""The tables the protocol package owns: agency clients, refresh tokens, consents, the
back-channel logout queue, and the delegations between agencies with their daily counts."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ..platform.database import BigId, UTCDateTime, db, utcnow

SECRET_METHODS = ("client_secret_basic", "client_secret_post")


def hash_client_secret(secret: str) -> str:
    """A client secret's stored form. Secrets are 256-bit random values, so one SHA-256 suffices."""
    return "sha256$" + hashlib.sha256(secret.encode("utf-8")).hexdigest()


class Client(db.Model):
    """An agency service registered as an OpenID Connect client."""

    __tablename__ = "clients"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    client_secret_hash: Mapped[str | None] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(200))
    name_fa: Mapped[str | None] = mapped_column(String(200))
    # redirect_uris, post_logout_redirect_uris, scope, token_endpoint_auth_method,
    # grant_types, response_types, subject_type, sector_identifier, backchannel_logout_uri, ...
    client_metadata: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    trusted: Mapped[bool] = mapped_column(Boolean, default=False)
    #: a guardian may act here for a linked minor (the chooser after login; tokens with `act`)
    accepts_guardians: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    # --- Authlib's ClientMixin (RFC 6749), tightened -------------------------------------
    def get_client_id(self) -> str:
        return self.client_id

    @property
    def redirect_uris(self) -> list[str]:
        return list(self.client_metadata.get("redirect_uris", []))

    @property
    def post_logout_redirect_uris(self) -> list[str]:
        return list(self.client_metadata.get("post_logout_redirect_uris", []))

    @property
    def token_endpoint_auth_method(self) -> str:
        return self.client_metadata.get("token_endpoint_auth_method", "client_secret_basic")

    @property
    def scope(self) -> str:
        return self.client_metadata.get("scope", "openid")

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"

    def get_default_redirect_uri(self) -> str | None:
        """OIDC requires redirect_uri; RFC 6749 allows the only registered one to be implied."""
        uris = self.redirect_uris
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        """The requested scopes this client may have (unknown or disallowed ones are dropped)."""
        if not scope:
            return ""
        allowed = set(self.scope.split())
        if not self.client_metadata.get("allow_national_id"):
            allowed.discard("national_id")  # only for agencies the law allows it
        return " ".join(s for s in dict.fromkeys(scope.split()) if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        """Exact string match against a registered URI (RFC 9700 §4.1.3)."""
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str | None) -> bool:
        """Constant-time comparison of hashes; a public client has no secret to match."""
        if self.client_secret_hash is None or not isinstance(client_secret, str):
            return False
        return hmac.compare_digest(self.client_secret_hash, hash_client_secret(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        """A client authenticates only with its registered method; the two secret methods are
        equally strong, so a client with a secret may send it either way (RFC 6749 §2.3.1)."""
        registered = self.token_endpoint_auth_method
        if registered in SECRET_METHODS:
            return method in SECRET_METHODS
        return method == registered

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        """authorization_code always; refresh_token for clients that may keep access (offline_access
        in their registered scope, or a refresh-token policy)."""
        if grant_type == "refresh_token":
            meta = self.client_metadata
            return ("refresh_token" in meta.get("grant_types", []) or "offline_access" in self.scope.split()
                    or bool(meta.get("refresh_tokens")))
        return grant_type in self.client_metadata.get("grant_types", ["authorization_code"])

    @property
    def is_enabled(self) -> bool:
        return self.disabled_at is None


class RefreshToken(db.Model):
    """A refresh token, stored hashed. Rotation keeps a family: a rotated token that comes back
    (after a short grace for parallel requests) revokes the whole family and its session."""

    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[str] = mapped_column(String(32))
    client_id: Mapped[str] = mapped_column(String(64))
    citizen_id: Mapped[int] = mapped_column(BigId, ForeignKey("citizens.id"))
    sid: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(500))
    auth_time: Mapped[int] = mapped_column(BigInteger)
    method: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    rotated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_refresh_tokens_family", "family_id"), Index("ix_refresh_tokens_sid", "sid"),
                      Index("ix_refresh_tokens_citizen", "citizen_id"), Index("ix_refresh_tokens_expires", "expires_at"))

    # --- Authlib's TokenMixin, for revocation and introspection ------------------------------
    def check_client(self, client) -> bool:
        return self.client_id == client.get_client_id()

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return max(0, int((self.expires_at - utcnow()).total_seconds()))

    def is_expired(self) -> bool:
        return self.expires_at <= utcnow()

    def is_revoked(self) -> bool:
        return self.revoked_at is not None or self.rotated_at is not None


class Consent(db.Model):
    """What a citizen allowed a (non-trusted) client to receive, remembered per scope set."""

    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("citizen_id", "client_id", name="uq_consents_citizen_client"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    citizen_id: Mapped[int] = mapped_column(BigId, ForeignKey("citizens.id"))
    client_id: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(500))
    granted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class LogoutDelivery(db.Model):
    """A back-channel logout owed to a client (OIDC Back-Channel Logout 1.0), kept until
    delivered or given up, so retries survive a restart."""

    __tablename__ = "logout_deliveries"
    __table_args__ = (Index("ix_logout_deliveries_due", "delivered_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    uri: Mapped[str] = mapped_column(String(2000))
    sub: Mapped[str] = mapped_column(String(128))
    sid: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    given_up_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(200))


class Delegation(db.Model):
    """An operator's permission for agency ``from_client_id`` to exchange a citizen's access
    token for one meant for agency ``to_client_id`` (RFC 8693), with at most ``scope``."""

    __tablename__ = "delegations"
    __table_args__ = (UniqueConstraint("from_client_id", "to_client_id", name="uq_delegations_pair"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    from_client_id: Mapped[str] = mapped_column(String(64))
    to_client_id: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ExchangeDay(db.Model):
    """Token exchanges of one local day (``[stats] timezone``) from one agency to another:
    issued and refused, counted in the exchange's own transaction (``idp stats --by agency-pair``).
    ``to_client_id`` is ``-`` when the audience named no registered agency."""

    __tablename__ = "exchange_days"

    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    from_client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    to_client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    issued: Mapped[int] = mapped_column(BigInteger, default=0)
    refused: Mapped[int] = mapped_column(BigInteger, default=0)
