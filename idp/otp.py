"""One-time codes (NIST SP 800-63B §5.1.3): start a challenge, verify a code.

A code is 6 digits from a CSPRNG, stored only as a keyed hash, valid ``otp_ttl`` seconds,
single use, and a challenge ends after ``otp_attempts`` wrong codes. A challenge is also
created when the national ID and mobile do not match a citizen, with no code that can ever
match, so a stranger cannot tell the two apart from the pages they see.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

from flask import current_app

from .extensions import settings, store
from .sms import message_text


class OtpError(Exception):
    """Base of the ways a code can fail."""


class OtpInvalid(OtpError):
    """Wrong code; ``remaining`` tries are left."""

    def __init__(self, remaining: int):
        super().__init__(f"wrong code, {remaining} tries left")
        self.remaining = remaining


class OtpExpired(OtpError):
    """The challenge is over: expired, already used, or never existed."""


class TooManyAttempts(OtpError):
    """The challenge ended after too many wrong codes."""


def _code_hash(challenge_id: str, code: str) -> str:
    return hmac.new(settings.derived_key("otp"), f"{challenge_id}\x00{code}".encode(), hashlib.sha256).hexdigest()


def new_code() -> str:
    """Six decimal digits from the operating system's CSPRNG."""
    return f"{secrets.randbelow(10**6):06d}"


def start(citizen_id: int | None, mobile: str | None) -> str:
    """Open a challenge and send its code when there is a citizen; returns the challenge id.

    For an unknown pair (``citizen_id`` None) the challenge holds a random hash that no code
    matches, and nothing is sent.
    """
    challenge_id = secrets.token_urlsafe(24)
    code = new_code()
    if citizen_id is not None:
        fields = {"code_hash": _code_hash(challenge_id, code), "citizen_id": str(citizen_id)}
    else:
        fields = {"code_hash": secrets.token_hex(32), "citizen_id": ""}
    store.put_challenge(challenge_id, fields, ttl=settings.login.otp_ttl)
    if citizen_id is not None:
        current_app.extensions["idp.sms"].send(mobile, code, message_text(code, settings.server.issuer))
    return challenge_id


def remaining_seconds(challenge_id: str) -> int:
    """Seconds until the challenge expires (0 when it is gone)."""
    challenge = store.get_challenge(challenge_id)
    return int(challenge["ttl"]) if challenge else 0


def verify(challenge_id: str, code: str) -> int:
    """The citizen id when the code is right; otherwise raises an OtpError.

    The attempt is counted before the comparison, so parallel guesses each use up a try.
    """
    limit = settings.login.otp_attempts
    challenge = store.get_challenge(challenge_id)
    if challenge is None:
        raise OtpExpired()
    attempts = store.count_challenge_attempt(challenge_id)
    if attempts == 0:
        raise OtpExpired()
    if attempts > limit:
        store.consume_challenge(challenge_id)
        raise TooManyAttempts()
    ok = hmac.compare_digest(challenge["code_hash"], _code_hash(challenge_id, code))
    if ok and challenge["citizen_id"]:
        if not store.consume_challenge(challenge_id):
            raise OtpExpired()  # a parallel request used the code first
        return int(challenge["citizen_id"])
    if attempts >= limit:
        store.consume_challenge(challenge_id)
        raise TooManyAttempts()
    raise OtpInvalid(limit - attempts)
