"""The login's records: one-time-code challenges, the SMS gateway's health, authenticator secrets
being enrolled, and the rate-limit windows, failures and cool-offs."""
from __future__ import annotations

import os
import time

from .base import ORPHAN_TTL, StoreBase, Window


class LoginRecords(StoreBase):
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

    def attempt_challenge(self, challenge_id: str) -> tuple[dict[str, str] | None, int]:
        """Count one attempt at a live challenge and read it, in one round trip: (its fields,
        the attempts so far including this one), or (None, 0) when it is gone."""
        key = self._k("otp", challenge_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(key)
        pipe.hincrby(key, "attempts", 1)
        pipe.expire(key, ORPHAN_TTL, nx=True)  # as in update_challenge: never a key without a TTL
        fields, attempts, _ = pipe.execute()
        if not fields:
            self.redis.delete(key)  # HINCRBY on a missing key created it without a TTL
            return None, 0
        return fields, int(attempts)

    def consume_challenge(self, challenge_id: str) -> bool:
        """End a challenge; True for exactly one caller, so a code is single use."""
        return self.redis.delete(self._k("otp", challenge_id)) == 1

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
        return self.hit_windows([Window(limit, fp, count, period)]).waits[0]

    def window_wait(self, limit: str, fp: str, count: int, period: int) -> int:
        """Seconds until one more hit would be allowed (0 now), without recording a hit."""
        return self.hit_windows([], look=Window(limit, fp, count, period)).look_wait

    def hit_windows(self, hits: list[Window], cool_fp: str | None = None, look: Window | None = None) -> "Hits":
        """``hit_window`` for each of ``hits``, the cool-off left for ``cool_fp`` and
        ``window_wait`` for ``look``, all in one MULTI round trip. A hit over its window is taken
        back (in a second round trip, only then); so are the later hits a caller does not count
        (``Hits.take_back``)."""
        now = time.time()
        pipe = self.redis.pipeline(transaction=True)
        members = []
        for w in hits:
            key, member = self._k("rl", w.limit, w.fp), f"{now:.6f}:{os.urandom(4).hex()}"
            members.append((key, member))
            pipe.zremrangebyscore(key, 0, now - w.period)
            pipe.zadd(key, {member: now})
            pipe.zcard(key)
            pipe.zrange(key, 0, 0, withscores=True)
            pipe.expire(key, w.period)
        if cool_fp is not None:
            pipe.ttl(self._k("cool", cool_fp))
        if look is not None:
            key = self._k("rl", look.limit, look.fp)
            pipe.zcount(key, now - look.period, "+inf")
            pipe.zrangebyscore(key, now - look.period, "+inf", start=0, num=1, withscores=True)
        out = pipe.execute()
        waits, over = [], []
        for i, w in enumerate(hits):
            total, oldest = out[5 * i + 2], out[5 * i + 3]
            if total <= w.count:
                waits.append(0)
                continue
            over.append(members[i])
            first = oldest[0][1] if oldest else now
            waits.append(max(1, int(first + w.period - now + 0.999)))
        rest = out[5 * len(hits):]
        cool = max(0, int(rest.pop(0) or 0)) if cool_fp is not None else 0
        look_wait = 0
        if look is not None:
            total, oldest = rest
            if total >= look.count:
                look_wait = max(1, int(oldest[0][1] + look.period - now + 0.999)) if oldest else 0
        hits_made = Hits(self, members, waits, cool, look_wait)
        if over:
            hits_made._remove(over)
        return hits_made

    def count_failure(self, fp: str, memory: int) -> int:
        """One more consecutive wrong code for a pair; returns the run's length."""
        key = self._k("fail", fp)
        pipe = self.redis.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, memory)
        total, _ = pipe.execute()
        return int(total)

    def clear_failures(self, fp: str) -> None:
        """A right code ends the run of wrong ones (deferrable)."""
        pipe = self._writes()
        pipe.delete(self._k("fail", fp), self._k("cool", fp))
        self._send(pipe)

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



class Hits:
    """What ``hit_windows`` found: the wait of each hit window (0: allowed), the cool-off left,
    and the looked-at window's wait."""

    def __init__(self, store: LoginRecords, members: list[tuple[str, str]], waits: list[int], cool: int,
                 look_wait: int):
        self._store, self._members = store, members
        self.waits, self.cool, self.look_wait = waits, cool, look_wait

    def _remove(self, members: list[tuple[str, str]]) -> None:
        pipe = self._store.redis.pipeline(transaction=False)
        for key, member in members:
            pipe.zrem(key, member)
        pipe.execute()

    def take_back(self, start: int) -> None:
        """Take back the hits from window ``start`` on (those over their window are already)."""
        members = [m for m, wait in zip(self._members[start:], self.waits[start:]) if not wait]
        if members:
            self._remove(members)
