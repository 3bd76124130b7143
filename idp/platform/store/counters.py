"""The live figures of the current days: HyperLogLogs of unique citizens, logins per client."""
from __future__ import annotations

import time

from .base import StoreBase


class LiveCounters(StoreBase):
    # ---- live counters ----------------------------------------------------------------------
    def count_daily_user(self, day: str, client_id: str, member: str, ttl: int) -> None:
        """Add a citizen to today's unique-user HyperLogLogs (overall and per client); deferrable."""
        pipe = self._writes(transaction=False)
        for key in (self._k("hll", "day", day), self._k("hll", "day", day, client_id)):
            pipe.pfadd(key, member)
            pipe.expire(key, ttl)
        pipe.hincrby(self._k("live", "logins", day), client_id, 1)
        pipe.expire(self._k("live", "logins", day), ttl)
        pipe.set(self._k("live", "since", day), f"{time.time():.3f}", nx=True, ex=ttl)
        self._send(pipe)

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

