"""Registering agency services as OpenID Connect clients, with their metadata validated."""
from __future__ import annotations

import json
import logging
import re
import secrets
from typing import Any
from urllib.parse import urlsplit

import redis

from ..platform.database import db, utcnow
from ..platform.settings import is_loopback, settings
from .client_auth import ClientKeysError, public_key_set
from .clients import clients_changed
from .discovery import AUTH_METHODS
from .models import SECRET_METHODS, Client, hash_client_secret

log = logging.getLogger(__name__)

SUBJECT_TYPES = ("pairwise", "public")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


class InvalidClientMetadata(ValueError):
    """A registration value is not acceptable; the message says which and why."""


class ClientNotFound(InvalidClientMetadata):
    """No client has this client_id."""


def _announce_change() -> None:
    """Renew the clients version so that every node reads the changed client again at once."""
    if settings.store.url == "memory://" and not settings.database.url.startswith("sqlite"):
        log.warning("this process has no shared store (store.url = memory://): providers that use "
                    "Redis see this client change within %d seconds", 300)
    try:
        clients_changed()
    except redis.RedisError as exc:
        log.warning("the store is unreachable (%s): running providers see this client change "
                    "within %d seconds", exc, 300)


def validate_redirect_uri(uri: str, field: str = "redirect_uri") -> str:
    """https only (http on loopback), absolute, no fragment, no wildcard, no credentials (RFC 9700 §4.1.3)."""
    if not isinstance(uri, str) or len(uri) > 2000 or any(c.isspace() or not c.isprintable() for c in uri):
        raise InvalidClientMetadata(f"{field} {uri!r}: must be one absolute URL without spaces or control characters")
    parts = urlsplit(uri)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidClientMetadata(f"{field} {uri!r}: must be an absolute https URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise InvalidClientMetadata(f"{field} {uri!r}: plain http is allowed only for loopback hosts")
    if parts.fragment or "#" in uri:
        raise InvalidClientMetadata(f"{field} {uri!r}: must not contain a fragment")
    if "*" in uri:
        raise InvalidClientMetadata(f"{field} {uri!r}: wildcards are not allowed")
    if parts.username or parts.password or "@" in parts.netloc:
        raise InvalidClientMetadata(f"{field} {uri!r}: must not contain credentials")
    try:
        parts.port
    except ValueError:
        raise InvalidClientMetadata(f"{field} {uri!r}: bad port") from None
    return uri


def validate_sector(sector: str) -> str:
    """A sector identifier host (OIDC Core §8.1): a bare DNS name such as ``tax.gov.ir``."""
    host = sector.strip().lower().rstrip(".")
    if not _HOSTNAME.match(host):
        raise InvalidClientMetadata(f"sector {sector!r}: must be a host name such as tax.gov.ir (no scheme, no path)")
    return host


def load_public_jwks(jwks: Any) -> dict[str, Any]:
    """A client's public JWKS as registered: RSA or P-256 keys, no private or symmetric key."""
    try:
        keys = public_key_set(jwks)
    except ClientKeysError as exc:
        raise InvalidClientMetadata(f"jwks: {exc}") from None
    return {"keys": [k.as_dict(private=False) for k in keys]}


def read_jwks_file(path: str) -> dict[str, Any]:
    """The public JWKS in a file (``--jwks FILE``)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise InvalidClientMetadata(f"jwks {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise InvalidClientMetadata(f"jwks {path}: not JSON ({exc})") from None
    return load_public_jwks(data)


def register_client(name: str, redirect_uris: list[str], *, name_fa: str | None = None,
                    post_logout_redirect_uris: list[str] | None = None, scope: str = "openid profile",
                    public: bool = False, trusted: bool = False, client_id: str | None = None,
                    subject_type: str = "pairwise", auth_method: str | None = None,
                    jwks: dict[str, Any] | None = None, jwks_uri: str | None = None,
                    backchannel_logout_uri: str | None = None, sector: str | None = None,
                    allow_national_id: bool = False, accepts_guardians: bool = False) -> tuple[Client, str | None]:
    """Create a client; returns it and its secret (None for a public or private_key_jwt client).
    The secret is shown once. ``public`` is a synonym of ``auth_method="none"``. ``accepts_guardians``:
    a guardian may act here for a linked minor (their tokens then carry ``act``)."""
    if not name.strip():
        raise InvalidClientMetadata("name: must not be empty")
    if public and auth_method not in (None, "none"):
        raise InvalidClientMetadata(f"--public means auth method none, not {auth_method}")
    auth_method = "none" if public else (auth_method or "client_secret_basic")
    if auth_method not in AUTH_METHODS:
        raise InvalidClientMetadata(f"auth_method {auth_method!r}: must be one of {', '.join(AUTH_METHODS)}")
    if subject_type not in SUBJECT_TYPES:
        raise InvalidClientMetadata(f"subject_type {subject_type!r}: must be pairwise or public")
    if not redirect_uris:
        raise InvalidClientMetadata("redirect_uri: at least one is required")
    redirect_uris = [validate_redirect_uri(u) for u in redirect_uris]
    post_logout = [validate_redirect_uri(u, "post_logout_redirect_uri") for u in post_logout_redirect_uris or []]
    scopes = scope.split()
    if "openid" not in scopes:
        scopes.insert(0, "openid")
    if allow_national_id and "national_id" not in scopes:
        scopes.append("national_id")
    if sector is not None:
        if subject_type != "pairwise":
            raise InvalidClientMetadata("sector: only pairwise subjects have a sector")
        sector = validate_sector(sector)
    elif subject_type == "pairwise" and len({urlsplit(u).hostname for u in redirect_uris}) > 1:
        raise InvalidClientMetadata("redirect_uri: the redirect URIs are on several hosts; pairwise subjects then "
                                    "need a sector (--sector HOST)")
    if (jwks is not None or jwks_uri) and auth_method != "private_key_jwt":
        raise InvalidClientMetadata("jwks: keys are registered only with --auth-method private_key_jwt")
    if auth_method == "private_key_jwt" and (jwks is None) == (not jwks_uri):
        raise InvalidClientMetadata("private_key_jwt: give the client's public keys, either --jwks-uri or --jwks "
                                    "(one of them)")
    if jwks is not None:
        jwks = load_public_jwks(jwks)
    if jwks_uri:
        validate_redirect_uri(jwks_uri, "jwks_uri")
    if backchannel_logout_uri:
        validate_redirect_uri(backchannel_logout_uri, "backchannel_logout_uri")
    if client_id is not None and not re.fullmatch(r"[A-Za-z0-9._~][A-Za-z0-9._~-]{0,63}", client_id):
        raise InvalidClientMetadata(f"client_id {client_id!r}: 1-64 characters A-Z a-z 0-9 . _ ~ -, "
                                    "not starting with -")
    # Random ids never start with "-", which command lines would take for an option.
    client_id = client_id or "c" + secrets.token_urlsafe(18)[1:]
    if db.session.execute(db.select(Client.id).filter_by(client_id=client_id)).first():
        raise InvalidClientMetadata(f"client_id {client_id!r}: already registered")
    secret = secrets.token_urlsafe(32) if auth_method in SECRET_METHODS else None
    metadata: dict[str, Any] = {
        "redirect_uris": redirect_uris,
        "post_logout_redirect_uris": post_logout,
        "scope": " ".join(dict.fromkeys(scopes)),
        "token_endpoint_auth_method": auth_method,
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "subject_type": subject_type,
    }
    if jwks is not None:
        metadata["jwks"] = jwks
    if jwks_uri:
        metadata["jwks_uri"] = jwks_uri
    if backchannel_logout_uri:
        metadata["backchannel_logout_uri"] = backchannel_logout_uri
        metadata["backchannel_logout_session_required"] = True
    if sector:
        metadata["sector_identifier"] = sector
    if allow_national_id:
        metadata["allow_national_id"] = True
    client = Client(
        client_id=client_id, name=name.strip(), name_fa=name_fa, trusted=trusted,
        accepts_guardians=bool(accepts_guardians),
        client_secret_hash=hash_client_secret(secret) if secret else None,
        client_metadata=metadata,
        created_at=utcnow(),
    )
    db.session.add(client)
    db.session.commit()
    _announce_change()
    return client, secret


def rotate_secret(client: Client) -> str:
    """Give a client that authenticates with a secret a new one (the old one stops working at once)."""
    if client.token_endpoint_auth_method not in SECRET_METHODS:
        raise InvalidClientMetadata(f"client {client.client_id}: authenticates with "
                                    f"{client.token_endpoint_auth_method}, not a secret; there is no secret to rotate")
    secret = secrets.token_urlsafe(32)
    client.client_secret_hash = hash_client_secret(secret)
    db.session.commit()
    _announce_change()
    return secret


def list_clients() -> list[Client]:
    """Every registered client, oldest first."""
    return list(db.session.execute(db.select(Client).order_by(Client.id)).scalars())


def get_client(client_id: str) -> Client:
    """A client by client_id, enabled or not."""
    client = db.session.execute(db.select(Client).filter_by(client_id=client_id)).scalar_one_or_none()
    if client is None:
        raise ClientNotFound(f"client {client_id!r}: no such client")
    return client


def set_enabled(client: Client, enabled: bool) -> bool:
    """Enable or disable a client; False when it already was. A disabled client is unknown to the
    protocol endpoints (no login, no token, no userinfo) until it is enabled again."""
    if client.is_enabled == enabled:
        return False
    client.disabled_at = None if enabled else utcnow()
    db.session.commit()
    _announce_change()
    return True


def describe_client(client: Client) -> dict[str, Any]:
    """What an operator may see of a client: its metadata, never its secret hash."""
    return {"client_id": client.client_id, "name": client.name, "name_fa": client.name_fa,
            "trusted": client.trusted, "accepts_guardians": bool(client.accepts_guardians),
            "has_secret": client.client_secret_hash is not None,
            "created_at": client.created_at.isoformat(timespec="seconds") if client.created_at else None,
            "disabled_at": client.disabled_at.isoformat(timespec="seconds") if client.disabled_at else None,
            "token_endpoint_auth_method": client.token_endpoint_auth_method,
            "metadata": dict(client.client_metadata)}
