"""All Authlib wiring: the token endpoint's grants, PKCE at the token endpoint, the ID token,
JWT access tokens, refresh, revocation and introspection.

Authlib's defaults are tightened here (see ../shared/AUTHLIB-NOTES.md): the code verifier is
required of every client; codes live in the store and are consumed with one atomic GETDEL; a
replayed code revokes what it issued; the ID token carries ``iss``, ``auth_time``, ``acr`` and
``amr`` from the real login; access tokens are RFC 9068 JWTs with a pinned ``kid``.

The authorization endpoint does not go through Authlib: protocol.authorize validates the
request once (its named checks) and issues the code with :func:`save_code`, whose record the
code grant below reads back.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import rfc7009, rfc7662
from authlib.oauth2.base import OAuth2Error
from authlib.oauth2.rfc6749 import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    grants,
)
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from authlib.oidc.core import OpenIDCode
from authlib.oidc.core.models import AuthorizationCodeMixin

from ..citizens import directory, guardians
from ..citizens.directory import Citizen
from ..platform import audit
from ..platform.keyring import keyring
from ..platform.settings import settings
from ..platform.store import store
from . import clients, delegations, logout, tokens
from .client_auth import PrivateKeyJWT
from .discovery import ACR, AMR, AUTH_METHODS, INTROSPECTION_AUTH_METHODS, SCOPES, TOKEN_EXCHANGE
from .models import Client, RefreshToken
from .subjects import open_ref, seal_ref, subject_for
from .verify import BearerTokenError, access_token_revoked, decode_access_token, verify_access_token


@dataclass
class Principal:
    """The citizen behind a grant, with how and when they authenticated, as one client sees
    them (``sub``). ``sid`` is the session's public id (never the cookie value)."""

    citizen: Citizen
    auth_time: int
    method: str
    sid: str
    sub: str
    token_jti: str | None = None
    #: a token exchange's actor chain (RFC 8693 §4.1) and the latest expiry its subject token allows
    act: dict[str, Any] | None = None
    exp: int | None = None
    #: a guardian acting for the (minor) citizen: the guardian's citizen id (``act`` names them)
    actor_id: int | None = None

    def get_user_id(self) -> str:
        """Authlib's hook."""
        return self.sub

    @property
    def acr(self) -> str:
        return ACR[self.method]

    @property
    def amr(self) -> list[str]:
        return AMR[self.method]


# ---- authorization codes -------------------------------------------------------------------------

def code_jti(code: str) -> str:
    """The jti of the access token a code is exchanged for, so a replay can revoke it."""
    return "c" + hashlib.sha256(b"jti\x00" + code.encode()).hexdigest()[:31]


def save_code(client_id: str, redirect_uri: str, scope: str, nonce: str | None, code_challenge: str,
              code_challenge_method: str, citizen: Citizen, auth_time: int, method: str, sid: str,
              actor: Citizen | None = None) -> str:
    """A new authorization code (RFC 6749 §4.1.2), kept in the store for [tokens] code_ttl
    seconds with its grant; its nonce is marked used in the same round trip. ``actor``: a
    guardian acting for ``citizen`` (a minor), whose login ``auth_time`` and ``method`` are."""
    code = secrets.token_urlsafe(32)
    data = {"client_id": client_id, "redirect_uri": redirect_uri, "scope": scope, "nonce": nonce,
            "code_challenge": code_challenge, "code_challenge_method": code_challenge_method,
            "citizen_id": citizen.id, "sk": citizen.subject_key, "bd": citizen.birth_date.isoformat(),
            "auth_time": auth_time, "method": method, "sid": sid}
    if actor is not None:
        data["actor"] = {"id": actor.id, "sk": actor.subject_key, "bd": actor.birth_date.isoformat()}
    store.put_code(code, data, ttl=settings.tokens.code_ttl, nonce_ttl=settings.login.session_ttl)
    return code


def guardian_fingerprints(guardian_id: int, minor_id: int | None) -> tuple[str | None, str | None]:
    """The audit fingerprints (of the national IDs) of a guardian and the minor they act for."""
    found = []
    for citizen_id in (guardian_id, minor_id):
        person = directory.profile(citizen_id) if citizen_id is not None else None
        found.append(audit.fingerprint("nid", person.national_id) if person else None)
    return found[0], found[1]


def redeem_code(code: Any, client: Client) -> dict[str, Any] | None:
    """Consume the code (GETDEL): its grant, or None (RFC 6749 §4.1.3). A replay revokes what the
    code issued (§4.1.2); a code presented by another client is burnt."""
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
    return data


def code_principal(data: dict[str, Any], client: Client) -> Principal:
    """The citizen of a redeemed code (the code carries what the tokens need of them). A
    guardian's code for a minor is honoured only while the guardian may still act for them
    (linked, the minor under 18 today, the agency accepting guardians): audited for both either
    way."""
    citizen = Citizen(id=data["citizen_id"], subject_key=data["sk"], birth_date=dt.date.fromisoformat(data["bd"]))
    principal = Principal(citizen, data["auth_time"], data["method"], data["sid"], subject_for(citizen, client),
                          token_jti=code_jti(data["code"]))
    actor = data.get("actor")
    if actor is not None:
        guardian = Citizen(id=actor["id"], subject_key=actor["sk"], birth_date=dt.date.fromisoformat(actor["bd"]))
        fps = guardian_fingerprints(guardian.id, citizen.id)
        if not client.accepts_guardians or guardians.may_act(guardian.id, citizen.id) is None:
            audit.record("guardian_act_refused", subject_fp=fps[0], client_id=client.client_id, minor_fp=fps[1],
                         step="token")
            raise InvalidGrantError("The guardian may no longer act for this citizen (18 or older today, or "
                                    "no longer linked)")
        principal.act, principal.actor_id = {"sub": subject_for(guardian, client)}, guardian.id
        audit.record("guardian_acted", subject_fp=fps[0], client_id=client.client_id, minor_fp=fps[1],
                     step="token", scope=data["scope"])
    return principal


@dataclass
class StoredCode(AuthorizationCodeMixin):
    """An authorization code's grant as read back from the store (see save_code)."""

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


class S256Verifier(CodeChallenge):
    """RFC 7636 at the token endpoint, with RFC 9700 §2.1.1: a code_verifier is required of
    every client, public or confidential (the challenge was required at /authorize)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_verifier(self, grant, result):
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'")
        super().validate_code_verifier(grant, result)


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    """RFC 6749 §4.1.3: a code from the store, single use, bound to its client and redirect URI."""

    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def query_authorization_code(self, code: str, client: Client) -> StoredCode | None:
        data = redeem_code(code, client)
        return StoredCode(data) if data is not None else None

    def delete_authorization_code(self, authorization_code: StoredCode) -> None:
        """Nothing to do: the code was consumed when it was looked up."""

    def authenticate_user(self, authorization_code: StoredCode) -> Principal:
        return code_principal(authorization_code.data, self.request.client)


# ---- OpenID Connect: the ID token --------------------------------------------------------------

class OpenIDConnectCode(OpenIDCode):
    """OIDC Core §3.1.3: the ID token of a code exchange."""

    def exists_nonce(self, nonce: str, request) -> bool:
        """Asked by Authlib only at the authorization endpoint, which is not Authlib's here: the
        nonce was checked, and marked used, by protocol.authorize."""
        return store.nonce_used(request.payload.client_id, nonce)

    def encode_id_token(self, token: dict, request) -> str:
        """Authlib's hook, answered by id_token below (the token endpoint's fast path calls it too)."""
        return id_token(request.client, request.authorization_code.data, request.user, token.get("access_token"))


def id_token(client: Client, code: dict[str, Any], user: Principal, access_token: str | None) -> str:
    """The ID token of a code exchange (OIDC Core §3.1.3.6), with the pinned key: ``iss``,
    ``aud``, ``azp``, ``iat``, ``exp``, the login's ``nonce``, ``auth_time``, ``acr``, ``amr``,
    ``at_hash`` (§3.1.3.8), then only ``sub`` and ``sid``: the other claims come from userinfo
    (§5.4), so an ID token that travels as an id_token_hint in a logout URL carries no personal
    data (and ``act`` for a guardian acting for the citizen, RFC 8693 §4.1)."""
    key = keyring.signing_key(settings.keys.id_token_alg)
    now = int(time.time())
    claims: dict[str, Any] = {"iss": settings.server.issuer, "aud": [client.client_id], "azp": client.client_id,
                              "iat": now, "exp": now + settings.tokens.id_token_ttl, "auth_time": code["auth_time"]}
    if code.get("nonce"):
        claims["nonce"] = code["nonce"]
    claims["acr"], claims["amr"] = ACR[code["method"]], AMR[code["method"]]
    if access_token:
        digest = hashlib.sha256(access_token.encode()).digest()
        claims["at_hash"] = base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii")
    claims["sub"], claims["sid"] = user.sub, user.sid
    if user.actor_id is not None:
        claims["act"] = user.act
    return key.sign_jwt(claims, "JWT")


# ---- access tokens (RFC 9068) ------------------------------------------------------------------

class AccessTokenGenerator(JWTBearerTokenGenerator):
    """JWT access tokens signed with the pinned key of the configured algorithm."""

    def access_token_generator(self, client: Client, grant_type: str, user: Principal | None, scope: str) -> str:
        """The claims of RFC 9068 §2.2 as Authlib's generator makes them, signed with the pinned
        key straight (keys.SigningKey.sign_jwt): header ``typ`` at+jwt and the key's ``kid``."""
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.issuer, "exp": now + self._get_expires_in(client, grant_type),
                                  "client_id": client.client_id, "iat": now,
                                  "jti": self.get_jti(client, grant_type, user, scope), "scope": scope,
                                  "sub": str(user.get_user_id()) if user else client.client_id,
                                  "aud": self.get_audiences(client, user, scope)}
        for name, value in (("auth_time", self.get_auth_time(user)), ("acr", self.get_acr(user)),
                            ("amr", self.get_amr(user))):
            if value:
                claims[name] = value
        claims.update(self.get_extra_claims(client, grant_type, user, scope))
        return keyring.signing_key(self.alg).sign_jwt(claims, "at+jwt")

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
        # 96 random bits, as Authlib's 16 characters (which it draws one by one: 4 % of a refresh)
        return secrets.token_urlsafe(12)

    def get_extra_claims(self, client: Client, grant_type, user: Principal, scope: str) -> dict[str, Any]:
        if user is None:
            return {}
        claims = {"sub": user.sub, "sid": user.sid, "idp_ref": seal_ref(user.citizen.id)}
        if user.act is not None:
            claims["act"] = user.act
        if user.actor_id is not None:
            claims["idp_act_ref"] = seal_ref(user.actor_id)  # the guardian, for the provider's own use
        if user.exp is not None:
            claims["exp"] = user.exp
        return claims


# ---- refresh (RFC 6749 §6, RFC 9700 §4.14) ----------------------------------------------------

def _save_token(token: dict, request) -> None:
    """Authlib's save_token: keep_refresh_token for the grant's client, citizen and old token."""
    keep_refresh_token(token, request.client, request.user, getattr(request, "refresh_token", None))


def keep_refresh_token(token: dict, client: Client, principal: Principal, old: RefreshToken | None) -> None:
    """JWT access tokens are self-contained; a refresh token is stored hashed when this grant
    may have one (offline_access or client policy), and otherwise left out of the response.
    ``old``: the refresh token this one rotates (claimed in the session's transaction)."""
    refresh = token.get("refresh_token")
    # A guardian acting for a minor gets no refresh token: every new token then needs the
    # guardian's login (or single sign-on) and the checks of the minor's age and link again.
    acting = getattr(principal, "actor_id", None) is not None
    if not refresh or acting or not tokens.allowed(client, token.get("scope", "")):
        token.pop("refresh_token", None)
        if isinstance(old, RefreshToken):
            tokens.keep_claim()  # the old token's claim (tokens.claim) is kept all the same
        return
    # A family starts at a code exchange and is named after the code, so a replayed code can
    # revoke it; rotations keep the family.
    family = old.family_id if isinstance(old, RefreshToken) else principal.token_jti
    tokens.save(refresh, client, principal, token.get("scope", ""), family_id=family)
    if not isinstance(old, RefreshToken) and store.access_token_revoked(family):
        # The code was replayed while this exchange was under way: the replay revoked the access
        # token (its jti is the family's name) but found no refresh token yet. The replay marks
        # the store before it revokes the family, and this looks after saving, so one of the two
        # always sees the other (RFC 6749 §4.1.2).
        tokens.revoke_family(family, reason="code_replayed")


def claim_refresh_token(refresh_token: Any, client: Client) -> RefreshToken | None:
    """tokens.claim; a rotated token that comes back late (tokens.Reused) also ends the session
    it came from, and its agencies are told (RFC 9700 §4.14.2)."""
    try:
        return tokens.claim(refresh_token, client)
    except tokens.Reused as reuse:
        logout.end_session_by_sid(reuse.sid, reason="refresh_token_reused")
        raise


def refresh_principal(refresh_token: RefreshToken, client: Client) -> Principal | None:
    """The citizen of a claimed refresh token, as the client sees them (None: no longer known)."""
    citizen = getattr(refresh_token, "claimed_citizen", None)  # read by the claim (tokens.claim)
    if citizen is None or citizen.subject_key is None:
        return None
    return Principal(citizen, refresh_token.auth_time, refresh_token.method, refresh_token.sid,
                     subject_for(citizen, client))


class RefreshTokenGrant(grants.RefreshTokenGrant):
    """RFC 6749 §6 with rotation on every use and reuse detection (RFC 9700 §4.14.2)."""

    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshToken | None:
        return claim_refresh_token(refresh_token, self.request.client)

    def authenticate_user(self, refresh_token: RefreshToken) -> Principal | None:
        return refresh_principal(refresh_token, self.request.client)

    def revoke_old_credential(self, refresh_token: RefreshToken) -> None:
        """Nothing to do: the old token was marked rotated when it was claimed."""


# ---- token exchange between agencies (RFC 8693) ------------------------------------------------

ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
#: How many agencies may have acted in turn (``act`` nested this deep at most).
MAX_ACTORS = 4


class InvalidTargetError(OAuth2Error):
    """RFC 8693 §2.2.2: the audience is not one this client may have a token for."""

    error = "invalid_target"


def _actors(act: Any) -> int:
    """How many actors a well-formed ``act`` claim names (0 for none); -1 when it is malformed."""
    depth = 0
    while act is not None:
        if not isinstance(act, dict) or not isinstance(act.get("sub"), str) or depth > MAX_ACTORS:
            return -1
        depth, act = depth + 1, act.get("act")
    return depth


@dataclass
class Exchange:
    """A validated exchange: the citizen as the receiving agency sees them, and what to issue."""

    audience: Client
    principal: Principal
    scope: str
    subject_fp: str


class TokenExchangeGrant(grants.BaseGrant, grants.TokenEndpointMixin):
    """RFC 8693: agency A exchanges a citizen's access token it holds for one meant for agency B,
    as an operator's delegation A -> B allows (protocol.delegations).

    The new token is an RFC 9068 access token of B's: ``aud`` and ``client_id`` are B (so B's API,
    B's introspection and userinfo treat it as B's own), ``sub`` is the citizen as B sees them
    (pairwise by B's sector), ``act`` names A (nesting the subject token's ``act``); ``sid``,
    ``auth_time``, ``acr`` and ``amr`` are those of the citizen's login; the scope is no wider
    than the subject token's and the delegation's, and it expires no later than the subject
    token. No refresh token, no ID token. Confidential clients only: a public client cannot
    authenticate here (``invalid_client``, RFC 6749 §5.2)."""

    GRANT_TYPE = TOKEN_EXCHANGE
    TOKEN_ENDPOINT_AUTH_METHODS = INTROSPECTION_AUTH_METHODS  # every method but none

    exchange: Exchange | None = None

    def validate_token_request(self) -> None:
        client = None
        try:
            client = self.authenticate_token_endpoint_client()
            self.request.client = client
            self.exchange = self._validate(client)
        except OAuth2Error as error:
            delegations.record(error.error, client.client_id if client else None, self._param("audience"),
                               subject_fp=getattr(error, "subject_fp", None))
            raise

    def _param(self, name: str) -> str | None:
        value = self.request.form.get(name)
        return value if isinstance(value, str) and value else None

    def _validate(self, client: Client) -> Exchange:
        for name in ("actor_token", "actor_token_type"):
            if self._param(name):
                raise InvalidRequestError(f"'{name}' is not supported: the authenticated client is the actor")
        requested = self._param("requested_token_type")
        if requested and requested != ACCESS_TOKEN_TYPE:
            raise InvalidRequestError(f"requested_token_type: only {ACCESS_TOKEN_TYPE} is issued")
        subject_token, subject_type = self._param("subject_token"), self._param("subject_token_type")
        if not subject_token or not subject_type:
            raise InvalidRequestError("Missing 'subject_token' or 'subject_token_type'")
        if subject_type != ACCESS_TOKEN_TYPE:
            raise InvalidRequestError(f"subject_token_type: only {ACCESS_TOKEN_TYPE} is accepted")
        if self._param("resource"):
            raise InvalidTargetError("Name the agency with 'audience' (its client_id); 'resource' is not supported")
        audience_id = self._param("audience")
        if not audience_id:
            raise InvalidRequestError("Missing 'audience'")

        # The subject token: one of our access tokens (not an ID token), live, issued to this client.
        try:
            claims = decode_access_token(subject_token)
        except BearerTokenError as exc:
            raise InvalidGrantError(f"subject_token is not a valid access token ({exc})") from None
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if claims.get("client_id") != client.client_id or client.client_id not in auds:
            raise InvalidGrantError("subject_token was not issued to this client")
        if access_token_revoked(claims):
            raise InvalidGrantError("subject_token was revoked, or the citizen's session has ended")
        if claims.get("idp_act_ref") is not None:
            # the guardian's pairwise sub would travel to another agency, and the receiving agency
            # was never checked for accepting guardians
            raise InvalidGrantError("subject_token was issued to a guardian acting for a minor: it cannot be exchanged")
        depth = _actors(claims.get("act"))
        if depth < 0 or depth >= MAX_ACTORS:
            raise InvalidGrantError(f"subject_token has passed through too many agencies (at most {MAX_ACTORS})")
        citizen_id = open_ref(claims.get("idp_ref", "")) if isinstance(claims.get("idp_ref"), str) else None
        person = directory.profile(citizen_id) if isinstance(citizen_id, int) else None
        method = next((m for m, acr in ACR.items() if acr == claims.get("acr")), None)
        if person is None or method is None or not isinstance(claims.get("auth_time"), int):
            raise InvalidGrantError("subject_token names no citizen")
        subject_fp = audit.fingerprint("nid", person.national_id)

        try:
            # The receiving agency, and the operator's delegation to it.
            target = clients.find(audience_id)
            if target is None or not target.trusted:
                raise InvalidTargetError("audience is not an agency that may receive a token")
            delegation = delegations.find(client.client_id, target.client_id)
            if delegation is None:
                raise InvalidTargetError(f"this client may not call {target.client_id} for a citizen (no delegation)")

            # The scope: what the subject token, the delegation and the receiving agency all allow.
            allowed = set(claims.get("scope", "").split()) & set(delegation.scope.split())
            allowed &= set(target.get_allowed_scope(delegation.scope).split())
            allowed -= delegations.NOT_DELEGABLE
            asked = self.request.payload.scope
            if asked:
                wanted = list(dict.fromkeys(asked.split()))
                wider = [s for s in wanted if s not in allowed]
                if wider:
                    raise InvalidScopeError(f"not allowed for this exchange: {' '.join(wider)}")
            else:
                wanted = [s for s in SCOPES if s in allowed]
            if not wanted:
                raise InvalidScopeError("the subject token and the delegation have no scope in common")
        except OAuth2Error as error:
            error.subject_fp = subject_fp
            raise

        act: dict[str, Any] = {"sub": client.client_id}
        if claims.get("act") is not None:
            act["act"] = claims["act"]
        principal = Principal(person, claims["auth_time"], method, claims.get("sid") or "",
                              subject_for(person, target), act=act, exp=int(claims["exp"]))
        return Exchange(target, principal, " ".join(wanted), subject_fp)

    def create_token_response(self):
        ex, caller = self.exchange, self.request.client
        now = int(time.time())
        ex.principal.exp = min(ex.principal.exp, now + settings.tokens.access_token_ttl)
        if ex.principal.exp <= now:
            error = InvalidGrantError("subject_token has expired")
            delegations.record(error.error, caller.client_id, ex.audience.client_id, subject_fp=ex.subject_fp)
            raise error
        token = self.server.generate_token(grant_type=TOKEN_EXCHANGE, client=ex.audience, user=ex.principal,
                                           scope=ex.scope, expires_in=ex.principal.exp - now,
                                           include_refresh_token=False)
        token.pop("refresh_token", None)
        token["issued_token_type"] = ACCESS_TOKEN_TYPE
        delegations.record("issued", caller.client_id, ex.audience.client_id, subject_fp=ex.subject_fp,
                           scope=token.get("scope", ""), sid=ex.principal.sid, actors=_actors(ex.principal.act))
        return 200, token, self.TOKEN_RESPONSE_HEADER


# ---- revocation (RFC 7009) and introspection (RFC 7662) ----------------------------------------

class _OurTokens:
    """What revocation and introspection share: only `token` required (an unknown
    token_type_hint is ignored, RFC 7009 §2.1 and RFC 7662 §2.1), and a token looked up as one
    of our JWT access tokens or a refresh token."""

    def check_params(self, request, client):
        if not request.form.get("token"):
            raise InvalidRequestError("Missing 'token'")

    def query_token(self, token_string, token_type_hint):
        if token_type_hint != "refresh_token" and "." in token_string:
            try:
                return tokens.AccessToken(verify_access_token(token_string, check_revoked=False))
            except BearerTokenError:
                return None
        return tokens.find(token_string)


class RevocationEndpoint(_OurTokens, rfc7009.RevocationEndpoint):
    """RFC 7009: a client revokes its own access or refresh tokens (public clients too, §5)."""

    CLIENT_AUTH_METHODS = AUTH_METHODS

    def revoke_token(self, token, request) -> None:
        if isinstance(token, tokens.AccessToken):
            token.revoke()
        else:
            tokens.revoke_family(token.family_id, reason="refresh_token_revoked")


class IntrospectionEndpoint(_OurTokens, rfc7662.IntrospectionEndpoint):
    """RFC 7662 for agencies' APIs: an authenticated client may introspect tokens issued to it."""

    CLIENT_AUTH_METHODS = INTROSPECTION_AUTH_METHODS

    def check_permission(self, token, client, request) -> bool:
        return token.check_client(client)

    def introspect_token(self, token) -> dict[str, Any]:
        payload = tokens.introspection_of(token)
        if isinstance(token, RefreshToken):
            citizen = directory.get(token.citizen_id)
            client = clients.find(token.client_id)
            if citizen is not None and client is not None:
                payload["sub"] = subject_for(citizen, client)
        return payload


# ---- the server --------------------------------------------------------------------------------

class Server(AuthorizationServer):
    """Authlib's Flask server for the token, revocation and introspection endpoints."""

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
    server.init_app(app, query_client=clients.find, save_token=_save_token)
    server.register_grant(AuthorizationCodeGrant, [S256Verifier(required=True), OpenIDConnectCode(require_nonce=False)])
    server.register_grant(RefreshTokenGrant)
    server.register_grant(TokenExchangeGrant)
    server.register_endpoint(RevocationEndpoint)
    server.register_endpoint(IntrospectionEndpoint)
    server.register_client_auth_method(PrivateKeyJWT.CLIENT_AUTH_METHOD, PrivateKeyJWT())
    access_token_ttl = cfg.tokens.access_token_ttl
    server.register_token_generator("default", AccessTokenGenerator(
        cfg.server.issuer, alg=cfg.keys.access_token_alg,
        refresh_token_generator=lambda **kwargs: tokens.new_refresh_token(),
        expires_generator=lambda client, grant_type: access_token_ttl,
    ))
