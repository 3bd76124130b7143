"""Short-lived state, each record with a TTL. The one place that names Redis keys.

``redis://`` talks to a real Redis; ``memory://`` to an in-process Redis (fakeredis), so the
embedded default runs the very same redis-py calls. Losing the store logs people out and
forgets live counters; it never loses a durable fact (those live in SQL).

Key schema (all under the configured prefix):

====================================  =========================================================
``req:{id}``                          a paused authorization request (JSON), until login ends
``otp:{id}``                          an OTP challenge (hash: code hash, citizen, attempts, state)
``sms-down``                          set for a minute after the SMS gateway failed
``totp-new:{sid}``                    an authenticator secret shown but not yet confirmed
``sess:{sid}``                        a single sign-on session (JSON); ``sid`` = sha256 of the
                                      browser's cookie (``session_id``), never the cookie itself
``psid:{public sid}``                 the session a public id (the `sid` claim in tokens) belongs to
``sess-ended:{public sid}``           a session that ended: its access tokens are refused
``sess-of:{citizen_id}``              the ids of a citizen's SSO sessions (set; TTL = session_ttl,
                                      renewed at each login; members may be stale, which is harmless)
``code:{sha256(code)}``               an authorization code's grant (JSON); consumed by GETDEL
``code-used:{sha256(code)}``          marks a redeemed code, to detect and punish replay
``nonce:{client}:{sha256(nonce)}``    a nonce already bound to a code (replay detection)
``revoked-at:{jti}``                  an access token revoked before its expiry
``jti:{client}:{sha256(jti)}``        a private_key_jwt client assertion already used (until it expires)
``hll:day:{date}[:{client}]``         HyperLogLog of today's unique citizens (live figures)
``live:logins:{date}``                today's logins per client (hash: client -> count)
``live:since:{date}``                 when the live figures of a day began (a later time = flushed)
``rl:{limit}:{fingerprint}``          a sliding-window log (sorted set of hit times) of one limit
``fail:{fingerprint}``                consecutive wrong codes of a national ID + mobile pair
``cool:{fingerprint}``                a cool-off in force (its TTL is the wait)
``clients:version``                   a random value renewed whenever a registered client changes
                                      (each process's client cache is valid under one value)
====================================  =========================================================
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from flask import current_app
from werkzeug.local import LocalProxy

_memory_server = None
_memory_lock = threading.Lock()


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


#: Lifetime of a record a late write re-created by accident (HSET/HINCRBY on a challenge that
#: just ended) until its clean-up deletes it: it expires even if the process dies in between.
ORPHAN_TTL = 60


@dataclass(frozen=True)
class Window:
    """One sliding window of a named limit for one fingerprint: ``count`` hits per ``period`` s."""

    limit: str
    fp: str
    count: int
    period: int


def connect(url: str) -> redis.Redis:
    """A redis-py client for ``redis://...`` or the process-wide in-memory server for ``memory://``."""
    global _memory_server
    if url == "memory://":
        import fakeredis  # only the embedded default needs it: production nodes never load it

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
        """Rewrite a paused request, keeping its remaining lifetime (False if it is gone).

        One round trip: SET ... XX KEEPTTL writes only an existing key and keeps its TTL."""
        key = self._k("req", request_id)
        return bool(self.redis.set(key, json.dumps(payload, separators=(",", ":")), xx=True, keepttl=True))

    def delete_pending(self, request_id: str) -> None:
        """Forget a paused request once it is answered."""
        self.redis.delete(self._k("req", request_id))

    # ---- OTP challenges ---------------------------------------------------------------------
    def put_challenge(self, challenge_id: str, fields: dict[str, str], ttl: int,
                      count_in: Window | None = None, spend: bool = False) -> None:
        """Store a challenge (code hash, citizen, counters) with its lifetime. ``count_in`` is the
        send window of its mobile: one hit is recorded in it, in the same transaction, when
        ``spend`` (a code really sent); otherwise it is only read, with as many commands."""
        key = self._k("otp", challenge_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping={**fields, "attempts": 0})
        pipe.expire(key, ttl)
        if count_in is not None:
            self._hit_or_look(pipe, count_in, spend)
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

    def update_challenge(self, challenge_id: str, fields: dict[str, str], ttl: int | None = None,
                         count_in: Window | None = None, spend: bool = False) -> bool:
        """Change fields of a live challenge (and optionally its lifetime); False if it is gone.
        ``count_in`` and ``spend`` as in put_challenge."""
        key = self._k("otp", challenge_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.exists(key)
        pipe.hset(key, mapping=fields)
        # A key HSET made from nothing gets a TTL in the same transaction (NX: a live challenge's
        # TTL is kept), so it expires even if the clean-up below never runs (Redis >= 7.0).
        pipe.expire(key, ttl or ORPHAN_TTL, **({} if ttl else {"nx": True}))
        if count_in is not None:
            # in the same round trip whatever the pair, so a registered pair's resend takes no
            # longer; a challenge that ended in the very same instant costs one hit for nothing
            self._hit_or_look(pipe, count_in, spend)
        exists = pipe.execute()[0]
        if not exists:
            self.redis.delete(key)  # HSET on a missing key made one without a TTL
            return False
        return True

    def set_sms_health(self, ok: bool, ttl: int = 60) -> None:
        """Remember for a minute that the SMS gateway is failing (or forget it)."""
        if ok:
            self.redis.delete(self._k("sms-down"))
        else:
            self.redis.set(self._k("sms-down"), "1", ex=ttl)

    def sms_failing(self) -> bool:
        """Whether a send failed in the last minute."""
        return bool(self.redis.exists(self._k("sms-down")))

    def count_challenge_attempt(self, challenge_id: str) -> int:
        """Atomically count one wrong code; returns the total so far (0 if the challenge is gone)."""
        key = self._k("otp", challenge_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.exists(key)
        pipe.hincrby(key, "attempts", 1)
        pipe.expire(key, ORPHAN_TTL, nx=True)  # as in update_challenge: never a key without a TTL
        exists, attempts, _ = pipe.execute()
        if not exists:
            self.redis.delete(key)  # HINCRBY on a missing key created it without a TTL
            return 0
        return int(attempts)

    def consume_challenge(self, challenge_id: str) -> bool:
        """End a challenge; True for exactly one caller, so a code is single use."""
        return self.redis.delete(self._k("otp", challenge_id)) == 1

    # ---- single sign-on sessions ------------------------------------------------------------
    @staticmethod
    def session_id(cookie: str) -> str:
        """What a session is known by in the store: a hash of its cookie, as codes and refresh
        tokens are stored hashed, so reading the store gives no one a session to present."""
        return _sha(cookie)

    def put_session(self, sid: str, payload: dict[str, Any], ttl: int) -> None:
        """Create an SSO session, the lookup from its public id (``psid``), and its place in its
        citizen's set (which lives as long as the citizen's newest session): one round trip."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self._k("sess", sid), json.dumps(payload, separators=(",", ":")), ex=ttl)
        if payload.get("psid"):
            pipe.set(self._k("psid", payload["psid"]), sid, ex=ttl)
        index = self._k("sess-of", str(payload["citizen_id"]))
        pipe.sadd(index, sid)
        pipe.expire(index, ttl)
        pipe.execute()

    def session_by_public_id(self, psid: str) -> dict[str, Any] | None:
        """The live session whose public id (the `sid` claim agencies see) this is, or None."""
        if not isinstance(psid, str) or not psid or len(psid) > 64:
            return None
        sid = self.redis.get(self._k("psid", psid))
        return self.get_session(sid) if sid else None

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
        # XX KEEPTTL: only while the session lives, with its remaining lifetime (one round trip)
        self.redis.set(key, json.dumps(session, separators=(",", ":")), xx=True, keepttl=True)

    def delete_session(self, sid: str) -> None:
        """Delete an SSO session replaced by a new login in the same browser (its tokens stay
        valid; a logout goes through logout.end_session instead)."""
        session = self.get_session(sid)
        keys = [self._k("sess", sid)] + ([self._k("psid", session["psid"])] if session and session.get("psid") else [])
        self.redis.delete(*keys)

    # ---- a citizen's sessions (for logging a citizen out everywhere) ------------------------
    def citizen_session_ids(self, citizen_id: int) -> list[str]:
        """The ids of a citizen's sessions (some may have ended already)."""
        return sorted(self.redis.smembers(self._k("sess-of", str(citizen_id))))

    def end_sessions(self, citizen_id: int, sids: list[str], psids: list[str] = ()) -> None:
        """Delete SSO sessions and drop them from their citizen's set, in one round trip; the
        access tokens issued within them (which carry the public ids) are refused from now on."""
        if not sids:
            return
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(*[self._k("sess", sid) for sid in sids])
        pipe.srem(self._k("sess-of", str(citizen_id)), *sids)
        for psid in psids:
            pipe.delete(self._k("psid", psid))
            pipe.set(self._k("sess-ended", psid), "1", ex=86400)
        pipe.execute()

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

    def access_token_revoked(self, jti: str, sid: str | None = None) -> bool:
        """Whether an access token was revoked, or its session ended (one round trip)."""
        keys = [self._k("revoked-at", jti)] + ([self._k("sess-ended", sid)] if sid else [])
        return bool(self.redis.exists(*keys))

    # ---- client assertions (private_key_jwt) ------------------------------------------------
    def use_client_assertion(self, client_id: str, jti: str, ttl: int) -> bool:
        """Mark an assertion's jti used (atomic SET NX) until the assertion expires; True for
        exactly one caller, so an assertion is single use (RFC 7523 §3 item 7)."""
        return bool(self.redis.set(self._k("jti", client_id, _sha(jti)), "1", ex=max(int(ttl), 1), nx=True))

    # ---- live counters ----------------------------------------------------------------------
    def count_daily_user(self, day: str, client_id: str, member: str, ttl: int) -> None:
        """Add a citizen to today's unique-user HyperLogLogs (overall and per client)."""
        pipe = self.redis.pipeline(transaction=False)
        for key in (self._k("hll", "day", day), self._k("hll", "day", day, client_id)):
            pipe.pfadd(key, member)
            pipe.expire(key, ttl)
        pipe.hincrby(self._k("live", "logins", day), client_id, 1)
        pipe.expire(self._k("live", "logins", day), ttl)
        pipe.set(self._k("live", "since", day), f"{time.time():.3f}", nx=True, ex=ttl)
        pipe.execute()

    def live_day(self, day: str) -> tuple[float | None, dict[str, int], dict[str, int], int]:
        """A day's live figures: (since, logins per client, unique citizens per client, unique
        citizens overall). ``since`` is None when the store holds nothing for that day."""
        logins_key = self._k("live", "logins", day)
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self._k("live", "since", day))
        pipe.hgetall(logins_key)
        pipe.pfcount(self._k("hll", "day", day))
        since, logins, total = pipe.execute()
        clients = sorted(logins)
        pipe = self.redis.pipeline(transaction=False)
        for client_id in clients:
            pipe.pfcount(self._k("hll", "day", day, client_id))
        uniques = dict(zip(clients, (int(n) for n in pipe.execute()))) if clients else {}
        return (float(since) if since else None), {k: int(v) for k, v in logins.items()}, uniques, int(total)

    def daily_users(self, day: str, client_id: str | None = None) -> int:
        """Approximate unique citizens on a day (overall, or for one client)."""
        key = self._k("hll", "day", day, client_id) if client_id else self._k("hll", "day", day)
        return int(self.redis.pfcount(key))

    # ---- authenticator enrolment ----------------------------------------------------------
    def put_pending_totp(self, sid: str, secret: str, ttl: int) -> None:
        """A secret shown to the person, waiting for its first code."""
        self.redis.set(self._k("totp-new", sid), secret, ex=ttl)

    def get_pending_totp(self, sid: str) -> str | None:
        return self.redis.get(self._k("totp-new", sid))

    def delete_pending_totp(self, sid: str) -> None:
        self.redis.delete(self._k("totp-new", sid))

    # ---- rate limits ------------------------------------------------------------------------
    def _hit_or_look(self, pipe, window: Window, hit: bool) -> None:
        """Queue on a pipeline one hit of a sliding window (no check: the caller checked), or,
        when not ``hit``, the same number of commands that change nothing but stale hits: the
        two paths cost the same, so their timing tells nothing (a code sent or not)."""
        key = self._k("rl", window.limit, window.fp)
        now = time.time()
        pipe.zremrangebyscore(key, 0, now - window.period)
        if hit:
            pipe.zadd(key, {f"{now:.6f}:{os.urandom(4).hex()}": now})
            pipe.expire(key, window.period)
        else:
            pipe.zscore(key, f"{now:.6f}:{os.urandom(4).hex()}")
            pipe.ttl(key)

    def hit_window(self, limit: str, fp: str, count: int, period: int) -> int:
        """Record one hit in a sliding window; returns 0 if allowed, else seconds to wait.

        A sorted set of hit times per key: old hits are trimmed, this hit is added, and if the
        window is then over its count the hit is taken back (a refused attempt does not extend
        the wait). One round trip when allowed.
        """
        key = self._k("rl", limit, fp)
        now = time.time()
        member = f"{now:.6f}:{os.urandom(4).hex()}"
        pipe = self.redis.pipeline(transaction=True)
        pipe.zremrangebyscore(key, 0, now - period)
        pipe.zadd(key, {member: now})
        pipe.zcard(key)
        pipe.zrange(key, 0, 0, withscores=True)
        pipe.expire(key, period)
        _, _, total, oldest, _ = pipe.execute()
        if total <= count:
            return 0
        self.redis.zrem(key, member)
        first = oldest[0][1] if oldest else now
        return max(1, int(first + period - now + 0.999))

    def window_wait(self, limit: str, fp: str, count: int, period: int) -> int:
        """Seconds until one more hit would be allowed (0 now), without recording a hit."""
        key = self._k("rl", limit, fp)
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcount(key, now - period, "+inf")
        pipe.zrangebyscore(key, now - period, "+inf", start=0, num=1, withscores=True)
        total, oldest = pipe.execute()
        if total < count:
            return 0
        return max(1, int(oldest[0][1] + period - now + 0.999)) if oldest else 0

    def count_failure(self, fp: str, memory: int) -> int:
        """One more consecutive wrong code for a pair; returns the run's length."""
        key = self._k("fail", fp)
        pipe = self.redis.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, memory)
        total, _ = pipe.execute()
        return int(total)

    def clear_failures(self, fp: str) -> None:
        """A right code ends the run of wrong ones."""
        self.redis.delete(self._k("fail", fp), self._k("cool", fp))

    def start_cooloff(self, fp: str, seconds: int) -> None:
        """Refuse codes for this pair for a while."""
        self.redis.set(self._k("cool", fp), "1", ex=max(1, seconds))

    def cooloff_left(self, fp: str) -> int:
        """Seconds left in a cool-off (0 when none)."""
        ttl = self.redis.ttl(self._k("cool", fp))
        return max(0, int(ttl or 0))

    def reset_limits(self, fps: list[str]) -> int:
        """Clear windows, failures and cool-offs of some fingerprints (an operator's decision)."""
        keys = [k for fp in fps for k in self.redis.scan_iter(match=self._k("rl", "*", fp))]
        keys += [self._k("fail", fp) for fp in fps] + [self._k("cool", fp) for fp in fps]
        return int(self.redis.delete(*keys)) if keys else 0

    # ---- registered clients: the version every process's client cache is checked against ----
    def clients_version(self) -> str | None:
        """The current version of the registered clients (None before the first change)."""
        return self.redis.get(self._k("clients", "version"))

    def new_clients_version(self, ttl: int = 7 * 86400) -> None:
        """Announce that a client changed: a fresh random value, so that every cached copy made
        under any earlier value (or under none, after this key expired) is read again."""
        self.redis.set(self._k("clients", "version"), secrets.token_urlsafe(12), ex=ttl)

    # ---- health -----------------------------------------------------------------------------
    def ping(self) -> bool:
        """True when the store answers."""
        return bool(self.redis.ping())


#: The short-lived store of the current app.
store = LocalProxy(lambda: current_app.extensions["idp.store"])
