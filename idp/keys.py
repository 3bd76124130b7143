"""Signing keys in the keys directory: generate, load, and the published JWKS.

One file per key, ``<kid>.json``, mode 0600: ``{"kid", "alg", "status", "created_at", "jwk"}``
where ``jwk`` is the private JWK and ``kid`` its RFC 7638 thumbprint. ``status`` is
``active`` (signs and is published), ``next`` (published, not yet signing) or ``retired``
(published until the tokens it signed have expired). Keys are parsed once, at start-up,
never per request: parsing a private key is slow (AUTHLIB-NOTES §6).
"""
from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey, KeySet, RSAKey

ALGORITHMS = ("RS256", "ES256")
PUBLISHED = ("active", "next", "retired")


class KeysUnavailable(Exception):
    """The keys directory is missing keys or holds a bad file."""


@dataclass(frozen=True)
class SigningKey:
    """A loaded key with its metadata."""

    kid: str
    alg: str
    status: str
    created_at: str
    key: Any  # joserfc RSAKey / ECKey (private), with its kid

    @property
    def keyset(self) -> KeySet:
        """A set of this key alone: joserfc then writes its `kid` into the JWS header."""
        return KeySet([self.key])

    def public_jwk(self) -> dict[str, Any]:
        """The public JWK as published, with kid, alg and use."""
        d = self.key.as_dict(private=False)
        d.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        return d


def _new_key(alg: str):
    if alg == "RS256":
        return RSAKey.generate_key(2048, private=True)
    if alg == "ES256":
        return ECKey.generate_key("P-256", private=True)
    raise KeysUnavailable(f"unsupported algorithm {alg}")


def generate(directory: str | os.PathLike, alg: str, status: str = "active") -> SigningKey:
    """Create a key, write it with mode 0600 (never readable by others), and return it."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key = _new_key(alg)
    kid = key.thumbprint()
    record = {"kid": kid, "alg": alg, "status": status,
              "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "jwk": {**key.as_dict(private=True), "kid": kid}}
    path = d / f"{kid}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(record, fh, indent=1)
    return SigningKey(kid, alg, status, record["created_at"], key)


def load_all(directory: str | os.PathLike) -> list[SigningKey]:
    """Every key in the directory, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    keys = []
    for path in sorted(d.glob("*.json")):
        try:
            record = json.loads(path.read_text())
            cls = RSAKey if record["alg"] == "RS256" else ECKey
            key = cls.import_key({**record["jwk"], "kid": record["kid"]})
            keys.append(SigningKey(record["kid"], record["alg"], record["status"], record["created_at"], key))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeysUnavailable(f"[keys] dir: cannot read {path}: {exc}") from None
    keys.sort(key=lambda k: k.created_at)
    return keys


def ensure(directory: str | os.PathLike, algs: tuple[str, ...] = ALGORITHMS) -> list[SigningKey]:
    """Generate an active key for each algorithm that has none (used by ``idp dev``)."""
    have = {k.alg for k in load_all(directory) if k.status == "active"}
    return [generate(directory, alg) for alg in algs if alg not in have]


class KeyRing:
    """The keys in use by this process: the signing key per algorithm and the JWKS."""

    def __init__(self, directory: str | os.PathLike, required_algs: set[str]):
        self.directory = str(directory)
        self.reload(required_algs)

    def reload(self, required_algs: set[str]) -> None:
        """Read the directory again (after a rotation)."""
        keys = load_all(self.directory)
        self._active: dict[str, SigningKey] = {}
        for k in keys:
            if k.status == "active":
                self._active[k.alg] = k  # the newest active key of an algorithm signs
        missing = sorted(required_algs - set(self._active))
        if missing:
            raise KeysUnavailable(f"[keys] dir: no active {', '.join(missing)} key in {self.directory} "
                            f"(create one: idp keys generate --alg {missing[0]})")
        published = [k for k in keys if k.status in PUBLISHED]
        self._jwks = {"keys": [k.public_jwk() for k in published]}
        self._public_set = KeySet([k.key for k in published])

    def signing_key(self, alg: str) -> SigningKey:
        """The key that signs with this algorithm now."""
        return self._active[alg]

    def jwks(self) -> dict[str, Any]:
        """The public JWKS document."""
        return self._jwks

    def public_key_set(self) -> KeySet:
        """The published keys, parsed, for verifying our own tokens (hints, introspection)."""
        return self._public_set
