"""Our own tokens when they come back, checked in the one shape we sign them
(``keys.SigningKey.sign_jwt``): a compact JWS whose header is ``alg``, ``kid`` and ``typ`` alone,
verified by ``cryptography`` on the already parsed public keys. joserfc's decoder, with the
header and key-set handling it needs for keys and tokens from outside, cost more per token than
the ES256 check itself; tokens from outside (clients' assertions, hints) still go through it.
"""
from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

#: The header fields of every JWS we sign (``SigningKey.sign_jwt``), and so all that one of our
#: tokens may carry: no ``crit``, ``jku``, ``jwk``, ``x5u``, ``b64`` or anything else to act on.
OUR_HEADER = frozenset(("alg", "kid", "typ"))
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def _base64url(segment: str) -> bytes:
    """One unpadded base64url segment (RFC 7515 §2), strictly: a character outside the alphabet,
    padding, or a length no encoding has is refused (Python's decoder would skip the first)."""
    if len(segment) % 4 == 1 or not _BASE64URL.fullmatch(segment):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def verify_compact(token: str, verifiers: Mapping[str, tuple[str, Any]]) -> tuple[dict, dict]:
    """(header, claims) of a compact JWS that one of our keys signed, as ``sign_jwt`` writes
    it; ValueError otherwise.

    ``verifiers``: kid -> (alg, public key) of the published keys. The header may hold only
    ``alg``, ``kid`` and ``typ``; the kid must name a published key and ``alg`` be that key's
    own algorithm (so no ``none``, no HS256 keyed with a public key, no key of one algorithm
    used with another); the signature is checked by ``cryptography`` (ES256 as R || S, RFC 7518
    §3.4; RS256 PKCS #1 v1.5) before the claims are read.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWS")
    header_b64, claims_b64, signature_b64 = parts
    header = _json(_base64url(header_b64))
    if not isinstance(header, dict) or not header.keys() <= OUR_HEADER:
        raise ValueError("header")
    kid = header.get("kid")
    entry = verifiers.get(kid) if isinstance(kid, str) else None
    if entry is None or header.get("alg") != entry[0]:
        raise ValueError("no such key")
    alg, public_key = entry
    claims_json, signature = _base64url(claims_b64), _base64url(signature_b64)
    signing_input = f"{header_b64}.{claims_b64}".encode("ascii")
    try:
        if alg == "ES256":
            if len(signature) != 64:
                raise ValueError("signature")
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            public_key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
        elif alg == "RS256":
            public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:  # pragma: no cover - ALGORITHMS holds the two above
            raise ValueError("algorithm")
    except InvalidSignature:
        raise ValueError("signature") from None
    claims = _json(claims_json)
    if not isinstance(claims, dict):
        raise ValueError("claims")
    return header, claims


def _json(raw: bytes) -> Any:
    """JSON from a token's segment; ValueError for anything that is not (nesting past the
    parser's recursion limit included)."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deep") from None
