"""The signing keys of a running process: loaded once (and again when the keys directory
changes), the public key set built once, the JWKS document serialized once. Nothing is parsed
per request.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import current_app
from joserfc.jwk import KeySet
from werkzeug.local import LocalProxy

from .jws import verify_compact
from .keys import PUBLISHED, RELOAD_SECONDS, KeysUnavailable, SigningKey, load_all

log = logging.getLogger("idp.keys")


@dataclass(frozen=True)
class _State:
    active: dict[str, SigningKey]
    jwks: dict[str, Any]
    public_set: KeySet
    jwks_json: bytes = b""  # the JWKS document as served
    verifiers: dict[str, tuple[str, Any]] | None = None  # kid -> (alg, public key), jws.verify_compact


class KeyRing:
    """The keys in use by this process: the signing key per algorithm and the JWKS.

    Every call looks, at most every ``reload_seconds``, whether the directory changed (one
    ``scandir`` and a ``stat`` per file) and re-reads it if so; a directory that cannot be read
    keeps the keys in use and is logged, so a bad file never takes the provider down.
    """

    def __init__(self, directory: str | os.PathLike, required_algs: set[str],
                 reload_seconds: float = RELOAD_SECONDS, clock=time.monotonic):
        self.directory = str(directory)
        self.required_algs = set(required_algs)
        self.reload_seconds = reload_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._checked_at = clock()
        self.reload(required_algs)

    def _signature(self) -> tuple:
        """What identifies the directory's content: each key file's name, mtime and size."""
        try:
            with os.scandir(self.directory) as it:
                return tuple(sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size)
                                    for e in it if e.name.endswith(".json")))
        except OSError:
            return ()

    def reload(self, required_algs: set[str] | None = None) -> None:
        """Read the directory again (after a rotation); raises KeysUnavailable and keeps the
        keys in use when it lacks a required key or holds a bad file."""
        if required_algs is not None:
            self.required_algs = set(required_algs)
        signature = self._signature()
        keys = load_all(self.directory)
        active: dict[str, SigningKey] = {}
        for k in sorted((k for k in keys if k.status == "active"), key=lambda k: (k.signs_since, k.created_at)):
            active[k.alg] = k  # the most recently activated key of an algorithm signs
        missing = sorted(self.required_algs - set(active))
        if missing:
            raise KeysUnavailable(f"[keys] dir: no active {', '.join(missing)} key in {self.directory} "
                                  f"(create one: idp keys generate --alg {missing[0]})")
        order = {"active": 0, "next": 1, "retired": 2}
        published = sorted((k for k in keys if k.status in PUBLISHED), key=lambda k: order[k.status])
        document = {"keys": [k.public_jwk() for k in published]}
        self._state = _State(active, document, KeySet([k.key for k in published]),
                             json.dumps(document).encode(), {k.kid: k.verifier() for k in published})
        self._signature_seen = signature

    def refresh(self) -> bool:
        """Re-read the directory if it changed since the last look; True when keys changed."""
        now = self._clock()
        if now - self._checked_at < self.reload_seconds or not self._lock.acquire(blocking=False):
            return False
        try:
            self._checked_at = now
            signature = self._signature()
            if signature == self._signature_seen:
                return False
            before = {k: v.kid for k, v in self._state.active.items()}
            try:
                self.reload()
            except KeysUnavailable as exc:
                self._signature_seen = signature  # tried; wait for the directory to change again
                log.error("keys: keeping the keys in use: %s", exc)
                return False
            after = {k: v.kid for k, v in self._state.active.items()}
            log.info("keys: reloaded %s (signing: %s)", self.directory, after if after != before else "unchanged")
            return True
        finally:
            self._lock.release()

    def signing_key(self, alg: str) -> SigningKey:
        """The key that signs with this algorithm now."""
        self.refresh()
        return self._state.active[alg]

    def jwks(self) -> dict[str, Any]:
        """The public JWKS document."""
        self.refresh()
        return self._state.jwks

    def jwks_json(self) -> bytes:
        """The JWKS document, serialized once per set of keys."""
        self.refresh()
        return self._state.jwks_json

    def verify(self, token: str) -> tuple[dict, dict]:
        """(header, claims) of a token one of the published keys signed (jws.verify_compact);
        ValueError otherwise."""
        self.refresh()
        return verify_compact(token, self._state.verifiers)

    def public_key_set(self) -> KeySet:
        """The published keys, parsed, for joserfc (ID token hints; access tokens: ``verify``)."""
        self.refresh()
        return self._state.public_set


#: The signing keys of the current app.
keyring = LocalProxy(lambda: current_app.extensions["idp.keyring"])
