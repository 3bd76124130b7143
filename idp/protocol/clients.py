"""Agency clients as the protocol finds them: one lookup (:func:`find`), through a cache that
each process keeps between requests.

The cache is checked on every request against the store's clients version, which every change
made through ``idp clients`` (agencies.py) renews and publishes. Each serving process follows
it by a subscription (``_Follower``), so a request needs no round trip to know its copies are
current, and a client disabled or given a new secret by any process is refused on every node
as soon as the published change arrives (a round trip's time after the change). While a process
follows no live subscription (starting, the store lost and back), each request reads the
version itself (once, or along with its first store call: :meth:`ClientCache.note_version`).
A copy is also read again after ``MAX_AGE`` seconds, for a row changed in SQL by hand. The
in-memory store (``memory://``) is not shared between processes, so there a client is read
once per request instead.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from flask import current_app, g, has_request_context

from ..platform.database import db
from ..platform.settings import is_loopback, settings
from ..platform.store import store
from .models import Client


class ClientCache:
    """Registered clients by id, each a copy attached to no database session (read-only for its
    users). Unknown ids are not kept: anyone can make up more of them."""

    MAX_AGE = 300.0
    MAX_ENTRIES = 5000

    def __init__(self) -> None:
        # keyed by (store prefix, client_id): several apps in one process (tests) never share
        self._entries: dict[tuple[str, str], tuple[str | None, float, Client]] = {}

    def clear(self) -> None:
        self._entries.clear()

    @staticmethod
    def _version() -> tuple[bool, str | None]:
        """(shared, version): whether the cache may outlive the request, and under what version.
        The version is the one this process follows (``_Follower``), or, while it follows none,
        read once per request; kept in ``g`` for the request's other lookups."""
        if store.url == "memory://" or not has_request_context():
            return False, None
        if "idp_clients_version" not in g:
            follower = _follower()
            g.idp_clients_version = follower.version if follower.live else store.clients_version()
        return True, g.idp_clients_version

    @staticmethod
    def needs_version() -> bool:
        """Whether this request still has to read the clients version (no live subscription)."""
        if store.url == "memory://" or not has_request_context() or "idp_clients_version" in g:
            return False
        return not _follower().live

    @staticmethod
    def note_version(version: str | None) -> None:
        """The clients version as a store call of this request read it along with its own
        records: the request's client lookups then need no GET of their own."""
        if store.url != "memory://" and has_request_context() and "idp_clients_version" not in g:
            g.idp_clients_version = version

    def get(self, client_id: str) -> Client | None:
        """The client with this id (enabled or not), or None."""
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
        if shared and copy is not None:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (version, time.monotonic(), copy)
        return copy


client_cache = ClientCache()


class _Follower:
    """This process's subscription to the clients version (store.follow_clients_version): while
    it is live, a request needs no GET to know whether its cached clients are current. A change
    published by any process reaches it within a round trip; while it is not live (starting, the
    store lost) every request reads the version itself, as before."""

    def __init__(self, app) -> None:
        self.pid = os.getpid()
        self.version: str | None = None
        self.live = False
        self.stopped = threading.Event()
        st = app.extensions["idp.store"]
        self.thread = threading.Thread(target=st.follow_clients_version, args=(self._on_version, self.stopped),
                                       name="idp-clients-version", daemon=True)

    def _on_version(self, version: str | None, live: bool) -> None:
        if live:
            self.version = version  # before ``live``: a request never sees live with an old value
        self.live = live


_followers_lock = threading.Lock()


def _follower() -> _Follower:
    """The current app's follower in this process (started on first use, again after a fork)."""
    app = current_app._get_current_object()
    follower = app.extensions.get("idp.clients_follower")
    if follower is None or follower.pid != os.getpid():
        with _followers_lock:
            follower = app.extensions.get("idp.clients_follower")
            if follower is None or follower.pid != os.getpid():
                follower = app.extensions["idp.clients_follower"] = _Follower(app)
                follower.thread.start()
    return follower


def find(client_id: Any) -> Client | None:
    """An enabled client by id; disabled and unknown clients are the same to the protocol."""
    if not isinstance(client_id, str) or not client_id or len(client_id) > 64:
        return None
    client = client_cache.get(client_id)
    return client if client is not None and client.is_enabled else None


def is_disabled(client_id: Any) -> bool:
    """Whether this id names a registered client that an operator has disabled (the error page
    then says the service is unavailable for now, rather than unknown)."""
    if not isinstance(client_id, str) or not client_id or len(client_id) > 64:
        return False
    client = client_cache.get(client_id)
    return client is not None and not client.is_enabled


def home_url(client: Client) -> str | None:
    """Where a person can go back to the agency: the origin of its first registered redirect URI,
    an address checked when the client was registered (never one a request names). None for a
    loopback address when the provider itself is not on loopback (a native app's listener)."""
    uris = client.redirect_uris
    if not uris:
        return None
    parts = urlsplit(uris[0])
    if parts.scheme not in ("https", "http") or not parts.netloc:
        return None
    if is_loopback(parts.hostname or "") and not is_loopback(urlsplit(settings.server.issuer).hostname or ""):
        return None
    return f"{parts.scheme}://{parts.netloc}/"


def find_many(client_ids: list[str]) -> dict[str, Client]:
    """The enabled clients among these ids, by id."""
    found = {client_id: find(client_id) for client_id in dict.fromkeys(client_ids)}
    return {client_id: client for client_id, client in found.items() if client is not None}


def clients_changed() -> None:
    """Tell every process's client cache that a client changed (call after the commit)."""
    client_cache.clear()
    store.new_clients_version()


def display_name(client: Client, lang: str) -> str:
    """The agency's name in a page's language (Persian when it has one)."""
    return client.name_fa if lang == "fa" and client.name_fa else client.name
