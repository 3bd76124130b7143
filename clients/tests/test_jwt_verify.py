"""clients.jwt_verify against a real local JWKS server: what it accepts and what it refuses."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from joserfc.jwk import RSAKey

from clients.jwt_verify import AccessTokenVerifier, InvalidAccessToken, SigningKeysUnavailable, actors
from clients.tests.conftest import access_token_claims


class FakeClock:
    """Monotonic time that only moves when a test says so."""

    def __init__(self) -> None:
        """Start at an arbitrary instant."""
        self.now = 1000.0

    def __call__(self) -> float:
        """The current instant."""
        return self.now


def b64(data: bytes | dict) -> str:
    """base64url without padding, of bytes or of a JSON object."""
    if isinstance(data, dict):
        data = json.dumps(data).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def clock() -> FakeClock:
    """A controlled clock for the refetch interval."""
    return FakeClock()


@pytest.fixture
def verifier(provider, clock) -> AccessTokenVerifier:
    """A verifier that finds the JWKS through the local server's discovery document."""
    return AccessTokenVerifier(provider.url, clock=clock)


def refused(verifier: AccessTokenVerifier, token: str) -> str:
    """Assert the token is refused and return the reason."""
    with pytest.raises(InvalidAccessToken) as caught:
        verifier.verify(token)
    return caught.value.reason


def test_valid_rs256_token_is_accepted(provider, verifier, sign):
    claims = access_token_claims(provider.url)
    assert verifier.verify(sign(claims)) == claims
    assert provider.hits["/.well-known/openid-configuration"] == 1
    assert provider.hits["/jwks"] == 1


def test_valid_es256_token_is_accepted(provider, verifier, sign, keys):
    claims = access_token_claims(provider.url)
    assert verifier.verify(sign(claims, key=keys.ec)) == claims


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt"])
def test_typ_is_compared_case_insensitively(provider, verifier, sign, typ):
    assert verifier.verify(sign(access_token_claims(provider.url), typ=typ))["sub"] == "pairwise-subject-1"


def test_act_chain_of_an_exchanged_token(provider, verifier, sign):
    """RFC 8693 §4.1: the latest actor first; a token without act has none."""
    assert actors(verifier.verify(sign(access_token_claims(provider.url)))) == []
    claims = access_token_claims(provider.url, act={"sub": "agency-b", "act": {"sub": "agency-a"}})
    assert actors(verifier.verify(sign(claims))) == ["agency-b", "agency-a"]


@pytest.mark.parametrize("act", ["agency-a", {"client": "agency-a"}, {"sub": 7}, {"sub": "b", "act": ["a"]}])
def test_malformed_act_is_refused(provider, verifier, sign, act):
    assert refused(verifier, sign(access_token_claims(provider.url, act=act))) == "invalid claim act"


def test_keys_are_cached(provider, verifier, sign):
    for _ in range(5):
        verifier.verify(sign(access_token_claims(provider.url)))
    assert provider.hits["/jwks"] == 1


def test_configured_audience_must_be_in_aud(provider, sign, clock):
    verifier = AccessTokenVerifier(provider.url, audience="https://api.tax.example", clock=clock)
    ours = access_token_claims(provider.url, aud=["https://api.tax.example", "https://other.example"])
    assert verifier.verify(sign(ours))["aud"][0] == "https://api.tax.example"
    assert refused(verifier, sign(access_token_claims(provider.url))) == "invalid claim aud"


def test_wrong_issuer_is_refused(provider, verifier, sign):
    assert refused(verifier, sign(access_token_claims("http://127.0.0.1:1"))) == "invalid claim iss"


def test_expired_token_is_refused(provider, verifier, sign):
    claims = access_token_claims(provider.url, iat=1_000_000_000, exp=1_000_000_300)
    assert refused(verifier, sign(claims)) == "token expired"


def test_small_clock_skew_is_tolerated(provider, verifier, sign):
    now = int(time.time())
    claims = access_token_claims(provider.url, iat=now + 10, nbf=now + 10, exp=now - 10 + 300)
    assert verifier.verify(sign(claims)) == claims
    late = access_token_claims(provider.url, iat=now - 400, exp=now - 60)
    assert refused(verifier, sign(late)) == "token expired"


def test_token_from_the_future_is_refused(provider, verifier, sign):
    claims = access_token_claims(provider.url, nbf=int(time.time()) + 600)
    assert refused(verifier, sign(claims)) == "invalid claim nbf"


@pytest.mark.parametrize("missing", ["sub", "client_id", "jti", "aud", "iat", "exp"])
def test_required_claims(provider, verifier, sign, missing):
    claims = access_token_claims(provider.url, **{missing: None})
    assert refused(verifier, sign(claims)) == f"missing claim {missing}"


def test_id_token_is_not_an_access_token(provider, verifier, sign):
    """An ID token is signed by the same keys; only its typ tells it apart (RFC 9068 §2.1)."""
    id_token_claims = access_token_claims(provider.url, aud="agency-web", nonce="n-1", scope=None)
    assert refused(verifier, sign(id_token_claims, typ="JWT")) == "typ header is not at+jwt"
    assert refused(verifier, sign(id_token_claims, typ=None)) == "typ header is not at+jwt"


def test_alg_none_is_refused(provider, verifier):
    header = {"alg": "none", "typ": "at+jwt", "kid": "rsa-1"}
    token = f"{b64(header)}.{b64(access_token_claims(provider.url))}."
    assert refused(verifier, token) == "signing algorithm not allowed"


def test_hs256_signed_with_the_public_key_is_refused(provider, verifier, keys):
    """The algorithm-confusion attack: an HMAC keyed with the public key anyone can download."""
    public_pem = keys.rsa.as_pem(private=False)
    for header in ({"alg": "HS256", "typ": "at+jwt", "kid": "rsa-1"}, {"alg": "HS256", "typ": "at+jwt"}):
        signing_input = f"{b64(header)}.{b64(access_token_claims(provider.url))}"
        mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
        assert refused(verifier, f"{signing_input}.{b64(mac)}") == "signing algorithm not allowed"


def test_tampered_payload_is_refused(provider, verifier, sign):
    header, _, signature = sign(access_token_claims(provider.url)).split(".")
    forged = access_token_claims(provider.url, sub="someone-else", scope="openid profile admin")
    assert refused(verifier, f"{header}.{b64(forged)}.{signature}").startswith("signature check failed")


def test_signature_by_another_key_with_a_known_kid_is_refused(provider, verifier, sign):
    stranger = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    token = sign(access_token_claims(provider.url), key=stranger)
    assert refused(verifier, token).startswith("signature check failed")


def test_alg_must_fit_the_key_type(provider, verifier, sign, keys):
    """An RS256 header naming the EC key's kid finds no usable key."""
    token = sign(access_token_claims(provider.url), kid="ec-1")
    assert refused(verifier, token) == "no signing key matches the token's kid"


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d.e", "e30.e30.", "x" * 20000])
def test_garbage_is_refused(verifier, token):
    with pytest.raises(InvalidAccessToken):
        verifier.verify(token)


def test_unknown_kid_refetches_once_then_is_rate_limited(provider, verifier, sign, keys, clock):
    verifier.verify(sign(access_token_claims(provider.url)))
    assert provider.hits["/jwks"] == 1

    # The provider rotates: a new key appears in its JWKS and signs a token.
    rotated = RSAKey.generate_key(2048, parameters={"kid": "rsa-2", "use": "sig", "alg": "RS256"})
    provider.routes["/jwks"] = keys.jwks(rotated)
    claims = access_token_claims(provider.url)
    assert verifier.verify(sign(claims, key=rotated)) == claims
    assert provider.hits["/jwks"] == 2

    # A second unknown kid within the interval: refused without asking the provider.
    stranger = RSAKey.generate_key(2048, parameters={"kid": "rsa-3"})
    for _ in range(20):
        assert refused(verifier, sign(claims, key=stranger)) == "no signing key matches the token's kid"
    clock.now += 29
    refused(verifier, sign(claims, key=stranger))
    assert provider.hits["/jwks"] == 2

    # Once the interval has passed, one more refetch is allowed.
    clock.now += 1
    refused(verifier, sign(claims, key=stranger))
    refused(verifier, sign(claims, key=stranger))
    assert provider.hits["/jwks"] == 3
    assert provider.hits["/.well-known/openid-configuration"] == 1


def test_first_unknown_kid_after_start_is_refetched_at_once(provider, verifier, sign, keys):
    """A key published just after the verifier started is picked up without waiting."""
    verifier.verify(sign(access_token_claims(provider.url)))
    rotated = RSAKey.generate_key(2048, parameters={"kid": "rsa-2"})
    provider.routes["/jwks"] = keys.jwks(rotated)
    verifier.verify(sign(access_token_claims(provider.url), key=rotated))
    assert provider.hits["/jwks"] == 2


def test_withdrawn_key_stops_working_after_max_age(provider, sign, keys, clock):
    verifier = AccessTokenVerifier(provider.url, clock=clock, jwks_max_age=600)
    verifier.verify(sign(access_token_claims(provider.url), key=keys.ec))
    provider.routes["/jwks"] = {"keys": [keys.rsa.as_dict(private=False)]}
    clock.now += 601
    assert refused(verifier, sign(access_token_claims(provider.url), key=keys.ec)).startswith("no signing key")
    assert provider.hits["/jwks"] == 2


def test_explicit_jwks_uri_skips_discovery(provider, sign, clock):
    verifier = AccessTokenVerifier(provider.url, jwks_uri=provider.url + "/jwks", clock=clock)
    verifier.verify(sign(access_token_claims(provider.url)))
    assert provider.hits["/.well-known/openid-configuration"] == 0


def test_discovery_naming_another_issuer_is_not_trusted(provider, sign, clock):
    provider.routes["/.well-known/openid-configuration"]["issuer"] = "https://elsewhere.example"
    verifier = AccessTokenVerifier(provider.url, clock=clock)
    with pytest.raises(SigningKeysUnavailable):
        verifier.verify(sign(access_token_claims(provider.url)))
    assert provider.hits["/jwks"] == 0


def test_unreachable_provider_is_not_hammered(provider, sign, clock):
    del provider.routes["/jwks"]
    verifier = AccessTokenVerifier(provider.url, clock=clock)
    token = sign(access_token_claims(provider.url))
    for _ in range(10):
        with pytest.raises(SigningKeysUnavailable):
            verifier.verify(token)
    assert provider.hits["/jwks"] == 1


def test_provider_recovering_is_noticed_after_the_interval(provider, sign, keys, clock):
    provider.routes["/jwks"] = lambda request: (503, {"error": "unavailable"})
    verifier = AccessTokenVerifier(provider.url, clock=clock)
    token = sign(access_token_claims(provider.url))
    with pytest.raises(SigningKeysUnavailable):
        verifier.verify(token)
    provider.routes["/jwks"] = keys.jwks()
    with pytest.raises(SigningKeysUnavailable):
        verifier.verify(token)
    clock.now += 30
    assert verifier.verify(token)["sub"] == "pairwise-subject-1"
    assert provider.hits["/jwks"] == 2
