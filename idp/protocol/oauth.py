"""All Authlib wiring: the authorization server, its grant, PKCE, OpenID Connect and tokens.

Authlib's defaults are tightened here (see ../shared/AUTHLIB-NOTES.md): PKCE with S256 is
required of every client and ``plain`` refused; codes live in the store and are consumed
with one atomic GETDEL; a replayed code revokes the access token it issued; the ID token
carries ``iss``, ``auth_time``, ``acr`` and ``amr`` from the real login; access tokens are
RFC 9068 JWTs with a pinned ``kid``; the authorization response carries ``iss`` (RFC 9207).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import rfc7009, rfc7662
from authlib.oauth2.rfc6749 import InvalidClientError, InvalidRequestError, OAuth2Request, grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from authlib.oauth2.rfc9207 import IssuerParameter
from authlib.oidc.core import OpenIDCode, UserInfo
from authlib.oidc.core.models import AuthorizationCodeMixin
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import current_app
from joserfc import jwt
from joserfc.errors import JoseError

from ..citizens import counting
from ..citizens.models import Citizen
from ..platform import audit
from ..platform.database import db, utcnow
from ..platform.keys import keyring
from ..platform.settings import settings
from ..platform.store import store
from . import tokens
from .models import Client, RefreshToken

#: acr values (OIDC Core §2) and amr values (RFC 8176) per factor the citizen proved.
ACR = {"sms": "urn:idp:acr:sms", "totp": "urn:idp:acr:totp"}
AMR = {"sms": ["sms"], "totp": ["otp"]}
SCOPES = ["openid", "profile", "phone", "national_id", "age", "offline_access"]
AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none", "private_key_jwt"]


@dataclass
class Principal:
    """The citizen behind a grant, with how and when they authenticated. ``sid`` is the
    session's public id (never the cookie value)."""

    citizen: Citizen
    auth_time: int
    method: str
    sid: str
    token_jti: str | None = None
    adult_counted: bool = False

    def get_user_id(self) -> str:
        """Authlib's hook; the `sub` an agency sees is set per client in the token claims."""
        return self.citizen.subject_key

    @property
    def acr(self) -> str:
        return ACR[self.method]

    @property
    def amr(self) -> list[str]:
        return AMR[self.method]


@dataclass
class StoredCode(AuthorizationCodeMixin):
    """An authorization code's grant as read back from the store."""

    data: dict[str, Any]

    def get_redirect_uri(self) -> str:
        return self.data["redirect_uri"]

    def get_scope(self) -> str:
        return self.data["scope"]

    def get_nonce(self) -> str | None:
        return self.data.get("nonce")

    def get_auth_time(self) -> int:
        return self.data["auth_time"]

    def get_acr(self) -> str:
        return ACR[self.data["method"]]

    def get_amr(self) -> list[str]:
        return AMR[self.data["method"]]

    @property
    def code_challenge(self) -> str | None:
        return self.data.get("code_challenge")

    @property
    def code_challenge_method(self) -> str | None:
        return self.data.get("code_challenge_method")


# ---- subjects and claims ---------------------------------------------------------------------

def sector_of(client: Client) -> str:
    """The sector of a client (OIDC Core §8.1): its configured sector or its redirect URIs' host."""
    meta = client.client_metadata
    if meta.get("sector_identifier"):
        return meta["sector_identifier"]
    hosts = sorted({urlsplit(u).hostname or "" for u in client.redirect_uris})
    return hosts[0] if hosts else client.client_id


def subject_for(citizen: Citizen, client: Client) -> str:
    """The `sub` this client sees: pairwise per sector by default, so agencies cannot join records."""
    if client.client_metadata.get("subject_type") == "public":
        return citizen.subject_key
    mac = hmac.new(settings.derived_key("pairwise-sub"),
                   f"{sector_of(client)}\x00{citizen.subject_key}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def claims_for(citizen: Any, client: Client, scope: str) -> dict[str, Any]:
    """The claims released to a client for a scope (OIDC Core §5.4); ``citizen`` is a Citizen or
    a row of ``counting.CLAIM_COLUMNS``."""
    scopes = set(scope.split())
    info: dict[str, Any] = {"sub": subject_for(citizen, client)}
    if "profile" in scopes:
        for claim, value in (("given_name", citizen.given_name), ("family_name", citizen.family_name)):
            if value:
                info[claim] = value
        if citizen.given_name or citizen.family_name:
            info["name"] = " ".join(p for p in (citizen.given_name, citizen.family_name) if p)
        info["birthdate"] = citizen.birth_date.isoformat()
        info["locale"] = "fa-IR"
    if "phone" in scopes:
        info["phone_number"] = citizen.mobile
        info["phone_number_verified"] = True
    if "national_id" in scopes and client.client_metadata.get("allow_national_id"):
        info["national_id"] = citizen.national_id
    if "age" in scopes:
        info["age_over_18"] = counting.age_on(citizen.birth_date, counting.local_date(utcnow())) >= 18
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


def code_jti(code: str) -> str:
    """The jti of the access token a code is exchanged for, so a replay can revoke it."""
    return "c" + hashlib.sha256(b"jti\x00" + code.encode()).hexdigest()[:31]


# ---- PKCE: S256, always -------------------------------------------------------------------

class S256Only(CodeChallenge):
    """RFC 7636 with RFC 9700 §2.1.1: every client sends an S256 challenge; `plain` is refused."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant, redirect_uri):
        """Refuse a missing challenge or method; the error goes back to the validated redirect URI."""
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: code_challenge is missing", redirect_uri=redirect_uri)
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256", redirect_uri=redirect_uri)
        try:
            super().validate_code_challenge(grant, redirect_uri)
        except InvalidRequestError as exc:
            exc.redirect_uri = redirect_uri
            raise

    def validate_code_verifier(self, grant, result):
        """A code_verifier is required of every client, public or confidential."""
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'")
        super().validate_code_verifier(grant, result)


# ---- the authorization code grant -------------------------------------------------------------

class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    """RFC 6749 §4.1 with codes in the store, single use, bound to client and redirect URI."""

    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    @staticmethod
    def validate_authorization_redirect_uri(request, client):
        """Exact match; OIDC requires redirect_uri, and the error never echoes hostile input."""
        uri = request.payload.redirect_uri
        if not uri:
            if uri := client.get_default_redirect_uri():
                return uri
            raise InvalidRequestError("Missing 'redirect_uri' in request.")
        if not client.check_redirect_uri(uri):
            raise InvalidRequestError("The redirect_uri is not registered for this client.")
        return uri

    def save_authorization_code(self, code: str, request) -> None:
        """Keep the grant in the store for code_ttl seconds; its nonce is marked used."""
        principal: Principal = request.user
        data = request.payload.data
        payload = {
            "client_id": request.client.client_id,
            "redirect_uri": request.payload.redirect_uri or request.client.get_default_redirect_uri(),
            "scope": request.scope,
            "nonce": data.get("nonce"),
            "code_challenge": data.get("code_challenge"),
            "code_challenge_method": data.get("code_challenge_method"),
            "citizen_id": principal.citizen.id,
            "sk": principal.citizen.subject_key,
            "auth_time": principal.auth_time,
            "method": principal.method,
            "sid": principal.sid,
        }
        store.put_code(code, payload, ttl=settings.tokens.code_ttl, nonce_ttl=settings.login.session_ttl)
        from flask import g

        g.pop("idp_nonces", None)  # the nonce is used now

    def query_authorization_code(self, code: str, client: Client) -> StoredCode | None:
        """Consume the code (GETDEL). A replay revokes what the code issued (RFC 6749 §4.1.2)."""
        if not isinstance(code, str) or len(code) > 256:
            return None
        data, replayed = store.consume_code(code, used_ttl=settings.tokens.access_token_ttl)
        if data is None:
            if replayed:
                # RFC 6749 §4.1.2: revoke what the code issued: its access token and the refresh
                # token family, which is named after the code.
                store.revoke_access_token(code_jti(code), settings.tokens.access_token_ttl)
                tokens.revoke_family(code_jti(code), reason="code_replayed")
            return None
        if data["client_id"] != client.client_id:
            # A code injected into another client's exchange (RFC 9700 §4.5): burnt, refused.
            audit.record("code_wrong_client", client_id=client.client_id)
            return None
        data["code"] = code
        return StoredCode(data)

    def delete_authorization_code(self, authorization_code: StoredCode) -> None:
        """Nothing to do: the code was consumed when it was looked up."""

    def authenticate_user(self, authorization_code: StoredCode) -> Principal | None:
        """The citizen of the code, with the login facts the tokens will carry."""
        d = authorization_code.data
        # The tokens of a code need the citizen's id and subject key only (the ID token carries
        # no profile claims), and the code carries both: citizens are never deleted.
        citizen = Citizen(id=d["citizen_id"], subject_key=d["sk"]) if d.get("sk") else \
            counting.detached(d["citizen_id"])
        if citizen is None:
            return None
        return Principal(citizen, d["auth_time"], d["method"], d["sid"], token_jti=code_jti(d["code"]))


# ---- OpenID Connect: the ID token --------------------------------------------------------------

class OpenIDConnectCode(OpenIDCode):
    """OIDC Core §3.1: the ID token, with nonce replay refused through the store."""

    def exists_nonce(self, nonce: str, request) -> bool:
        """Asked twice per authorization request by Authlib: the store is asked once (the answer
        is kept for the request until the code is saved, which marks the nonce used)."""
        from flask import g, has_request_context

        key = (request.payload.client_id, nonce)
        memo = g.setdefault("idp_nonces", {}) if has_request_context() else {}
        if key not in memo:
            memo[key] = store.nonce_used(*key)
        return memo[key]

    def get_client_algorithm(self, client: Client) -> str:
        return settings.keys.id_token_alg

    def resolve_client_private_key(self, client: Client):
        return keyring.signing_key(settings.keys.id_token_alg).keyset

    def get_encode_header(self, client: Client) -> dict[str, str]:
        key = keyring.signing_key(settings.keys.id_token_alg)
        return {"alg": key.alg, "kid": key.kid, "typ": "JWT"}

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": settings.server.issuer, "aud": [client.client_id], "azp": client.client_id,
                "iat": now, "exp": now + settings.tokens.id_token_ttl}

    def generate_user_info(self, user: Principal, scope: str) -> UserInfo:
        """Only `sub` and `sid`: the other claims come from userinfo (OIDC Core §5.4), so an ID
        token that travels as an id_token_hint in a logout URL carries no personal data."""
        return UserInfo({"sub": subject_for(user.citizen, _current_client()), "sid": user.sid})


def _current_client() -> Client:
    from flask import g

    return g.oauth_client


# ---- access tokens (RFC 9068) ------------------------------------------------------------------

class AccessTokenGenerator(JWTBearerTokenGenerator):
    """JWT access tokens signed with the pinned key of the configured algorithm."""

    def get_jwks(self):
        return keyring.signing_key(self.alg).keyset

    def get_audiences(self, client: Client, user, scope: str) -> list[str]:
        return [client.client_id]

    def get_auth_time(self, user: Principal) -> int | None:
        return user.auth_time if user else None

    def get_acr(self, user: Principal) -> str | None:
        return user.acr if user else None

    def get_amr(self, user: Principal) -> list[str] | None:
        return user.amr if user else None

    def get_jti(self, client, grant_type, user, scope) -> str:
        if user is not None and user.token_jti:
            return user.token_jti
        return super().get_jti(client, grant_type, user, scope)

    def get_extra_claims(self, client: Client, grant_type, user: Principal, scope: str) -> dict[str, Any]:
        if user is None:
            return {}
        return {"sub": subject_for(user.citizen, client), "sid": user.sid, "idp_ref": seal_ref(user.citizen.id)}


class BearerTokenError(Exception):
    """An access token presented to a resource of ours is not valid (RFC 6750 §3.1)."""


def verify_access_token(token: str, check_revoked: bool = True) -> dict[str, Any]:
    """Check one of our access tokens: signature, typ, iss, exp and (unless told) revocation."""
    if not token or len(token) > 4096:
        raise BearerTokenError("malformed token")
    try:
        decoded = jwt.decode(token, keyring.public_key_set(), algorithms=["RS256", "ES256"])
    except (JoseError, ValueError) as exc:
        raise BearerTokenError("signature or format invalid") from exc
    if decoded.header.get("typ", "").lower() not in ("at+jwt", "application/at+jwt"):
        raise BearerTokenError("not an access token")
    claims = decoded.claims
    now = time.time()
    if claims.get("iss") != settings.server.issuer:
        raise BearerTokenError("wrong issuer")
    if not isinstance(claims.get("exp"), int) or claims["exp"] < now:
        raise BearerTokenError("expired")
    if not isinstance(claims.get("jti"), str) or (
            check_revoked and store.access_token_revoked(claims["jti"], claims.get("sid"))):
        raise BearerTokenError("revoked")
    return claims


# ---- RFC 9207 ----------------------------------------------------------------------------------

class Issuer(IssuerParameter):
    """Adds `iss` to every authorization response (RFC 9207 §2)."""

    def get_issuer(self) -> str:
        return settings.server.issuer


issuer_parameter = Issuer()


# ---- the server --------------------------------------------------------------------------------

class ClientCache:
    """Registered clients, kept by each process between requests and checked on every request
    against the store's clients version (one GET per request, for all the client lookups the
    request makes). Every change made through ``idp clients`` / agencies.py renews that version,
    so a client disabled or given a new secret by any process is refused from the very next
    request on every node. A copy is also read again after ``MAX_AGE`` seconds, for a row
    changed in SQL by hand. The in-memory store (``memory://``) is not shared between
    processes, so there a client is read once per request instead.

    A cached client is a copy attached to no database session, read-only for its users.
    """

    MAX_AGE = 300.0
    MAX_ENTRIES = 5000

    def __init__(self) -> None:
        # keyed by (store prefix, client_id): several apps in one process (tests) never share
        self._entries: dict[tuple[str, str], tuple[str | None, float, Client]] = {}

    def clear(self) -> None:
        self._entries.clear()

    def _version(self) -> tuple[bool, str | None]:
        """(shared, version): whether the cache may outlive the request, and under what version."""
        from flask import g, has_request_context

        if store.url == "memory://" or not has_request_context():
            return False, None
        if "idp_clients_version" not in g:
            g.idp_clients_version = store.clients_version()
        return True, g.idp_clients_version

    def get(self, client_id: str) -> Client | None:
        from flask import g, has_request_context

        memo = g.setdefault("idp_clients", {}) if has_request_context() else {}
        if client_id in memo:
            return memo[client_id]
        shared, version = self._version()
        key = (store.prefix, client_id)
        entry = self._entries.get(key) if shared else None
        if entry is not None and entry[0] == version and time.monotonic() - entry[1] < self.MAX_AGE:
            memo[client_id] = entry[2]
            return entry[2]
        row = db.session.execute(db.select(Client).filter_by(client_id=client_id)).scalar_one_or_none()
        copy = None if row is None else Client(**{a.key: getattr(row, a.key) for a in Client.__mapper__.column_attrs})
        memo[client_id] = copy
        if shared and copy is not None:  # unknown ids are not kept: anyone can make up more of them
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (version, time.monotonic(), copy)
        return copy


def clients_changed() -> None:
    """Tell every process's client cache that a client changed (call after the commit)."""
    client_cache.clear()
    store.new_clients_version()


client_cache = ClientCache()




def client_and_citizen(client_id: Any, citizen_id: int | None) -> tuple[Client | None, Any]:
    """An enabled client (from the client cache) and the citizen's claim columns
    (``counting.claims_row``): (None, None) when either is unknown, or the client is disabled."""
    if not isinstance(citizen_id, int):
        return None, None
    client = _query_client(client_id)
    if client is None:
        return None, None
    row = counting.claims_row(citizen_id)
    return (client, row) if row is not None else (None, None)


def _query_client(client_id: str) -> Client | None:
    """An enabled client by id; disabled and unknown clients are the same to the protocol."""
    if not isinstance(client_id, str) or len(client_id) > 64:
        return None
    client = client_cache.get(client_id)
    if client is None or not client.is_enabled:
        return None
    from flask import g

    g.oauth_client = client
    return client


def _save_token(token: dict, request) -> None:
    """JWT access tokens are self-contained; a refresh token is stored hashed when this grant
    may have one (offline_access or client policy), and otherwise left out of the response."""
    refresh = token.get("refresh_token")
    old = getattr(request, "refresh_token", None)
    if not refresh or not tokens.allowed(request.client, token.get("scope", "")):
        token.pop("refresh_token", None)
        if isinstance(old, RefreshToken):
            db.session.commit()  # the old token's claim (tokens.claim) is kept all the same
        return
    # A family starts at a code exchange and is named after the code, so a replayed code can
    # revoke it; rotations keep the family.
    family = old.family_id if isinstance(old, RefreshToken) else request.user.token_jti
    tokens.save(refresh, request.client, request.user, token.get("scope", ""), family_id=family)
    if not isinstance(old, RefreshToken) and store.access_token_revoked(family):
        # The code was replayed while this exchange was under way: the replay revoked the access
        # token (its jti is the family's name) but found no refresh token yet. The replay marks
        # the store before it revokes the family, and this looks after saving, so one of the two
        # always sees the other (RFC 6749 §4.1.2).
        tokens.revoke_family(family, reason="code_replayed")


class RefreshTokenGrant(grants.RefreshTokenGrant):
    """RFC 6749 §6 with rotation on every use and reuse detection (RFC 9700 §4.14.2)."""

    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshToken | None:
        return tokens.claim(refresh_token, self.request.client)

    def authenticate_user(self, refresh_token: RefreshToken) -> Principal | None:
        citizen = counting.detached(refresh_token.citizen_id)
        if citizen is None:
            return None
        return Principal(citizen, refresh_token.auth_time, refresh_token.method, refresh_token.sid)

    def revoke_old_credential(self, refresh_token: RefreshToken) -> None:
        """Nothing to do: the old token was marked rotated when it was claimed."""


def _our_access_token(token_string: str) -> tokens.AccessToken | None:
    try:
        return tokens.AccessToken(verify_access_token(token_string, check_revoked=False))
    except BearerTokenError:
        return None


def _require_token_param(request) -> None:
    if not request.form.get("token"):
        raise InvalidRequestError("Missing 'token'")


class _OurTokens:
    """What revocation and introspection share: our client authentication methods, only `token`
    required (an unknown token_type_hint is ignored, RFC 7009 §2.1 and RFC 7662 §2.1), and a
    token looked up as one of our JWT access tokens or a refresh token."""

    CLIENT_AUTH_METHODS = AUTH_METHODS

    def check_params(self, request, client):
        _require_token_param(request)

    def query_token(self, token_string, token_type_hint):
        if token_type_hint != "refresh_token" and "." in token_string:
            return _our_access_token(token_string)
        return tokens.find(token_string)


class RevocationEndpoint(_OurTokens, rfc7009.RevocationEndpoint):
    """RFC 7009: a client revokes its own access or refresh tokens."""

    def revoke_token(self, token, request) -> None:
        if isinstance(token, tokens.AccessToken):
            token.revoke()
        else:
            tokens.revoke_family(token.family_id, reason="refresh_token_revoked")


#: Introspection tells an API about a citizen's token: only a client that proves who it is may
#: ask (RFC 7662 §2.1, §4), never a public client naming itself by its client_id alone.
INTROSPECTION_AUTH_METHODS = [m for m in AUTH_METHODS if m != "none"]


class IntrospectionEndpoint(_OurTokens, rfc7662.IntrospectionEndpoint):
    """RFC 7662 for agencies' APIs: a client may introspect tokens issued to it."""

    CLIENT_AUTH_METHODS = INTROSPECTION_AUTH_METHODS

    def check_permission(self, token, client, request) -> bool:
        return token.check_client(client)

    def introspect_token(self, token) -> dict[str, Any]:
        payload = tokens.introspection_of(token)
        if isinstance(token, RefreshToken):
            citizen = db.session.get(Citizen, token.citizen_id)
            client = _query_client(token.client_id)
            if citizen is not None and client is not None:
                payload["sub"] = subject_for(citizen, client)
        return payload


class Server(AuthorizationServer):
    """Authlib's Flask server, able to answer a replayed (paused) request, not only flask.request."""

    def create_oauth2_request(self, request):
        if isinstance(request, OAuth2Request):
            return request
        return super().create_oauth2_request(request)

    def validate_requested_scope(self, scope):
        """Unknown scopes are ignored, not refused (RFC 6749 §3.3; OIDC Core §3.1.2.1)."""

    def authenticate_client(self, request, methods, endpoint="token"):
        """A malformed Authorization header (not UTF-8, a scheme with nothing after it) makes
        Authlib's parser raise ValueError: it is a client that failed to authenticate."""
        try:
            return super().authenticate_client(request, methods, endpoint)
        except ValueError:
            raise InvalidClientError(status_code=401) from None


server = Server()


def init_app(app) -> None:
    """Wire the authorization server to the app; called by create_app."""
    cfg = app.extensions["idp.settings"]
    app.config["OAUTH2_SCOPES_SUPPORTED"] = SCOPES
    server.init_app(app, query_client=_query_client, save_token=_save_token)
    server.register_grant(AuthorizationCodeGrant, [S256Only(required=True), OpenIDConnectCode(require_nonce=False)])
    server.register_grant(RefreshTokenGrant)
    server.register_endpoint(RevocationEndpoint)
    server.register_endpoint(IntrospectionEndpoint)
    server.register_extension(issuer_parameter)
    from .client_auth import PrivateKeyJWT  # private_key_jwt (RFC 7523 §2.2), see client_auth.py
    server.register_client_auth_method(PrivateKeyJWT.CLIENT_AUTH_METHOD, PrivateKeyJWT())
    server.register_token_generator("default", AccessTokenGenerator(
        cfg.server.issuer, alg=cfg.keys.access_token_alg,
        refresh_token_generator=lambda **kwargs: tokens.new_refresh_token(),
        expires_generator=lambda client, grant_type: current_app.extensions["idp.settings"].tokens.access_token_ttl,
    ))


def discovery_document() -> dict[str, Any]:
    """OpenID Provider Metadata (OIDC Discovery §3): exactly what is implemented."""
    iss = settings.server.issuer
    return {
        "issuer": iss,
        "authorization_endpoint": f"{iss}/authorize",
        "token_endpoint": f"{iss}/token",
        "userinfo_endpoint": f"{iss}/userinfo",
        "jwks_uri": f"{iss}/jwks",
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "revocation_endpoint": f"{iss}/revoke",
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint": f"{iss}/introspect",
        "introspection_endpoint_auth_methods_supported": INTROSPECTION_AUTH_METHODS,
        "subject_types_supported": ["pairwise", "public"],
        "id_token_signing_alg_values_supported": [settings.keys.id_token_alg],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        # private_key_jwt assertions (RFC 8414 §2): RS256 or ES256, never none or HMAC.
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256"],
        "revocation_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256"],
        "introspection_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "azp", "sid",
                             "name", "given_name", "family_name", "birthdate", "locale",
                             "phone_number", "phone_number_verified", "national_id", "age_over_18"],
        "acr_values_supported": list(ACR.values()),
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "authorization_response_iss_parameter_supported": True,
        "ui_locales_supported": ["fa-IR", "en"],
        "end_session_endpoint": f"{iss}/logout",
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "frontchannel_logout_supported": False,
    }
