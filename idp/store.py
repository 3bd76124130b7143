"""Short-lived state, each record with a TTL. The one place that names Redis keys.

``redis://`` talks to a real Redis; ``memory://`` to an in-process Redis (fakeredis), so the
embedded default runs the very same redis-py calls. Losing the store logs people out and
forgets live counters; it never loses a durable fact (those live in SQL).

Key schema (all under the configured prefix):

====================================  =========================================================
``req:{id}``                          a paused authorization request (JSON), until login ends
``otp:{id}``                          an OTP challenge (hash: code hash, citizen, attempts)
``sess:{sid}``                        a single sign-on session (JSON)
``code:{sha256(code)}``               an authorization code's grant (JSON); consumed by GETDEL
``code-used:{sha256(code)}``          marks a redeemed code, to detect and punish replay
``nonce:{client}:{sha256(nonce)}``    a nonce already bound to a code (replay detection)
``revoked-at:{jti}``                  an access token revoked before its expiry
``hll:day:{date}[:{client}]``         HyperLogLog of today's unique citizens (live figures)
====================================  =========================================================
"""
from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

import redis

_memory_server = None
_memory_lock = threading.Lock()


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class StoreUnavailable(Exception):
    """The store cannot be reached; the request fails cleanly with 503."""


def connect(url: str) -> redis.Redis:
    """A redis-py client for ``redis://...`` or the process-wide in-memory server for ``memory://``."""
    global _memory_server
    if url == "memory://":
        import fakeredis

        with _memory_lock:
            if _memory_server is None:
                _memory_server = fakeredis.FakeServer()
        return fakeredis.FakeRedis(server=_memory_server, decode_responses=True)
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=2.0,
                                socket_connect_timeout=2.0, health_check_interval=30,
                                retry_on_timeout=False)


class Store:
    """Named short-lived records over one redis-py client."""

    def __init__(self, url: str, prefix: str):
        self.url = url
        self.prefix = prefix
        self.redis = connect(url)

    # ---- keys -----------------------------------------------------------------------------
    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # ---- generic JSON records ---------------------------------------------------------------
    def _put(self, key: str, payload: dict[str, Any], ttl: int) -> None:
        self.redis.set(key, json.dumps(payload, separators=(",", ":")), ex=ttl)

    def _get(self, key: str) -> dict[str, Any] | None:
        raw = self.redis.get(key)
        return json.loads(raw) if raw else None

    # ---- paused authorization requests ------------------------------------------------------
    def put_pending(self, request_id: str, payload: dict[str, Any], ttl: int) -> None:
        """Keep an authorization request while the person logs in."""
        self._put(self._k("req", request_id), payload, ttl)

    def get_pending(self, request_id: str) -> dict[str, Any] | None:
        """The paused request, or None when it expired or never existed."""
        return self._get(self._k("req", request_id))

    def update_pending(self, request_id: str, payload: dict[str, Any]) -> bool:
        """Rewrite a paused request, keeping its remaining lifetime (False if it is gone)."""
        key = self._k("req", request_id)
        ttl = self.redis.ttl(key)
        if ttl is None or ttl <= 0:
            return False
        self._put(key, payload, ttl)
        return True

    def delete_pending(self, request_id: str) -> None:
        """Forget a paused request once it is answered."""
        self.redis.delete(self._k("req", request_id))

    # ---- OTP challenges ---------------------------------------------------------------------
    def put_challenge(self, challenge_id: str, fields: dict[str, str], ttl: int) -> None:
        """Store a challenge (code hash, citizen, counters) with its lifetime."""
        key = self._k("otp", challenge_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping={**fields, "attempts": 0})
        pipe.expire(key, ttl)
        pipe.execute()

    def get_challenge(self, challenge_id: str) -> dict[str, str] | None:
        """A live challenge's fields with its remaining seconds as ``ttl``, or None."""
        key = self._k("otp", challenge_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(key)
        pipe.ttl(key)
        fields, ttl = pipe.execute()
        if not fields:
            return None
        fields["ttl"] = str(max(ttl, 0))
        return fields

    def count_challenge_attempt(self, challenge_id: str) -> int:
        """Atomically count one wrong code; returns the total so far (0 if the challenge is gone)."""
        key = self._k("otp", challenge_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.exists(key)
        pipe.hincrby(key, "attempts", 1)
        exists, attempts = pipe.execute()
        if not exists:
            self.redis.delete(key)  # HINCRBY on a missing key created it without a TTL
            return 0
        return int(attempts)

    def consume_challenge(self, challenge_id: str) -> bool:
        """End a challenge; True for exactly one caller, so a code is single use."""
        return self.redis.delete(self._k("otp", challenge_id)) == 1

    # ---- single sign-on sessions ------------------------------------------------------------
    def put_session(self, sid: str, payload: dict[str, Any], ttl: int) -> None:
        """Create or replace an SSO session."""
        self._put(self._k("sess", sid), payload, ttl)

    def get_session(self, sid: str) -> dict[str, Any] | None:
        """A live SSO session, or None."""
        return self._get(self._k("sess", sid))

    def add_session_client(self, sid: str, client_id: str) -> None:
        """Remember that a client took part in a session (for logout), keeping its TTL."""
        key = self._k("sess", sid)
        session = self._get(key)
        if session is None or client_id in session.get("clients", []):
            return
        session.setdefault("clients", []).append(client_id)
        ttl = self.redis.ttl(key)
        if ttl and ttl > 0:
            self._put(key, session, ttl)

    def delete_session(self, sid: str) -> None:
        """End an SSO session."""
        self.redis.delete(self._k("sess", sid))

    # ---- authorization codes ----------------------------------------------------------------
    def put_code(self, code: str, payload: dict[str, Any], ttl: int, nonce_ttl: int) -> None:
        """Save a code's grant; its nonce (if any) is recorded as used in the same round trip."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self._k("code", _sha(code)), json.dumps(payload, separators=(",", ":")), ex=ttl)
        if payload.get("nonce"):
            pipe.set(self._nonce_key(payload["client_id"], payload["nonce"]), "1", ex=nonce_ttl)
        pipe.execute()

    def consume_code(self, code: str, used_ttl: int) -> tuple[dict[str, Any] | None, bool]:
        """Redeem a code exactly once (atomic GETDEL); returns (grant, replayed).

        A redeemed code leaves a marker, so that a second redemption is told apart from a
        code that never existed (RFC 6749 §4.1.2: a replay should revoke what it issued).
        """
        h = _sha(code)
        pipe = self.redis.pipeline(transaction=False)
        pipe.getdel(self._k("code", h))
        pipe.exists(self._k("code-used", h))
        raw, used = pipe.execute()
        if raw is None:
            return None, bool(used)
        self.redis.set(self._k("code-used", h), "1", ex=used_ttl)
        return json.loads(raw), False

    # ---- nonces -----------------------------------------------------------------------------
    def _nonce_key(self, client_id: str, nonce: str) -> str:
        return self._k("nonce", client_id, _sha(nonce))

    def nonce_used(self, client_id: str, nonce: str) -> bool:
        """Whether a nonce was already bound to a code for this client."""
        return bool(self.redis.exists(self._nonce_key(client_id, nonce)))

    # ---- access token revocation ------------------------------------------------------------
    def revoke_access_token(self, jti: str, ttl: int) -> None:
        """Refuse a JWT access token until it would have expired anyway."""
        self.redis.set(self._k("revoked-at", jti), "1", ex=max(ttl, 1))

    def access_token_revoked(self, jti: str) -> bool:
        """Whether an access token was revoked."""
        return bool(self.redis.exists(self._k("revoked-at", jti)))

    # ---- live counters ----------------------------------------------------------------------
    def count_daily_user(self, day: str, client_id: str, member: str, ttl: int) -> None:
        """Add a citizen to today's unique-user HyperLogLogs (overall and per client)."""
        pipe = self.redis.pipeline(transaction=False)
        for key in (self._k("hll", "day", day), self._k("hll", "day", day, client_id)):
            pipe.pfadd(key, member)
            pipe.expire(key, ttl)
        pipe.execute()

    def daily_users(self, day: str, client_id: str | None = None) -> int:
        """Approximate unique citizens on a day (overall, or for one client)."""
        key = self._k("hll", "day", day, client_id) if client_id else self._k("hll", "day", day)
        return int(self.redis.pfcount(key))

    # ---- health -----------------------------------------------------------------------------
    def ping(self) -> bool:
        """True when the store answers."""
        return bool(self.redis.ping())
