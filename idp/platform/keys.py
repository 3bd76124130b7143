"""Signing keys in the keys directory: generate, load, and the published JWKS.

One file per key, ``<kid>.json``, mode 0600: ``{"kid", "alg", "status", "created_at",
"published_at", "activated_at", "retired_at", "jwk"}`` where ``jwk`` is the private JWK and
``kid`` its RFC 7638 thumbprint. ``status`` is ``active`` (signs and is published), ``next``
(published, not yet signing) or ``retired`` (published until the tokens it signed have expired).
Files are only ever replaced whole (write a temporary file, rename), so a reader never sees half
a key.

Rotation that breaks no one (``rotate``, run by ``idp keys rotate``), per algorithm:

1. A run with no ``next`` key creates one. It is published in the JWKS at once but signs nothing.
2. A later run, once the ``next`` key has been published for ``PUBLISH_WAIT`` seconds (twice the
   JWKS cache lifetime, so every cached JWKS has it), promotes it to ``active`` and demotes the
   old active key to ``retired``, still published: tokens it signed keep verifying.
3. A run removes a ``retired`` key (deletes its file, so it leaves the JWKS) once it has been
   retired longer than the longest token lifetime it could have signed, plus ``RETIRE_MARGIN``.

The thresholds are computed from the timestamps in the key files (so they survive restarts and
can be inspected, or backdated in tests); ``--force`` promotes at once (a compromised key).

Keys are parsed once, never per request: parsing a private key is slow (AUTHLIB-NOTES §6). A
running :class:`KeyRing` looks at the directory at most every ``RELOAD_SECONDS`` and re-reads it
when it changed, so every process and node sharing the directory follows a rotation without a
restart.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.jwk import ECKey, KeySet, RSAKey
from joserfc.util import json_b64encode, urlsafe_b64encode

ALGORITHMS = ("RS256", "ES256")
PUBLISHED = ("active", "next", "retired")

#: The /jwks response's ``Cache-Control: max-age``: how long an agency may keep our JWKS.
JWKS_CACHE_SECONDS = 300
#: A running KeyRing checks the directory for changes at most this often.
RELOAD_SECONDS = 5
#: A ``next`` key must be published this long before it may sign (every cached JWKS has it by then).
PUBLISH_WAIT = 2 * JWKS_CACHE_SECONDS
#: A retired key stays published this long beyond the longest lifetime of a token it signed
#: (processes that have not reloaded yet, clock skew, verifiers' leeway).
RETIRE_MARGIN = JWKS_CACHE_SECONDS

log = logging.getLogger("idp.keys")


class KeysUnavailable(Exception):
    """The keys directory is missing keys or holds a bad file."""


class RotationRefused(KeysUnavailable):
    """A rotation step is not safe yet (the message says when it will be), or not possible."""


@dataclass(frozen=True)
class SigningKey:
    """A loaded key with its metadata."""

    kid: str
    alg: str
    status: str
    created_at: str
    key: Any  # joserfc RSAKey / ECKey (private), with its kid
    published_at: str | None = None  # first in the JWKS (created_at for keys made before rotation)
    activated_at: str | None = None  # began to sign
    retired_at: str | None = None  # stopped signing
    path: str | None = field(default=None, compare=False)

    @property
    def since_published(self) -> dt.datetime:
        return parse_time(self.published_at or self.created_at)

    @property
    def signs_since(self) -> dt.datetime:
        return parse_time(self.activated_at or self.created_at)

    @property
    def keyset(self) -> KeySet:
        """A set of this key alone: joserfc then writes its `kid` into the JWS header."""
        return KeySet([self.key])

    def sign_jwt(self, claims: dict[str, Any], typ: str) -> str:
        """A compact JWS of ``claims`` (RFC 7515 §7.1) with this key: the header names its
        ``alg``, ``kid`` and ``typ``. The JSON is written as joserfc writes it; the signature is
        made straight on the parsed key (joserfc's encoder, with its header and key checks for
        keys that come from outside, cost more than an ES256 signature)."""
        signing_input = (json_b64encode({"alg": self.alg, "kid": self.kid, "typ": typ}) + b"."
                         + urlsafe_b64encode(json.dumps(claims, ensure_ascii=False, separators=(",", ":")).encode()))
        raw = self.key.private_key
        if self.alg == "RS256":
            signature = raw.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        elif self.alg == "ES256":
            r, s = decode_dss_signature(raw.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")  # RFC 7518 §3.4: R || S
        else:  # pragma: no cover - ALGORITHMS holds the two above
            raise KeysUnavailable(f"unsupported algorithm {self.alg}")
        return (signing_input + b"." + urlsafe_b64encode(signature)).decode("ascii")

    def verifier(self) -> tuple[str, Any]:
        """(alg, the public key as ``cryptography`` holds it): what ``jws.verify_compact`` needs."""
        return self.alg, self.key.public_key

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


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def format_time(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def parse_time(value: str) -> dt.datetime:
    when = dt.datetime.fromisoformat(value)
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _write_record(path: Path, record: dict[str, Any]) -> None:
    """Write a key file whole: a temporary file (mode 0600) renamed over the target."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def generate(directory: str | os.PathLike, alg: str, status: str = "active",
             now: dt.datetime | None = None) -> SigningKey:
    """Create a key, write it with mode 0600 (never readable by others), and return it."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key = _new_key(alg)
    kid = key.thumbprint()
    at = format_time(now or utcnow())
    record = {"kid": kid, "alg": alg, "status": status, "created_at": at, "published_at": at,
              "activated_at": at if status == "active" else None, "retired_at": None,
              "jwk": {**key.as_dict(private=True), "kid": kid}}
    path = d / f"{kid}.json"
    if path.exists():
        raise KeysUnavailable(f"[keys] dir: {path} exists already")
    _write_record(path, record)
    return SigningKey(kid, alg, status, at, key, at, record["activated_at"], None, str(path))


def load_all(directory: str | os.PathLike) -> list[SigningKey]:
    """Every key in the directory, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    keys = []
    for path in sorted(d.glob("*.json")):
        try:
            record = json.loads(path.read_text())
            if record["alg"] not in ALGORITHMS or record["status"] not in PUBLISHED:
                raise ValueError(f"unknown alg {record['alg']!r} or status {record['status']!r}")
            key = _import_private(record)
            parse_time(record["created_at"])
            keys.append(SigningKey(record["kid"], record["alg"], record["status"], record["created_at"], key,
                                   record.get("published_at"), record.get("activated_at"),
                                   record.get("retired_at"), str(path)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeysUnavailable(f"[keys] dir: cannot read {path}: {exc}") from None
    keys.sort(key=lambda k: (parse_time(k.created_at), k.kid))
    return keys


_parsed: dict[tuple[str, str], Any] = {}
_parsed_lock = threading.Lock()


def _import_private(record: dict[str, Any]):
    """A key file's private key, parsed once per process (a reload re-reads only new keys)."""
    raw = json.dumps(record["jwk"], sort_keys=True)
    ident = (record["kid"], raw)
    with _parsed_lock:
        if ident in _parsed:
            return _parsed[ident]
    cls = RSAKey if record["alg"] == "RS256" else ECKey
    key = cls.import_key({**record["jwk"], "kid": record["kid"]})
    with _parsed_lock:
        _parsed[ident] = key
    return key


def ensure(directory: str | os.PathLike, algs: tuple[str, ...] = ALGORITHMS) -> list[SigningKey]:
    """Generate an active key for each algorithm that has none (used by ``idp dev``)."""
    have = {k.alg for k in load_all(directory) if k.status == "active"}
    return [generate(directory, alg) for alg in algs if alg not in have]


# ---- rotation ------------------------------------------------------------------------------

def _save(k: SigningKey, **changes: Any) -> None:
    """Rewrite one key file with some fields changed (read again, so nothing else is lost)."""
    path = Path(k.path)
    record = json.loads(path.read_text())
    record.update(changes)
    _write_record(path, record)


def _lock(directory: Path):
    """An exclusive lock on the directory for one rotation (two operators, two nodes)."""
    fh = open(directory / ".rotate.lock", "a")  # noqa: SIM115 - closed by the caller
    fcntl.flock(fh, fcntl.LOCK_EX)
    return fh


def removal_due(k: SigningKey, max_token_ttl: int, margin: int = RETIRE_MARGIN) -> dt.datetime | None:
    """When a retired key leaves the JWKS: every token it signed has expired by then."""
    if k.status != "retired":
        return None
    return parse_time(k.retired_at or k.created_at) + dt.timedelta(seconds=max_token_ttl + margin)


def promotion_due(k: SigningKey, publish_wait: int = PUBLISH_WAIT) -> dt.datetime | None:
    """When a next key may start signing: every cached JWKS has it by then."""
    if k.status != "next":
        return None
    return k.since_published + dt.timedelta(seconds=publish_wait)


def rotate(directory: str | os.PathLike, max_token_ttl: int, *, algs: tuple[str, ...] | None = None,
           force: bool = False, withdraw: bool = False, now: dt.datetime | None = None,
           publish_wait: int = PUBLISH_WAIT, retire_margin: int = RETIRE_MARGIN) -> list[dict[str, Any]]:
    """One step of the rotation for each algorithm (see the module docstring); returns what was done.

    ``force`` promotes at once (creating the next key if there is none); with ``withdraw`` the
    old active key is removed from the JWKS at once instead of being retired: for a compromised
    key, whose tokens must stop verifying. A promotion that is not yet safe raises
    :class:`RotationRefused` and changes nothing.
    """
    if withdraw and not force:
        raise RotationRefused("keys rotate: --withdraw is only for an emergency and needs --force")
    d = Path(directory)
    if not d.is_dir():
        raise RotationRefused(f"[keys] dir {d} does not exist (create keys: idp keys generate)")
    now = now or utcnow()
    lock = _lock(d)
    try:
        keys = load_all(d)
        algs = algs or tuple(a for a in ALGORITHMS if any(k.alg == a for k in keys))
        if not algs:
            raise RotationRefused(f"[keys] dir {d} has no keys to rotate (create them: idp keys generate)")
        # Plan first: a refused step leaves every algorithm as it was.
        for alg in algs:
            nxt = [k for k in keys if k.alg == alg and k.status == "next"]
            has_active = any(k.alg == alg and k.status == "active" for k in keys)
            if nxt and has_active and not force and now < promotion_due(nxt[-1], publish_wait):
                due = promotion_due(nxt[-1], publish_wait)
                published_for = int((now - nxt[-1].since_published).total_seconds())
                raise RotationRefused(
                    f"keys rotate: the next {alg} key {nxt[-1].kid[:12]} has been published for {published_for} s; "
                    f"it may sign from {format_time(due)} (after {publish_wait} s, when every cached JWKS has it): "
                    f"run again then, or use --force in an emergency")
        done: list[dict[str, Any]] = []
        stamp = format_time(now)
        for alg in algs:
            mine = [k for k in keys if k.alg == alg]
            for k in mine:
                due = removal_due(k, max_token_ttl, retire_margin)
                if due is not None and now >= due:
                    os.unlink(k.path)
                    done.append({"alg": alg, "action": "removed", "kid": k.kid, "at": stamp})
            nxt = [k for k in mine if k.status == "next"]
            active = [k for k in mine if k.status == "active"]
            if not nxt:
                new = generate(d, alg, status="next", now=now)
                nxt = [new]
                if not force and active:
                    done.append({"alg": alg, "action": "next_created", "kid": new.kid, "at": stamp,
                                 "promote_from": format_time(promotion_due(new, publish_wait))})
                    continue
            new = nxt[-1]
            # The new key signs first, then the old stops: a process reloading in between sees two
            # active keys (the newest signs), never none.
            _save(new, status="active", activated_at=stamp)
            done.append({"alg": alg, "action": "promoted", "kid": new.kid, "at": stamp})
            for old in nxt[:-1]:  # stray extra next keys (made by hand) are kept for the next round
                log.info("keys: extra next key %s left for a later rotation", old.kid)
            for old in active:
                if withdraw:
                    os.unlink(old.path)
                    done.append({"alg": alg, "action": "withdrawn", "kid": old.kid, "at": stamp})
                else:
                    _save(old, status="retired", retired_at=stamp)
                    done.append({"alg": alg, "action": "retired", "kid": old.kid, "at": stamp,
                                 "remove_from": format_time(now + dt.timedelta(seconds=max_token_ttl + retire_margin))})
        return done
    finally:
        lock.close()


def describe(keys: list[SigningKey], max_token_ttl: int, publish_wait: int = PUBLISH_WAIT,
             retire_margin: int = RETIRE_MARGIN) -> list[dict[str, Any]]:
    """Rows for ``idp keys list``: status, dates, and when the next rotation step falls due."""
    rows = []
    for k in keys:
        promote = promotion_due(k, publish_wait)
        remove = removal_due(k, max_token_ttl, retire_margin)
        rows.append({"kid": k.kid, "alg": k.alg, "status": k.status, "created_at": k.created_at,
                     "published_at": k.published_at or k.created_at, "activated_at": k.activated_at,
                     "retired_at": k.retired_at,
                     "promote_from": format_time(promote) if promote else None,
                     "remove_from": format_time(remove) if remove else None})
    return rows
