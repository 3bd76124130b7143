"""Agency clients as the protocol finds them: one lookup (:func:`find`), through a cache that
each process keeps between requests.

The cache is checked on every request against the store's clients version (one GET per
request, for all the client lookups the request makes, or read along with the request's first
store call where that comes first: :meth:`ClientCache.note_version`). Every change made through ``idp
clients`` (agencies.py) renews that version, so a client disabled or given a new secret by any
process is refused from the very next request on every node. A copy is also read again after
``MAX_AGE`` seconds, for a row changed in SQL by hand. The in-memory store (``memory://``) is
not shared between processes, so there a client is read once per request instead.
"""
from __future__ import annotations

import time
from typing import Any

from flask import g, has_request_context

from ..platform.database import db
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
        The version is read once per request and kept in ``g`` for the request's other lookups."""
        if store.url == "memory://" or not has_request_context():
            return False, None
        if "idp_clients_version" not in g:
            g.idp_clients_version = store.clients_version()
        return True, g.idp_clients_version

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


def find(client_id: Any) -> Client | None:
    """An enabled client by id; disabled and unknown clients are the same to the protocol."""
    if not isinstance(client_id, str) or not client_id or len(client_id) > 64:
        return None
    client = client_cache.get(client_id)
    return client if client is not None and client.is_enabled else None


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
