"""``private_key_jwt`` client authentication (RFC 7523 §2.2 and §3, OIDC Core §9).

An agency proves who it is at the token, revocation and introspection endpoints with a short
JWT signed by its own private key, instead of a shared secret. The checks, in order:

- ``client_assertion_type`` is the JWT bearer type and the assertion is not oversized;
- the header's ``alg`` is RS256 or ES256 (never ``none``, never HMAC: an HS256 "signature"
  made with the client's *public* key is the classic algorithm-confusion forgery), no ``crit``;
- ``sub`` names an enabled client registered for ``private_key_jwt`` (a client registered for
  a secret cannot use an assertion, and the other way round: ``Client.check_endpoint_auth_method``);
- the signature verifies with a key from the client's registered ``jwks`` (inline) or
  ``jwks_uri`` (fetched, cached for ``JWKS_CACHE_SECONDS``, fetched again on an unknown ``kid``
  at most every ``JWKS_REFETCH_SECONDS``, so forged ``kid`` values cannot make us hammer it);
- ``iss`` == ``sub`` == client_id, ``aud`` names our issuer or our token (or revocation,
  introspection) endpoint, ``exp`` is present and at most ``MAX_LIFETIME`` seconds ahead,
  ``nbf``/``iat`` are not in the future;
- the ``jti`` was never seen before (the store keeps it, atomically, until the assertion expires).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
from authlib.oauth2.rfc6749 import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7523.client import ASSERTION_TYPE
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from ..platform.settings import settings
from ..platform.store import store
from .discovery import endpoint

log = logging.getLogger("idp.client_auth")

METHOD = "private_key_jwt"
#: Algorithms a client may sign its assertion with, and the key type each needs.
ALGORITHMS: dict[str, type] = {"RS256": RSAKey, "ES256": ECKey}
#: An assertion may not live longer than this (its exp is at most this far ahead).
MAX_LIFETIME = 3600  # Authlib's own client signs exp = iat + 3600; the jti is single use anyway
#: Tolerated clock difference between the client and us, in seconds.
LEEWAY = 30
#: How long a JWKS fetched from a client's jwks_uri is used before it is fetched again.
JWKS_CACHE_SECONDS = 300
#: An unknown kid fetches the client's JWKS again, but no more often than this.
JWKS_REFETCH_SECONDS = 60
MAX_ASSERTION_LENGTH = 8 * 1024
MAX_JWKS_BYTES = 64 * 1024
MAX_JTI_LENGTH = 256
#: JWK members that only a private or symmetric key has; none may be registered or published.
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


class ClientKeysError(ValueError):
    """A client's JWKS is unusable; the message says why (ASCII English)."""


def public_key_set(jwks: Any) -> KeySet:
    """Parse a client's public JWKS: RSA or P-256 EC signing keys only, never private members.

    Used for registration (where a private key is refused) and for every fetched jwks_uri.
    """
    if isinstance(jwks, dict) and "keys" not in jwks and "kty" in jwks:
        jwks = {"keys": [jwks]}
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise ClientKeysError('a JWKS is a JSON object {"keys": [...]} with at least one key')
    kids = []
    for jwk in jwks["keys"]:
        if not isinstance(jwk, dict):
            raise ClientKeysError("every key must be a JSON object")
        if any(m in jwk for m in PRIVATE_MEMBERS):
            raise ClientKeysError(f"key {jwk.get('kid', '?')!r} is a private or symmetric key; "
                                  "register only public keys")
        if jwk.get("kty") not in ("RSA", "EC"):
            raise ClientKeysError(f"key {jwk.get('kid', '?')!r}: only RSA and EC (P-256) keys are supported")
        if jwk.get("kty") == "EC" and jwk.get("crv") != "P-256":
            raise ClientKeysError(f"key {jwk.get('kid', '?')!r}: only the P-256 curve is supported")
        if jwk.get("use") not in (None, "sig"):
            raise ClientKeysError(f"key {jwk.get('kid', '?')!r}: use must be sig")
        if jwk.get("alg") not in (None, *ALGORITHMS):
            raise ClientKeysError(f"key {jwk.get('kid', '?')!r}: alg must be RS256 or ES256")
        kids.append(jwk.get("kid"))
    if len(kids) > 1 and (None in kids or len(set(kids)) != len(kids)):
        raise ClientKeysError("with several keys every key needs its own kid")
    try:
        return KeySet.import_key_set({"keys": jwks["keys"]})
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ClientKeysError(f"a key cannot be read: {exc}") from None


def select_key(keys: KeySet, alg: str, kid: str | None):
    """The key that may check an assertion with this alg and kid; None when there is none.

    Without a kid we only take a key when exactly one fits (OIDC Core §10.1)."""
    wanted = ALGORITHMS[alg]
    candidates = [k for k in keys if isinstance(k, wanted) and k.get("use") in (None, "sig")
                  and k.get("alg") in (None, alg) and (alg != "ES256" or k.get("crv") == "P-256")]
    if kid is None:
        return candidates[0] if len(candidates) == 1 else None
    return next((k for k in candidates if k.kid == kid), None)


# ---- keys published at a client's jwks_uri -----------------------------------------------------

@dataclass
class _Cached:
    keys: KeySet | None
    fetched_at: float  # the last successful fetch
    attempted_at: float  # the last fetch, successful or not
    refetched_at: float  # the last fetch asked for by an unknown kid


class RemoteJWKS:
    """Clients' JWKS fetched from their jwks_uri, cached per URI, in this process."""

    def __init__(self, ttl: float = JWKS_CACHE_SECONDS, min_refetch: float = JWKS_REFETCH_SECONDS,
                 clock=time.monotonic, timeout: float = 5.0):
        self.ttl, self.min_refetch, self.clock, self.timeout = ttl, min_refetch, clock, timeout
        self._lock = threading.Lock()
        self._cache: dict[str, _Cached] = {}

    def get(self, uri: str, refresh: bool = False) -> KeySet | None:
        """The keys at ``uri``, cached for ``ttl`` seconds. ``refresh`` (an unknown kid) asks for a
        new fetch, granted at most every ``min_refetch`` seconds; a failed fetch is retried no
        sooner either, and keeps the keys fetched before."""
        with self._lock:
            now = self.clock()
            entry = self._cache.get(uri)
            if entry is None:
                entry = self._cache[uri] = _Cached(None, -1e18, now, -1e18)
            elif refresh:
                if now - entry.refetched_at < self.min_refetch:
                    return entry.keys
                entry.refetched_at = entry.attempted_at = now
            elif entry.keys is None or now - entry.fetched_at >= self.ttl:
                if now - entry.attempted_at < self.min_refetch:
                    return entry.keys
                entry.attempted_at = now
            else:
                return entry.keys
        keys = self._fetch(uri)  # outside the lock: other requests use the cached keys meanwhile
        with self._lock:
            if keys is not None:
                entry.keys, entry.fetched_at = keys, self.clock()
            return entry.keys

    def _fetch(self, uri: str) -> KeySet | None:
        try:
            with requests.get(uri, timeout=self.timeout, allow_redirects=False, stream=True,
                              headers={"Accept": "application/jwk-set+json, application/json"}) as resp:
                if resp.status_code != 200:
                    raise ClientKeysError(f"HTTP {resp.status_code}")
                body = resp.raw.read(MAX_JWKS_BYTES + 1, decode_content=True)
            if len(body) > MAX_JWKS_BYTES:
                raise ClientKeysError("JWKS too large")
            return public_key_set(json.loads(body))
        except (requests.RequestException, ValueError, OSError) as exc:
            log.warning("jwks_uri %s: cannot fetch the client's keys: %s", uri, exc)
            return None

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()


remote_jwks = RemoteJWKS()


# ---- the authentication method -----------------------------------------------------------------

def _fail(description: str) -> InvalidClientError:
    return InvalidClientError(description=description)


class PrivateKeyJWT(JWTBearerClientAssertion):
    """Authlib's RFC 7523 client assertion, tightened as the module docstring says."""

    CLIENT_AUTH_METHOD = METHOD

    def __init__(self):
        super().__init__(validate_jti=True, leeway=LEEWAY)

    def __call__(self, query_client, request):
        data = request.form
        assertion = data.get("client_assertion")
        if data.get("client_assertion_type") != ASSERTION_TYPE or not assertion:
            return None
        if not isinstance(assertion, str) or len(assertion) > MAX_ASSERTION_LENGTH:
            raise _fail("The client assertion is too large.")
        headers, claims = self.extract_assertion(assertion)
        alg = headers.get("alg")
        if alg not in ALGORITHMS:
            raise _fail("The client assertion must be signed with RS256 or ES256.")
        if "crit" in headers:
            raise _fail("The client assertion has an unsupported critical header.")
        client_id = claims.get("sub")
        if not isinstance(client_id, str) or not client_id:
            raise _fail("Missing or invalid claim: 'sub'.")
        if data.get("client_id") not in (None, client_id):
            raise _fail("client_id does not match the client assertion.")
        client = query_client(client_id)
        if not client:
            raise _fail("The client does not exist on this server.")
        if not client.check_endpoint_auth_method(METHOD, "token"):
            raise _fail(f"The client cannot authenticate with method: {METHOD}")
        key = self.key_for(client, alg, headers.get("kid"))
        try:
            token = jwt.decode(assertion, key, algorithms=[alg])
        except (JoseError, ValueError) as exc:
            log.debug("client assertion of %s refused: %r", client_id, exc)
            raise _fail("The client assertion signature is invalid.") from None
        request.client = client
        self.verify_claims(token.claims)
        return client

    def key_for(self, client, alg: str, kid: str | None):
        """The client's key for this assertion: inline jwks, or jwks_uri (refetched once on a miss)."""
        meta = client.client_metadata
        if meta.get("jwks"):
            try:
                keys = _inline_keys(client.client_id, meta["jwks"])
            except ClientKeysError:
                raise _fail("The client's registered keys are unusable.") from None
            key = select_key(keys, alg, kid if isinstance(kid, str) else None)
        elif meta.get("jwks_uri"):
            keys = remote_jwks.get(meta["jwks_uri"])
            key = select_key(keys, alg, kid if isinstance(kid, str) else None) if keys is not None else None
            if key is None and keys is not None:  # an unknown kid: the client may have rotated
                keys = remote_jwks.get(meta["jwks_uri"], refresh=True)
                key = select_key(keys, alg, kid if isinstance(kid, str) else None) if keys is not None else None
        else:
            raise _fail("The client has no registered keys.")
        if key is None:
            raise _fail("No registered key of the client matches the client assertion.")
        return key

    def resolve_client_public_key(self, client):
        """Authlib's hook (unused by ``__call__`` above, which needs the header's kid)."""
        meta = client.client_metadata
        if meta.get("jwks"):
            return _inline_keys(client.client_id, meta["jwks"])
        return remote_jwks.get(meta.get("jwks_uri", ""))

    def get_audiences(self) -> list[str]:
        """RFC 7523 §3: our token endpoint URL, or our issuer identifier; and, since clients such
        as Authlib's put the URL they post to there, our revocation and introspection endpoints."""
        return [endpoint("/token"), endpoint("/revoke"), endpoint("/introspect"), settings.server.issuer]

    def verify_claims(self, claims: dict[str, Any]) -> None:
        """iss == sub == client_id, aud, exp (soon), nbf/iat, then the jti, once."""
        client_id = claims["sub"]
        registry = jwt.JWTClaimsRegistry(
            leeway=self.leeway,
            iss={"essential": True, "value": client_id},
            sub={"essential": True, "value": client_id},
            aud={"essential": True, "values": self.get_audiences()},
            exp={"essential": True},
            jti={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            log.debug("client assertion of %s refused: %r", client_id, exc)
            raise _fail(_describe(exc)) from None
        if claims["exp"] > time.time() + MAX_LIFETIME + self.leeway:
            raise _fail(f"The client assertion must expire within {MAX_LIFETIME} seconds.")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
            raise _fail("Invalid claim: 'jti'.")
        if not self.validate_jti(claims, jti):
            raise _fail("The client assertion was already used.")

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        """Single use: the store remembers the jti until the assertion could no longer pass."""
        ttl = int(claims["exp"] - time.time()) + self.leeway
        return store.use_client_assertion(claims["sub"], jti, ttl)


def _describe(exc: JoseError) -> str:
    """An ASCII description of a claim error (AUTHLIB-NOTES §7)."""
    claim = getattr(exc, "claim", None)
    if exc.__class__.__name__ == "ExpiredTokenError":
        return "The client assertion has expired."
    if exc.__class__.__name__ == "MissingClaimError":
        return f"Missing claim: '{claim}'." if claim else "Missing claim."
    return f"Invalid claim: '{claim}'." if claim else "Invalid client assertion."


_inline_lock = threading.Lock()
_inline_cache: dict[str, tuple[str, KeySet]] = {}


def _inline_keys(client_id: str, jwks: Any) -> KeySet:
    """A client's inline JWKS, parsed once per registered value."""
    raw = json.dumps(jwks, sort_keys=True)
    with _inline_lock:
        hit = _inline_cache.get(client_id)
        if hit and hit[0] == raw:
            return hit[1]
    keys = public_key_set(jwks)
    with _inline_lock:
        _inline_cache[client_id] = (raw, keys)
    return keys

