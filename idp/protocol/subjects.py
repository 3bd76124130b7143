"""Who an agency sees: the `sub` it is given (pairwise per sector, OIDC Core §8.1), the claims
it may receive for a scope (§5.4), and the opaque reference to the citizen that access tokens
carry for the provider's own use.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..citizens import counting
from ..citizens.directory import Citizen, Profile
from ..platform.database import utcnow
from ..platform.settings import settings
from .models import Client

#: The age the ``age`` scope's one claim, ``age_over_18``, is about (its name fixes it; the
#: provider's own adult age for counting, ``[stats] adult_age``, may differ).
AGE_OVER = 18


def sector_of(client: Client) -> str:
    """The sector of a client (OIDC Core §8.1): its configured sector or its redirect URIs' host."""
    meta = client.client_metadata
    if meta.get("sector_identifier"):
        return meta["sector_identifier"]
    hosts = sorted({urlsplit(u).hostname or "" for u in client.redirect_uris})
    return hosts[0] if hosts else client.client_id


def subject_for(citizen: Citizen | Profile, client: Client) -> str:
    """The `sub` this client sees: pairwise per sector by default, so agencies cannot join records."""
    if client.client_metadata.get("subject_type") == "public":
        return citizen.subject_key
    mac = hmac.new(settings.derived_key("pairwise-sub"),
                   f"{sector_of(client)}\x00{citizen.subject_key}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def claims_for(person: Profile, client: Client, scope: str) -> dict[str, Any]:
    """The claims released to a client for a scope (OIDC Core §5.4)."""
    scopes = set(scope.split())
    info: dict[str, Any] = {"sub": subject_for(person, client)}
    if "profile" in scopes:
        for claim, value in (("given_name", person.given_name), ("family_name", person.family_name)):
            if value:
                info[claim] = value
        if person.given_name or person.family_name:
            info["name"] = " ".join(p for p in (person.given_name, person.family_name) if p)
        info["birthdate"] = person.birth_date.isoformat()
        info["locale"] = "fa-IR"
    if "phone" in scopes:
        info["phone_number"] = person.mobile
        info["phone_number_verified"] = True
    if "national_id" in scopes and client.client_metadata.get("allow_national_id"):
        info["national_id"] = person.national_id
    if "age" in scopes:
        info["age_over_18"] = counting.age_on(person.birth_date, counting.local_date(utcnow())) >= AGE_OVER
    return info


# ---- an opaque reference to the citizen inside access tokens ---------------------------------
# Agencies see a pairwise `sub`, which cannot be mapped back to a citizen without a table. The
# access token therefore carries the citizen's row id encrypted (AES-GCM), opaque to agencies.

def _ref_cipher() -> AESGCM:
    return AESGCM(settings.derived_key("access-token-ref"))


def seal_ref(citizen_id: int) -> str:
    """Encrypt a citizen id for an access token."""
    nonce = os.urandom(12)
    blob = nonce + _ref_cipher().encrypt(nonce, citizen_id.to_bytes(8, "big"), b"idp-ref")
    return base64.urlsafe_b64encode(blob).rstrip(b"=").decode()


def open_ref(ref: str) -> int | None:
    """The citizen id inside a reference, or None when it was not made by this provider."""
    try:
        blob = base64.urlsafe_b64decode(ref + "=" * (-len(ref) % 4))
        return int.from_bytes(_ref_cipher().decrypt(blob[:12], blob[12:], b"idp-ref"), "big")
    except Exception:  # noqa: BLE001 - any malformed or forged reference is simply not ours
        return None
