"""Authenticator apps (TOTP, RFC 6238): enrolment after an SMS login, and codes accepted once.

The secret is encrypted at rest (Fernet, with a key derived from the master secret). A code
is accepted for the current 30-second step or one step either side (clock drift), and only
for a step later than the last one accepted: one conditional UPDATE makes that atomic, so
the same code cannot be used twice, even by two requests at once.
"""
from __future__ import annotations

import hmac
import time

import pyotp
import segno
from cryptography.fernet import Fernet, InvalidToken

from ..citizens import authenticators
from ..platform.settings import settings
from ..platform.store import store

STEP = 30
ISSUER_LABEL = "National sign-in"


def _fernet() -> Fernet:
    return Fernet(settings.derived_fernet_key("totp-secret"))


def new_secret() -> str:
    """A fresh base32 secret (160 bits, as RFC 4226 recommends)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, account: str) -> str:
    """The otpauth:// URI that authenticator apps read from the QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=ISSUER_LABEL)


def qr_data_uri(uri: str) -> str:
    """The QR code as an SVG data URI (allowed by the page's CSP: img-src data:)."""
    return segno.make(uri, error="m").svg_data_uri(scale=5, border=2)


def grouped(secret: str) -> str:
    """The secret in groups of four, for typing into an app by hand."""
    return " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))


def begin_enrolment(sid: str) -> str:
    """Keep a new secret for this session until the person confirms it with a first code."""
    secret = new_secret()
    store.put_pending_totp(sid, secret, ttl=600)
    return secret


def pending_secret(sid: str) -> str | None:
    """The secret being enrolled in this session, if any."""
    return store.get_pending_totp(sid)


def _matching_step(secret: str, code: str, at: float | None = None) -> int | None:
    """The time step (now, or one either side) whose code equals ``code``, compared in constant time."""
    if not (len(code) == 6 and code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    now_step = int((at or time.time()) // STEP)
    found = None
    for step in (now_step - 1, now_step, now_step + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found


def confirm_enrolment(sid: str, citizen_id: int, code: str) -> bool:
    """Enrol the pending secret when the first code is right (that code is then used up)."""
    secret = pending_secret(sid)
    if secret is None:
        return False
    step = _matching_step(secret, code)
    if step is None:
        return False
    authenticators.enrol(citizen_id, _fernet().encrypt(secret.encode()).decode(), step)
    store.delete_pending_totp(sid)
    return True


def is_enrolled(citizen_id: int) -> bool:
    """Whether the citizen has an authenticator app."""
    return authenticators.secret(citizen_id) is not None


def check(citizen_id: int, code: str) -> bool:
    """A login code from the app: right, in the window, and not used before."""
    return _check_secret(authenticators.secret(citizen_id), citizen_id, code)


def _check_secret(encrypted: str | None, citizen_id: int, code: str) -> bool:
    if not encrypted:
        return False
    try:
        secret = _fernet().decrypt(encrypted.encode()).decode()
    except InvalidToken:
        return False
    step = _matching_step(secret, code)
    return step is not None and authenticators.claim_step(citizen_id, step)


_STAND_IN: dict[bytes, str] = {}


def check_without_app(code: str) -> bool:
    """The work of ``check`` (a citizen row read, a secret decrypted, the codes of three steps
    computed) for a challenge that cannot succeed: an app code asked for a pair that is not
    registered or has no app. A wrong app code then takes as long whether or not the pair has an
    app, so the time of the answer does not tell a stranger who knows the pair. Always False."""
    authenticators.secret(0)  # ids start at 1: the same SELECT, no row
    key = settings.derived_fernet_key("totp-secret")
    token = _STAND_IN.get(key)
    if token is None:
        token = _STAND_IN[key] = _fernet().encrypt(new_secret().encode()).decode()
    _matching_step(_fernet().decrypt(token.encode()).decode(), code)
    return False


def remove(citizen_id: int) -> None:
    """Forget the citizen's authenticator app."""
    authenticators.remove(citizen_id)


def account_label(national_id: str) -> str:
    """The account name shown in the app: the national ID masked, never whole."""
    return "*******" + national_id[-3:]
