"""The settings' schema: every key's type, default, check and documentation, in one place.

``config.example.toml`` is generated from it (``idp config example``) and a test keeps the
committed file in step. A bad value raises :class:`ConfigError` whose message names the key.
Imports nothing of the project.
"""
from __future__ import annotations

import ipaddress
import zoneinfo
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from .store.base import SentinelURL


class ConfigError(Exception):
    """A configuration value is missing or invalid; the message names the key."""


@dataclass(frozen=True)
class Key:
    """One configuration key: its type, default (None = required) and documentation."""

    type: type
    default: Any
    doc: str
    check: Callable[[Any], str | None] | None = None
    secret: bool = False


def _one_of(*allowed: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in allowed else f"must be one of {', '.join(allowed)}"


def _at_least(low: int) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"must be at least {low}"


def _between(low: int, high: int) -> Callable[[Any], str | None]:
    return lambda v: None if low <= v <= high else f"must be from {low} to {high}"


def _url(v: str) -> str | None:
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL"
    if parts.query or parts.fragment:
        return "must not have a query or fragment"
    if v.endswith("/"):
        return "must not end with '/'"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return "must be https (plain http is allowed only on loopback)"
    return None


def parse_rate(v: str) -> tuple[int, int]:
    """'COUNT/SECONDS' -> (count, seconds)."""
    count, _, seconds = v.partition("/")
    return int(count), int(seconds)


def _rate(v: str) -> str | None:
    try:
        count, seconds = parse_rate(v)
    except ValueError:
        return "must be COUNT/SECONDS, e.g. 5/900"
    return None if count >= 1 and seconds >= 1 else "must be COUNT/SECONDS with both at least 1"


def _seconds_list(v: str) -> str | None:
    try:
        values = [int(x) for x in v.split(",")]
    except ValueError:
        return "must be comma-separated seconds, e.g. 60,300,900"
    return None if values and all(x >= 1 for x in values) else "must be comma-separated positive seconds"


def _long_secret(v: str) -> str | None:
    if v.startswith("change-me"):
        return "still the example placeholder (generate one: idp config secret)"
    return None if len(v) >= 32 else "must be at least 32 characters (generate one: idp config secret)"


def _timezone(v: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(v)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return "must be an IANA time zone such as Asia/Tehran"
    return None


def _store_url(v: str) -> str | None:
    if v.startswith("redis+sentinel://"):
        try:
            SentinelURL.parse(v)
        except ValueError as exc:
            return str(exc)
        return None
    return None if v == "memory://" or v.startswith(("redis://", "rediss://", "unix://")) else \
        "must be memory://, a redis:// URL or redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]"


def _db_url(v: str) -> str | None:
    return None if v.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://")) else \
        "must be sqlite:///PATH or postgresql://..."


def _replica_url(v: str) -> str | None:
    return None if not v or v.startswith(("postgresql://", "postgresql+psycopg://")) else \
        "must be empty or postgresql://... (a PostgreSQL read replica)"


SCHEMA: dict[str, dict[str, Key]] = {
    "server": {
        "issuer": Key(str, "http://127.0.0.1:5000",
                      "Issuer identifier: the public https URL of this provider, no trailing slash.\n"
                      "Plain http is accepted only for loopback addresses (development and tests).", _url),
        "bind": Key(str, "127.0.0.1:5000",
                    "Address idp serve (granian) or the development server (idp dev) listens on: HOST:PORT,\n"
                    "[IPv6]:PORT, or unix:PATH (idp serve only)."),
        "secret_key": Key(str, None,
                          "Master secret (32+ random characters). Every other secret is derived from it with HKDF:\n"
                          "session signing, CSRF, HMAC fingerprints of national IDs and mobiles, pairwise subjects,\n"
                          "encryption of authenticator-app secrets. Changing it logs everyone out and changes\n"
                          "every pairwise `sub`: keep it stable and secret. `idp config secret` prints a new one.",
                          _long_secret, secret=True),
        "workers": Key(int, 0, "Worker processes of idp serve; 0 = two per CPU core (measured best: bench/README.md).",
                       _at_least(0)),
        "threads": Key(int, 16, "Python threads per worker that take requests (granian's blocking threads).\n"
                       "Connections are read and written by granian's Rust runtime, not by these threads,\n"
                       "so slow or idle clients never hold one; a request whose body is still arriving\n"
                       "does, until the body is in (docs/deployment.md).", _at_least(1)),
        "concurrency": Key(int, 1, "Requests of a worker that run the app at once, once their body is in; the others\n"
                           "wait for a turn. More cost throughput: the threads of a worker take turns on one\n"
                           "interpreter lock, so a node runs more workers instead (bench/README.md).", _at_least(1)),
        "header_timeout": Key(int, 10,
                              "Seconds a client has to send a request's headers, from the moment its connection\n"
                              "opened or its previous response ended; a client that has not sent them all by then\n"
                              "is disconnected. It is also how long an idle kept-alive connection stays open.",
                              _between(1, 60)),
        "max_connections": Key(int, 4096,
                               "Connections idp serve holds open at once, shared evenly among its workers: each\n"
                               "connection costs about 20 KB, not a thread. Beyond it new connections wait in\n"
                               "the backlog until one closes.", _at_least(64)),
        "backlog": Key(int, 1024, "Connections the kernel queues for idp serve before it accepts them.",
                       _at_least(128)),
        "proxy_hops": Key(int, 0, "How many reverse proxies in front set X-Forwarded-For/-Proto (0 = none trusted).",
                          _at_least(0)),
        "default_locale": Key(str, "fa", "Language of the login pages when the person has not chosen one.",
                              _one_of("fa", "en")),
    },
    "database": {
        "url": Key(str, "sqlite:///instance/idp.sqlite3",
                   "SQLAlchemy URL. sqlite:///PATH (embedded default) or postgresql://user@host/db (production;\n"
                   "driven by psycopg 3). For a primary that can move to its standby, name both and let libpq\n"
                   "pick the writable one: postgresql://user@/db?host=pg1,pg2&port=5432,5432\n"
                   "&target_session_attrs=read-write&connect_timeout=2", _db_url),
        "pool_size": Key(int, 10, "Connections kept open per process (PostgreSQL only).", _at_least(1)),
        "replica_url": Key(str, "",
                           "A read replica for reports (idp stats), which then show its lag; the login path\n"
                           "never reads from it. Empty: reports read from url.", _replica_url),
    },
    "store": {
        "url": Key(str, "memory://",
                   "Short-lived state (pending requests, codes, OTP challenges, sessions, limits).\n"
                   "memory:// is an in-process Redis for one process only (the embedded default).\n"
                   "redis://[:password@]host:6379/0 talks to one Redis.\n"
                   "redis+sentinel://[:password@]s1:26379,s2:26379,s3:26379/SERVICE[/DB] talks to the primary\n"
                   "that Redis Sentinel names for SERVICE, and follows a failover without a restart (the\n"
                   "password is the data nodes'; add ?sentinel_password=... if the sentinels have their own).",
                   _store_url),
        "prefix": Key(str, "idp:", "Prefix of every key this provider writes, so one Redis can serve several."),
    },
    "sms": {
        "backend": Key(str, "console",
                       "console (prints), file (appends JSON lines to `outbox`) or http (a gateway: the http_* keys).",
                       _one_of("console", "file", "http")),
        "outbox": Key(str, "instance/sms-outbox.jsonl",
                      "Path of the JSON-lines outbox for the file backend: one\n"
                      '{"to", "code", "text", "sent_at"} object per message.'),
        "http_provider": Key(str, "webhook",
                             "Protocol of the http backend: webhook (POSTs {\"to\", \"code\", \"text\", \"sent_at\"} as JSON\n"
                             "to `http_url`; any 2xx is success) or kavenegar (Kavenegar's verify/lookup OTP API).",
                             _one_of("webhook", "kavenegar")),
        "http_url": Key(str, "",
                        "webhook: the URL to POST to (required). kavenegar: the API base URL, empty for\n"
                        "https://api.kavenegar.com. https only (plain http is allowed only on loopback).",
                        lambda v: None if v == "" else _url(v)),
        "http_token": Key(str, "",
                          "webhook: optional bearer token sent as `Authorization: Bearer ...`.\n"
                          "kavenegar: the API key (required). Never logged; keep it out of the file and set\n"
                          "IDP_SMS_HTTP_TOKEN instead.", secret=True),
        "http_template": Key(str, "idp-otp",
                             "kavenegar: name of the verify template (defined in the Kavenegar panel, with %token%).",
                             lambda v: None if v and v.isascii() and not any(c.isspace() for c in v)
                             else "must be a template name without spaces"),
        "http_timeout_ms": Key(int, 3000,
                               "Milliseconds to wait for the gateway to connect, and again to answer, per attempt.",
                               lambda v: None if 100 <= v <= 30000 else "must be between 100 and 30000"),
        "http_retries": Key(int, 2,
                            "Further attempts after a transient failure (5xx, timeout, connection error); a refusal\n"
                            "(4xx, bad key, no credit) is never retried. A send takes at most about\n"
                            "(1 + http_retries) x http_timeout_ms plus a short backoff between attempts.",
                            lambda v: None if 0 <= v <= 5 else "must be between 0 and 5"),
    },
    "keys": {
        "dir": Key(str, "keys", "Directory holding the signing keys (private keys mode 0600, never committed)."),
        "id_token_alg": Key(str, "RS256", "Algorithm that signs ID tokens (RS256 is what OpenID Connect requires).",
                            _one_of("RS256", "ES256")),
        "access_token_alg": Key(str, "ES256", "Algorithm that signs JWT access tokens (RFC 9068).",
                                _one_of("RS256", "ES256")),
    },
    "tokens": {
        "access_token_ttl": Key(int, 600, "Lifetime of an access token, in seconds.", _at_least(60)),
        "id_token_ttl": Key(int, 600, "Lifetime of an ID token, in seconds.", _at_least(60)),
        "code_ttl": Key(int, 60, "Lifetime of an authorization code, in seconds (RFC 9700: short).", _at_least(10)),
        "refresh_token_ttl": Key(int, 2592000,
                                 "Lifetime of a refresh token, in seconds. Refresh tokens are issued to clients\n"
                                 "granted offline_access or registered with a refresh-token policy, and rotate on\n"
                                 "every use.", _at_least(300)),
        "refresh_grace_seconds": Key(int, 10,
                                     "A rotated refresh token presented again within this many seconds is answered\n"
                                     "with a plain invalid_grant (two parallel refreshes); later it is reuse and\n"
                                     "revokes the whole token family and its session.", _at_least(0)),
    },
    "login": {
        "otp_ttl": Key(int, 120, "How long a one-time code is valid, in seconds.", _at_least(30)),
        "otp_attempts": Key(int, 5, "Wrong codes that end a challenge (never switched off).", _at_least(1)),
        "pending_ttl": Key(int, 900, "How long a paused authorization request waits for the person, in seconds.",
                           _at_least(60)),
        "session_ttl": Key(int, 28800, "Absolute lifetime of a single sign-on session, in seconds.", _at_least(300)),
    },
    "limits": {
        "enabled": Key(bool, True,
                       "Rate limits on. Set false only for load tests and conformance runs from one loopback\n"
                       "address: the server says so loudly at start. A challenge's own rules (code lifetime,\n"
                       "single use, wrong tries per challenge) are not rate limits and are never switched off.\n"
                       "Every limit below is COUNT/SECONDS over a sliding window, keyed by an HMAC fingerprint."),
        "starts_per_ip": Key(str, "20/60",
                             "Logins started (national ID + mobile submitted) per client IP. Mobile carriers put\n"
                             "many phones behind one address: raise it if the proxy_hops setting cannot help.",
                             _rate),
        "code_checks_per_ip": Key(str, "60/60", "One-time codes checked per client IP.", _rate),
        "paused_requests_per_ip": Key(str, "60/60",
                                      "Authorization requests per client IP that pause for a login (each is kept\n"
                                      "in the store, a few KB, until the login ends or [login] pending_ttl passes).",
                                      _rate),
        "codes_per_national_id": Key(str, "5/900",
                                     "Codes sent per national ID (counted per national ID + mobile pair, so that\n"
                                     "a wrong mobile behaves exactly like the right one and a stranger who does\n"
                                     "not know the mobile cannot use up the owner's codes).", _rate),
        "codes_per_national_id_daily": Key(str, "10/86400", "Codes sent per national ID per day (as above).", _rate),
        "codes_per_mobile": Key(str, "20/86400",
                                "Codes sent per mobile number, whatever the national ID (family members may\n"
                                "share a number).", _rate),
        "resend_after": Key(int, 60, "Seconds before a code may be sent again for the same login.", _at_least(0)),
        "failures_before_cooloff": Key(int, 10,
                                       "Consecutive wrong codes for a national ID (and mobile) that start a cool-off.",
                                       _at_least(1)),
        "cooloff_seconds": Key(str, "60,300,900",
                               "Escalating cool-offs, in seconds, after each further run of wrong codes; the last\n"
                               "one repeats. Never permanent.", _seconds_list),
        "max_consecutive_failures": Key(int, 100,
                                        "NIST SP 800-63B cap: after this many wrong codes in a row no code is\n"
                                        "accepted for that national ID until `failure_memory` passes without one.",
                                        _at_least(1)),
        "failure_memory": Key(int, 86400,
                              "Seconds a run of wrong codes is remembered after the last one (a success clears it).",
                              _at_least(60)),
    },
    "stats": {
        "adult_age": Key(int, 18, "Age, in full years on the day of authentication, from which a citizen is an adult.",
                         _at_least(1)),
        "adult_population": Key(int, 0,
                                "Adult population for coverage. 0 = count adults in the citizens table today\n"
                                "(the registry snapshot `idp stats rollup` refreshes daily, plus citizens added since).",
                                _at_least(0)),
        "timezone": Key(str, "Asia/Tehran", "Time zone in which days begin and end for the figures.", _timezone),
    },
    "metrics": {
        "enabled": Key(bool, False,
                       "Serve Prometheus metrics at /metrics (logins, codes, wrong codes, locks, tokens, latency,\n"
                       "the unique-adult gauge). Scrapers must send `Authorization: Bearer <token>`."),
        "token": Key(str, "",
                     "The bearer token a scraper sends (32+ random characters; required when enabled). Keep it\n"
                     "out of the file and set IDP_METRICS_TOKEN instead.",
                     lambda v: None if v == "" or len(v) >= 32 else "must be at least 32 characters", secret=True),
        "multiproc_dir": Key(str, "",
                             "Directory where the workers of idp serve keep their metric files, so that a\n"
                             "scrape sums every worker (prometheus_client multiprocess mode); emptied at start.\n"
                             "Empty = a new temporary directory."),
    },
}


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses, where plain http is tolerated."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def example_toml() -> str:
    """config.example.toml, generated from the schema so that every key is documented in place."""
    lines = ["# Configuration of the national identity provider.",
             "# Found through IDP_CONFIG or --config. Any key can be overridden by an environment",
             "# variable IDP_<SECTION>_<KEY>, e.g. IDP_DATABASE_URL or IDP_SMS_BACKEND.",
             "# Generated by `idp config example`; edit the schema in idp/platform/schema.py, not this file."]
    for section, keys in SCHEMA.items():
        lines += ["", f"[{section}]"]
        for key, spec in keys.items():
            lines.append("")
            lines += [f"# {line}".rstrip() for line in spec.doc.splitlines()]
            if spec.default is None:
                lines.append(f"# Required. Environment: IDP_{section.upper()}_{key.upper()}")
                lines.append(f'{key} = "change-me-to-32-or-more-random-characters"')
            else:
                lines.append(f"{key} = {_toml_value(spec.default)}")
    return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
