"""The connection and what every record shares: the key prefix, JSON records, the lifetime of
an orphan."""
from __future__ import annotations

import hashlib
import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.sentinel import Sentinel

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


#: Options of every connection to a Redis that holds the records (a primary, or the primary
#: a Sentinel names): a dead server is a 503 within seconds, never a hung request.
_CONNECTION = dict(decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0,
                   health_check_interval=30, retry_on_timeout=False)


@dataclass(frozen=True)
class SentinelURL:
    """``redis+sentinel://[[user]:password@]host:port[,host:port...]/SERVICE[/DB]`` with an
    optional ``?sentinel_password=...`` when the sentinels have their own password: the
    password in front is the data nodes'."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    @classmethod
    def parse(cls, url: str) -> "SentinelURL":
        """Raises ValueError with a one-line reason for a malformed URL."""
        scheme, rest = url.split("://", 1) if "://" in url else ("", url)
        if scheme != "redis+sentinel":
            raise ValueError("must start with redis+sentinel://")
        parts = urlsplit("x://" + rest)
        netloc = parts.netloc
        username = password = None
        if "@" in netloc:
            userinfo, netloc = netloc.rsplit("@", 1)
            user, _, pw = userinfo.partition(":")
            username, password = unquote(user) or None, unquote(pw) or None
        sentinels = []
        for hostport in netloc.split(","):
            host, sep, port = hostport.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"names a sentinel without host:port ({hostport or 'nothing'})")
            sentinels.append((host.strip("[]"), int(port)))
        path = [p for p in parts.path.split("/") if p]
        if not path or len(path) > 2:
            raise ValueError("must name the service after the sentinels: .../SERVICE or .../SERVICE/DB")
        if len(path) == 2 and not path[1].isdigit():
            raise ValueError(f"has a database number that is not a number ({path[1]})")
        query = parse_qs(parts.query)
        unknown = set(query) - {"sentinel_password"}
        if unknown:
            raise ValueError(f"has an unknown option ({', '.join(sorted(unknown))})")
        return cls(tuple(sentinels), unquote(path[0]), int(path[1]) if len(path) == 2 else 0, username, password,
                   query.get("sentinel_password", [None])[0])


def connect(url: str) -> redis.Redis:
    """A redis-py client for ``redis://...``, for the primary a Redis Sentinel names
    (``redis+sentinel://...``: redis-py asks the sentinels for the primary at each new
    connection and drops connections to a primary that was demoted, so a failover needs no
    restart), or the process-wide in-memory server for ``memory://``."""
    global _memory_server
    if url == "memory://":
        import fakeredis  # only the embedded default needs it: production nodes never load it

        with _memory_lock:
            if _memory_server is None:
                _memory_server = fakeredis.FakeServer()
        return fakeredis.FakeRedis(server=_memory_server, decode_responses=True)
    if url.startswith("redis+sentinel://"):
        where = SentinelURL.parse(url)
        # a sentinel that does not answer is skipped quickly: discovery moves on to the next
        sentinel_kwargs = dict(socket_timeout=0.5, socket_connect_timeout=0.5,
                               password=where.sentinel_password)
        sentinels = Sentinel(list(where.sentinels), sentinel_kwargs=sentinel_kwargs)
        return sentinels.master_for(where.service, db=where.db, username=where.username,
                                    password=where.password, **_CONNECTION)
    return redis.Redis.from_url(url, **_CONNECTION)


class StoreBase:
    """One redis-py client under one key prefix."""

    def __init__(self, url: str, prefix: str):
        self.url = url
        self.prefix = prefix
        self.redis = connect(url)
        self._batch = threading.local()  # the writes a thread defers (``deferred``)

    # ---- deferred writes ------------------------------------------------------------------
    @contextmanager
    def deferred(self):
        """Inside, the write-only records of this thread (sessions, codes, live counters, the
        end of a paused request) are queued, and go out together at the end, in one MULTI/EXEC
        round trip: all of them or, when the block raises, none. Reads still go at once, so a
        record written inside is not read back inside. Nested blocks join the outer one."""
        if getattr(self._batch, "pipe", None) is not None:
            yield
            return
        pipe = self._batch.pipe = self.redis.pipeline(transaction=True)
        try:
            yield
        except BaseException:
            pipe.reset()
            raise
        finally:
            self._batch.pipe = None
        if len(pipe):  # queued commands (a cluster pipeline keeps them elsewhere)
            pipe.execute()

    def _writes(self, transaction: bool = True):
        """The pipeline a write-only record queues on: the thread's deferred batch if one is
        open, else a new one; hand it to ``_send`` when done."""
        pipe = getattr(self._batch, "pipe", None)
        return pipe if pipe is not None else self.redis.pipeline(transaction=transaction)

    def _send(self, pipe) -> None:
        if pipe is not getattr(self._batch, "pipe", None):
            pipe.execute()

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
