"""The protocol's records: paused authorization requests, SSO sessions, authorization codes,
used nonces and client assertions, revoked access tokens, the clients version."""
from __future__ import annotations

import json
import secrets
import threading
from typing import Any, Callable

from .base import StoreBase, sha


class ProtocolRecords(StoreBase):
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
        """Forget a paused request once it is answered (deferrable)."""
        pipe = self._writes()
        pipe.delete(self._k("req", request_id))
        self._send(pipe)

    # ---- single sign-on sessions ------------------------------------------------------------
    @staticmethod
    def session_id(cookie: str) -> str:
        """What a session is known by in the store: a hash of its cookie, as codes and refresh
        tokens are stored hashed, so reading the store gives no one a session to present."""
        return sha(cookie)

    def put_session(self, sid: str, payload: dict[str, Any], ttl: int) -> None:
        """Create an SSO session, the lookup from its public id (``psid``), and its place in its
        citizen's set (which lives as long as the citizen's newest session): one round trip
        (deferrable)."""
        pipe = self._writes()
        pipe.set(self._k("sess", sid), json.dumps(payload, separators=(",", ":")), ex=ttl)
        if payload.get("psid"):
            pipe.set(self._k("psid", payload["psid"]), sid, ex=ttl)
        index = self._k("sess-of", str(payload["citizen_id"]))
        pipe.sadd(index, sid)
        pipe.expire(index, ttl)
        self._send(pipe)

    def rewrite_session(self, sid: str, payload: dict[str, Any]) -> None:
        """Rewrite a live session's record, keeping its lifetime (SET XX KEEPTTL; deferrable)."""
        pipe = self._writes()
        pipe.set(self._k("sess", sid), json.dumps(payload, separators=(",", ":")), xx=True, keepttl=True)
        self._send(pipe)

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
        # XX KEEPTTL: only while the session lives, with its remaining lifetime (deferrable)
        self.rewrite_session(sid, session)

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

    def citizen_sessions(self, citizen_id: int, limit: int = 100) -> list[dict[str, Any]]:
        """The live sessions of a citizen (their records, in no particular order; at most
        ``limit``), for the citizen's own account page: two round trips (SMEMBERS, then one MGET).
        Ended members of the set are skipped, and so is any record of another citizen."""
        sids = self.citizen_session_ids(citizen_id)[:limit]
        if not sids:
            return []
        raws = self.redis.mget([self._k("sess", sid) for sid in sids])
        records = [json.loads(raw) for raw in raws if raw]
        return [r for r in records if r.get("citizen_id") == citizen_id]

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
        """Save a code's grant; its nonce (if any) is recorded as used in the same round trip
        (deferrable)."""
        pipe = self._writes()
        pipe.set(self._k("code", sha(code)), json.dumps(payload, separators=(",", ":")), ex=ttl)
        if payload.get("nonce"):
            pipe.set(self._nonce_key(payload["client_id"], payload["nonce"]), "1", ex=nonce_ttl)
        self._send(pipe)

    def consume_code(self, code: str, used_ttl: int) -> tuple[dict[str, Any] | None, bool]:
        """Redeem a code exactly once (atomic GETDEL); returns (grant, replayed).

        A redeemed code leaves a marker, so that a second redemption is told apart from a
        code that never existed (RFC 6749 §4.1.2: a replay should revoke what it issued).
        """
        h = sha(code)
        used_key = self._k("code-used", h)
        pipe = self.redis.pipeline(transaction=True)  # one round trip when the code is live
        pipe.getdel(self._k("code", h))
        pipe.set(used_key, "1", ex=used_ttl, nx=True)
        raw, marked = pipe.execute()
        if raw is not None:
            return json.loads(raw), False
        if marked:  # no such code, and no marker before this one: take it back
            self.redis.delete(used_key)
        return None, not marked

    # ---- nonces -----------------------------------------------------------------------------
    def _nonce_key(self, client_id: str, nonce: str) -> str:
        return self._k("nonce", client_id, sha(nonce))

    def nonce_used(self, client_id: str, nonce: str) -> bool:
        """Whether a nonce was already bound to a code for this client."""
        return bool(self.redis.exists(self._nonce_key(client_id, nonce)))

    # ---- access token revocation ------------------------------------------------------------
    def revoke_access_token(self, jti: str, ttl: int) -> None:
        """Refuse a JWT access token until it would have expired anyway."""
        self.redis.set(self._k("revoked-at", jti), "1", ex=max(ttl, 1))

    def access_token_revoked(self, jti: str, sid: str | None = None) -> bool:
        """Whether an access token was revoked, or its session ended (one round trip)."""
        return self.access_token_state(jti, sid, with_version=False)[0]

    def access_token_state(self, jti: str, sid: str | None = None,
                           with_version: bool = True) -> tuple[bool, str | None]:
        """(revoked or its session ended, the clients version if asked): the one round trip of
        a request that presents an access token, which so may also check the client cache."""
        keys = [self._k("revoked-at", jti)] + ([self._k("sess-ended", sid)] if sid else [])
        if not with_version:
            return bool(self.redis.exists(*keys)), None
        pipe = self.redis.pipeline(transaction=False)
        pipe.exists(*keys)
        pipe.get(self._k("clients", "version"))
        revoked, version = pipe.execute()
        return bool(revoked), version

    # ---- client assertions (private_key_jwt) ------------------------------------------------
    def use_client_assertion(self, client_id: str, jti: str, ttl: int) -> bool:
        """Mark an assertion's jti used (atomic SET NX) until the assertion expires; True for
        exactly one caller, so an assertion is single use (RFC 7523 §3 item 7)."""
        return bool(self.redis.set(self._k("jti", client_id, sha(jti)), "1", ex=max(int(ttl), 1), nx=True))

    # ---- registered clients: the version every process's client cache is checked against ----
    def clients_version(self) -> str | None:
        """The current version of the registered clients (None before the first change)."""
        return self.redis.get(self._k("clients", "version"))

    def new_clients_version(self, ttl: int = 7 * 86400) -> None:
        """Announce that a client changed: a fresh random value, so that every cached copy made
        under any earlier value (or under none, after this key expired) is read again; the value
        is also published to every process that follows it (``follow_clients_version``)."""
        version = secrets.token_urlsafe(12)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self._k("clients", "version"), version, ex=ttl)
        pipe.publish(self._k("clients", "changed"), version)
        pipe.execute()

    def follow_clients_version(self, on_version: Callable[[str | None, bool], None], stopped: threading.Event,
                               retry_seconds: float = 1.0) -> None:
        """Follow the clients version until ``stopped``: ``on_version(value, True)`` with the
        value at each (re)subscription, then with each value published; ``on_version(None,
        False)`` whenever the subscription is lost (the caller then reads the value itself)."""
        channel = self._k("clients", "changed")
        while not stopped.is_set():
            pubsub = self.redis.pubsub()
            try:
                pubsub.subscribe(channel)
                confirmed = None
                while confirmed is None and not stopped.is_set():
                    confirmed = pubsub.get_message(timeout=1.0)
                # subscribed before the value is read: no change can fall in between
                on_version(self.clients_version(), True)
                while not stopped.is_set():
                    message = pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message and message.get("type") == "message":
                        on_version(message["data"], True)
            except Exception:  # noqa: BLE001 - the store gone, a reset connection: read per request
                on_version(None, False)
                stopped.wait(retry_seconds)
            finally:
                try:
                    pubsub.close()
                except Exception:  # noqa: BLE001
                    pass
        on_version(None, False)

