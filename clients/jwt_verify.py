"""Offline verification of RFC 9068 JWT access tokens, for agency APIs.

An agency API receives ``Authorization: Bearer <token>`` and must decide,
without calling the identity provider, whether the token is genuine and meant
for it. RFC 9068 §4 lists the checks; this module performs them with joserfc:

- the signature, with a key from the provider's JWKS, and only RS256 or
  ES256 (never ``none``, never an HMAC algorithm: an HMAC "signed" with the
  public key would otherwise pass, the classic algorithm-confusion attack);
- the ``typ`` header is ``at+jwt`` (§2.1), so an ID token, which is signed
  by the same keys, cannot be replayed as an access token;
- ``iss``, ``aud`` (when configured), ``exp``/``nbf``/``iat`` with a small
  leeway, and the claims §2.2 requires;
- ``act`` (RFC 8693 §4.1), when present, is a well-formed chain: the token was
  obtained by token exchange, and :func:`actors` names the agencies that acted
  for the citizen, the latest first.

The JWKS is cached. An unknown ``kid`` (the provider rotated its keys) makes
the verifier fetch the JWKS again, but no more often than
``min_refetch_interval`` seconds, so a flood of forged tokens with random
``kid`` values cannot turn the API into a tool that hammers the provider.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import requests
from joserfc import jws, jwt
from joserfc.errors import ExpiredTokenError, InvalidClaimError, JoseError, MissingClaimError
from joserfc.jwk import ECKey, Key, KeySet, RSAKey

#: RFC 9068 §4: the resource server MUST reject "none"; we also refuse HMAC.
ALLOWED_ALGORITHMS = {"RS256": RSAKey, "ES256": ECKey}
#: RFC 9068 §2.1: "at+jwt"; media types may carry the "application/" prefix.
ACCEPTED_TYPES = {"at+jwt", "application/at+jwt"}
#: RFC 9068 §2.2: claims every access token carries.
REQUIRED_CLAIMS = ("iss", "exp", "aud", "sub", "client_id", "iat", "jti")
#: No legitimate access token comes near this; refuse before parsing.
MAX_TOKEN_LENGTH = 16 * 1024
#: The longest ``act`` chain accepted (the provider issues at most four).
MAX_ACTORS = 8


class InvalidAccessToken(Exception):
    """The token must not be accepted; ``reason`` says why (ASCII English)."""

    def __init__(self, reason: str):
        """Keep the reason for logs and for the RFC 6750 error_description."""
        super().__init__(reason)
        self.reason = reason


class SigningKeysUnavailable(InvalidAccessToken):
    """The provider's JWKS could not be fetched, so no token can be checked.

    It is a subclass so that callers who only catch InvalidAccessToken still
    refuse the token; an API may map it to 503 rather than 401.
    """


class AccessTokenVerifier:
    """Verify RFC 9068 access tokens issued by one identity provider."""

    def __init__(
        self,
        issuer: str,
        audience: str | None = None,
        jwks_uri: str | None = None,
        min_refetch_interval: float = 30.0,
        http_get: Callable[..., Any] = requests.get,
        *,
        leeway: int = 30,
        jwks_max_age: float = 3600.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        """Configure the verifier; nothing is fetched until the first token.

        ``jwks_max_age`` bounds how long a cached JWKS is trusted, so a key
        the provider withdrew stops being accepted. ``clock`` is monotonic
        time, injectable so tests control the refetch interval.
        """
        self.issuer = issuer
        self.audience = audience
        self.jwks_uri = jwks_uri
        self.min_refetch_interval = min_refetch_interval
        self.leeway = leeway
        self.jwks_max_age = jwks_max_age
        self.timeout = timeout
        self._http_get = http_get
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._keys_fetched_at = 0.0
        self._last_refetch: float | None = None

    def verify(self, token: str) -> dict[str, Any]:
        """Return the claims of a valid access token, or raise InvalidAccessToken."""
        header = self._read_header(token)
        key = self._key_for(header)
        try:
            decoded = jwt.decode(
                token,
                key,
                registry=jws.JWSRegistry(algorithms=[header["alg"]], strict_check_header=False),
            )
        except JoseError as error:
            raise InvalidAccessToken(f"signature check failed ({error.error})") from error
        self._check_claims(decoded.claims)
        return decoded.claims

    def _read_header(self, token: str) -> dict[str, Any]:
        """Parse the JOSE header and check alg and typ before touching any key."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise InvalidAccessToken("malformed token")
        if token.count(".") != 2:
            raise InvalidAccessToken("not a signed JWT")
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError) as error:
            raise InvalidAccessToken("malformed token") from error
        if header.get("alg") not in ALLOWED_ALGORITHMS:
            raise InvalidAccessToken("signing algorithm not allowed")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in ACCEPTED_TYPES:
            raise InvalidAccessToken("typ header is not at+jwt")
        if "crit" in header:
            # RFC 7515 §4.1.11: we understand no extensions, so we must refuse.
            raise InvalidAccessToken("unsupported critical header")
        return header

    def _key_for(self, header: dict[str, Any]) -> Key:
        """Find the key that may check this token, refetching the JWKS once if needed."""
        keys = self._current_keys()
        key = _select_key(keys, header)
        if key is None:
            keys = self._fetch_keys(count_as_refetch=True) or keys
            key = _select_key(keys, header)
        if key is None:
            raise InvalidAccessToken("no signing key matches the token's kid")
        return key

    def _current_keys(self) -> KeySet:
        """The cached JWKS, loaded on first use and reloaded when too old."""
        if self._keys is None:
            self._fetch_keys(count_as_refetch=False)
        elif self._clock() - self._keys_fetched_at > self.jwks_max_age:
            self._fetch_keys(count_as_refetch=True)
        if self._keys is None:
            raise SigningKeysUnavailable("signing keys unavailable")
        return self._keys

    def _refetch_allowed(self) -> bool:
        """True when the last counted fetch was at least min_refetch_interval ago."""
        last = self._last_refetch
        return last is None or self._clock() - last >= self.min_refetch_interval

    def _fetch_keys(self, count_as_refetch: bool) -> KeySet | None:
        """Download the JWKS unless rate limited; on failure keep the old keys, return None.

        A successful first load is not counted against the interval, so a key
        the provider published just after we started can still be fetched at
        once. Every failure is counted, so an unreachable provider is tried
        at most once per interval rather than on every request.
        """
        with self._lock:
            # Another thread may have fetched while we waited for the lock.
            if not self._refetch_allowed() or (not count_as_refetch and self._keys is not None):
                return self._keys
            now = self._clock()
            try:
                response = self._http_get(self._jwks_location(), timeout=self.timeout)
                response.raise_for_status()
                keys = KeySet.import_key_set(response.json())
            except (requests.RequestException, JoseError, ValueError, KeyError, TypeError):
                self._last_refetch = now
                return None
            if count_as_refetch:
                self._last_refetch = now
            self._keys, self._keys_fetched_at = keys, now
            return keys

    def _jwks_location(self) -> str:
        """The jwks_uri, from configuration or from the provider's discovery document."""
        if self.jwks_uri is None:
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            response = self._http_get(url, timeout=self.timeout)
            response.raise_for_status()
            metadata = response.json()
            # OpenID Connect Discovery §4.3: the issuer in the document must
            # be exactly the one we trust, or its keys are not the right keys.
            if metadata.get("issuer") != self.issuer:
                raise ValueError("discovery issuer mismatch")
            self.jwks_uri = metadata["jwks_uri"]
        return self.jwks_uri

    def _check_claims(self, claims: dict[str, Any]) -> None:
        """RFC 9068 §4: issuer, audience, times and required claims."""
        options: dict[str, Any] = {name: {"essential": True} for name in REQUIRED_CLAIMS}
        options["iss"] = {"essential": True, "value": self.issuer}
        if self.audience is not None:
            options["aud"] = {"essential": True, "value": self.audience}
        registry = jwt.JWTClaimsRegistry(leeway=self.leeway, **options)
        try:
            registry.validate(claims)
        except ExpiredTokenError as error:
            raise InvalidAccessToken("token expired") from error
        except MissingClaimError as error:
            raise InvalidAccessToken(f"missing claim {error.claim}") from error
        except InvalidClaimError as error:
            raise InvalidAccessToken(f"invalid claim {error.claim}") from error
        if not isinstance(claims["client_id"], str):
            raise InvalidAccessToken("invalid claim client_id")
        if "scope" in claims and not isinstance(claims["scope"], str):
            raise InvalidAccessToken("invalid claim scope")
        if "act" in claims:
            actors(claims)


def actors(claims: dict[str, Any]) -> list[str]:
    """Who acted for the token's subject (RFC 8693 §4.1 ``act``), the latest first.

    Empty for a token the agency app obtained itself. For a token obtained by
    token exchange, the first entry is the ``client_id`` of the agency that
    called this API with it, then the agency it had the token from, and so on.
    Only the outermost ``act`` is the current actor; the nested ones are history
    (RFC 8693 §4.1) and must not be used for access decisions on their own.
    Raises InvalidAccessToken for a malformed chain.
    """
    chain: list[str] = []
    act = claims.get("act")
    while act is not None:
        if not isinstance(act, dict) or not isinstance(act.get("sub"), str) or len(chain) >= MAX_ACTORS:
            raise InvalidAccessToken("invalid claim act")
        chain.append(act["sub"])
        act = act.get("act")
    return chain


def _select_key(keys: KeySet, header: dict[str, Any]) -> Key | None:
    """The key in the set whose kid, type, use and alg fit this token, if any."""
    alg, kid = header["alg"], header.get("kid")
    candidates = [
        key
        for key in keys
        if isinstance(key, ALLOWED_ALGORITHMS[alg])
        and key.get("use") in (None, "sig")
        and key.get("alg") in (None, alg)
        and (alg != "ES256" or key.get("crv") == "P-256")
    ]
    if kid is None:
        # Without a kid we only guess when there is nothing to guess between.
        return candidates[0] if len(candidates) == 1 else None
    return next((key for key in candidates if key.kid == kid), None)
