"""Short-lived state, each record with a TTL. The one place that names Redis keys: this package
(the table below is its key schema; login.py, protocol.py and counters.py hold the records).

``redis://`` talks to a real Redis; ``memory://`` to an in-process Redis (fakeredis), so the
embedded default runs the very same redis-py calls. Losing the store logs people out and
forgets live counters; it never loses a durable fact (those live in SQL).

Key schema (all under the configured prefix):

====================================  =========================================================
``req:{id}``                          a paused authorization request (JSON), until login ends
``otp:{id}``                          an OTP challenge (hash: code hash, citizen, attempts, state)
``sms-down``                          set for a minute after the SMS gateway failed
``totp-new:{sid}``                    an authenticator secret shown but not yet confirmed
``sess:{sid}``                        a single sign-on session (JSON); ``sid`` = sha256 of the
                                      browser's cookie (``session_id``), never the cookie itself
``psid:{public sid}``                 the session a public id (the `sid` claim in tokens) belongs to
``sess-ended:{public sid}``           a session that ended: its access tokens are refused
``sess-of:{citizen_id}``              the ids of a citizen's SSO sessions (set; TTL = session_ttl,
                                      renewed at each login; members may be stale, which is harmless);
                                      read to log out everywhere and to list them on /account/record
``code:{sha256(code)}``               an authorization code's grant (JSON); consumed by GETDEL
``code-used:{sha256(code)}``          marks a redeemed code, to detect and punish replay
``nonce:{client}:{sha256(nonce)}``    a nonce already bound to a code (replay detection)
``revoked-at:{jti}``                  an access token revoked before its expiry
``jti:{client}:{sha256(jti)}``        a private_key_jwt client assertion already used (until it expires)
``hll:day:{date}[:{client}]``         HyperLogLog of today's unique citizens (live figures)
``live:logins:{date}``                today's logins per client (hash: client -> count)
``live:since:{date}``                 when the live figures of a day began (a later time = flushed)
``rl:{limit}:{fingerprint}``          a sliding-window log (sorted set of hit times) of one limit
``fail:{fingerprint}``                consecutive wrong codes of a national ID + mobile pair
``cool:{fingerprint}``                a cool-off in force (its TTL is the wait)
``clients:version``                   a random value renewed whenever a registered client changes
                                      (each process's client cache is valid under one value)
``clients:changed``                   (a Pub/Sub channel, not a key) each new value, published
                                      to every serving process that follows it
====================================  =========================================================
"""
from __future__ import annotations

from flask import current_app
from werkzeug.local import LocalProxy

from .base import ORPHAN_TTL, Window, connect
from .counters import LiveCounters
from .login import LoginRecords
from .protocol import ProtocolRecords

__all__ = ["ORPHAN_TTL", "Store", "Window", "connect", "store"]


class Store(ProtocolRecords, LoginRecords, LiveCounters):
    """Named short-lived records over one redis-py client."""


#: The short-lived store of the current app.
store = LocalProxy(lambda: current_app.extensions["idp.store"])
