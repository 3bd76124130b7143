"""The connection and what every record shares: the key prefix, JSON records, the lifetime of
an orphan."""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any

import redis

_memory_server = None
_memory_lock = threading.Lock()

#: Lifetime of a record a late write re-created by accident (HSET/HINCRBY on a challenge that
#: just ended) until its clean-up deletes it: it expires even if the process dies in between.
ORPHAN_TTL = 60


def sha(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


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


class StoreBase:
    """One redis-py client under one key prefix."""

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

    # ---- health -----------------------------------------------------------------------------
    def ping(self) -> bool:
        """True when the store answers."""
        return bool(self.redis.ping())
