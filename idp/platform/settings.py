"""Settings: TOML file + ``IDP_<SECTION>_<KEY>`` environment overrides -> frozen, validated settings.

The keys, their defaults and checks live in :mod:`.schema`; this module reads the file and the
environment, validates against it and derives per-purpose keys from the master secret.
"""
from __future__ import annotations

import base64
import os
import tomllib
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app
from werkzeug.local import LocalProxy

from .schema import SCHEMA, ConfigError, Key, example_toml, is_loopback, parse_rate

__all__ = ["SCHEMA", "ConfigError", "Settings", "example_toml", "is_loopback", "load_settings", "parse_rate",
           "settings"]
_HKDF_SALT = b"idp-hkdf-salt-v1"


class Section:
    """A read-only view of one section's values, reachable as attributes."""

    def __init__(self, name: str, values: dict[str, Any]):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_values", MappingProxyType(values))

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"[{self._name}] has no key {key!r}") from None

    def __setattr__(self, key, value):
        raise AttributeError("settings are read-only")


class Settings:
    """Validated settings: ``settings.server.issuer`` and so on."""

    def __init__(self, values: dict[str, dict[str, Any]], source: str | None):
        self.source = source
        self._values = values
        for name, section in values.items():
            setattr(self, name, Section(name, section))

    def derived_key(self, purpose: str, length: int = 32) -> bytes:
        """A key for one purpose, derived from the master secret (HKDF-SHA256, RFC 5869); the
        settings are read-only, so each key is derived once."""
        cache = self.__dict__.setdefault("_derived", {})
        key = cache.get((purpose, length))
        if key is None:
            key = cache[(purpose, length)] = self._derive(purpose, length)
        return key

    def _derive(self, purpose: str, length: int) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=_HKDF_SALT,
                    info=purpose.encode()).derive(self.server.secret_key.encode())

    def derived_fernet_key(self, purpose: str) -> bytes:
        """A Fernet key (urlsafe base64 of 32 bytes) for encrypting one kind of secret at rest."""
        return base64.urlsafe_b64encode(self.derived_key(purpose))

    @property
    def is_https(self) -> bool:
        """Whether the issuer is https, which makes every cookie Secure."""
        return self.server.issuer.startswith("https://")

    def as_dict(self, reveal_secrets: bool = False) -> dict[str, dict[str, Any]]:
        """The values, with secrets masked unless asked for."""
        out = {}
        for name, section in self._values.items():
            out[name] = {k: ("********" if SCHEMA[name][k].secret and not reveal_secrets else v)
                         for k, v in section.items()}
        return out


def _coerce(section: str, key: str, spec: Key, raw: Any, from_env: bool) -> Any:
    name = f"[{section}] {key}"
    if from_env:
        if spec.type is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{name}: must be true or false, got {raw!r}")
        if spec.type is int:
            try:
                return int(raw.strip())
            except ValueError:
                raise ConfigError(f"{name}: must be an integer, got {raw!r}") from None
        return raw
    if spec.type is int and (isinstance(raw, bool) or not isinstance(raw, int)):
        raise ConfigError(f"{name}: must be an integer, got {raw!r}")
    if not isinstance(raw, spec.type):
        raise ConfigError(f"{name}: must be a {spec.type.__name__}, got {raw!r}")
    return raw


def load_settings(path: str | os.PathLike | None = None, env: dict[str, str] | None = None,
                  overrides: dict[str, dict[str, Any]] | None = None) -> Settings:
    """Read the TOML file (``path`` or ``$IDP_CONFIG``), apply ``IDP_<SECTION>_<KEY>`` and validate.

    ``overrides`` (used by ``idp dev`` and tests) sit between the file and the environment.
    """
    env = os.environ if env is None else env
    path = path or env.get("IDP_CONFIG") or None
    data: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path}: not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: not valid TOML ({exc})") from None
    for section, keys in data.items():
        if section not in SCHEMA or not isinstance(keys, dict):
            raise ConfigError(f"[{section}]: unknown section")
        for key in keys:
            if key not in SCHEMA[section]:
                raise ConfigError(f"[{section}] {key}: unknown key")
    for section, keys in (overrides or {}).items():
        data.setdefault(section, {}).update(keys)

    values: dict[str, dict[str, Any]] = {}
    for section, keys in SCHEMA.items():
        values[section] = {}
        for key, spec in keys.items():
            env_name = f"IDP_{section.upper()}_{key.upper()}"
            if env_name in env:
                value = _coerce(section, key, spec, env[env_name], from_env=True)
            elif key in data.get(section, {}):
                value = _coerce(section, key, spec, data[section][key], from_env=False)
            elif spec.default is not None:
                value = spec.default
            else:
                raise ConfigError(f"[{section}] {key}: missing (set it in the config file or {env_name})")
            if spec.check and (problem := spec.check(value)):
                raise ConfigError(f"[{section}] {key}: {problem}")
            values[section][key] = value
    return Settings(values, str(path) if path else None)


#: The validated settings of the current app.
settings = LocalProxy(lambda: current_app.extensions["idp.settings"])
