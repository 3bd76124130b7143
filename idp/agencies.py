"""Registering agency services as OpenID Connect clients, with their metadata validated."""
from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from .config import is_loopback
from .extensions import db
from .models import Client, hash_client_secret, utcnow


class InvalidClientMetadata(ValueError):
    """A registration value is not acceptable; the message says which and why."""


def validate_redirect_uri(uri: str, field: str = "redirect_uri") -> str:
    """https only (http on loopback), absolute, no fragment, no wildcard (RFC 9700 §4.1.3)."""
    parts = urlsplit(uri)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidClientMetadata(f"{field} {uri!r}: must be an absolute https URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise InvalidClientMetadata(f"{field} {uri!r}: plain http is allowed only for loopback hosts")
    if parts.fragment or "#" in uri:
        raise InvalidClientMetadata(f"{field} {uri!r}: must not contain a fragment")
    if "*" in uri:
        raise InvalidClientMetadata(f"{field} {uri!r}: wildcards are not allowed")
    if parts.username or parts.password:
        raise InvalidClientMetadata(f"{field} {uri!r}: must not contain credentials")
    return uri


def register_client(name: str, redirect_uris: list[str], *, name_fa: str | None = None,
                    post_logout_redirect_uris: list[str] | None = None, scope: str = "openid profile",
                    public: bool = False, trusted: bool = False, client_id: str | None = None,
                    subject_type: str = "pairwise") -> tuple[Client, str | None]:
    """Create a client; returns it and its secret (None for a public client). The secret is shown once."""
    if not name.strip():
        raise InvalidClientMetadata("name: must not be empty")
    if not redirect_uris:
        raise InvalidClientMetadata("redirect_uri: at least one is required")
    redirect_uris = [validate_redirect_uri(u) for u in redirect_uris]
    post_logout = [validate_redirect_uri(u, "post_logout_redirect_uri") for u in post_logout_redirect_uris or []]
    scopes = scope.split()
    if "openid" not in scopes:
        scopes.insert(0, "openid")
    if subject_type == "pairwise" and len({urlsplit(u).hostname for u in redirect_uris}) > 1:
        raise InvalidClientMetadata("redirect_uri: for pairwise subjects all redirect URIs must share one host")
    client_id = client_id or secrets.token_urlsafe(18)
    if db.session.execute(db.select(Client.id).filter_by(client_id=client_id)).first():
        raise InvalidClientMetadata(f"client_id {client_id!r}: already registered")
    secret = None if public else secrets.token_urlsafe(32)
    client = Client(
        client_id=client_id, name=name.strip(), name_fa=name_fa, trusted=trusted,
        client_secret_hash=hash_client_secret(secret) if secret else None,
        client_metadata={
            "redirect_uris": redirect_uris,
            "post_logout_redirect_uris": post_logout,
            "scope": " ".join(dict.fromkeys(scopes)),
            "token_endpoint_auth_method": "none" if public else "client_secret_basic",
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "subject_type": subject_type,
        },
        created_at=utcnow(),
    )
    db.session.add(client)
    db.session.commit()
    return client, secret


def rotate_secret(client: Client) -> str:
    """Give a confidential client a new secret (the old one stops working at once)."""
    secret = secrets.token_urlsafe(32)
    client.client_secret_hash = hash_client_secret(secret)
    db.session.commit()
    return secret


def list_clients() -> list[Client]:
    """Every registered client, oldest first."""
    return list(db.session.execute(db.select(Client).order_by(Client.id)).scalars())
