"""One-time codes (NIST SP 800-63B §5.1.3): start a challenge, resend, verify.

A code is 6 digits from a CSPRNG, stored only as a keyed hash, valid ``otp_ttl`` seconds,
single use, and a challenge ends after ``otp_attempts`` wrong codes. The challenge itself is
kept a while after its code expires, so that the login can still ask for a new code
(``resend``). A challenge is also created when the national ID and mobile do not match a
citizen, with no code that can ever match, so a stranger cannot tell the two apart from the
pages they see.

The SMS itself is handed to a small per-process pool of sender threads, so the request
takes the same time whether or not a message goes out (no timing oracle for registered
pairs) and a slow gateway never holds a web worker. The challenge records the outcome;
on a failure the person is told and may resend: the challenge is not spent.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from flask import after_this_request, current_app

from ..citizens.directory import Citizen
from ..citizens.national_id import mask_mobile
from ..platform import audit, metrics
from ..platform.settings import settings
from ..platform.store import Window, store
from . import totp
from .sms import SmsError, message_text

log = logging.getLogger("idp.otp")


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


class ResendTooSoon(OtpError):
    """A new code may be sent only ``wait`` seconds from now."""

    def __init__(self, wait: int):
        super().__init__(f"wait {wait}s")
        self.wait = wait


def _lifetime() -> int:
    """How long a challenge is kept: its code's lifetime and then as long as its login can wait
    ([login] pending_ttl), so that a new code can still be sent for the same login once the
    code has expired (``expires`` in the challenge is the code's own end)."""
    return settings.login.otp_ttl + settings.login.pending_ttl


def _expired(challenge: dict) -> bool:
    """Whether the challenge's code has expired (a challenge without ``expires`` ends with its key)."""
    expires = challenge.get("expires")
    return bool(expires) and int(time.time()) >= int(expires)


def _code_hash(challenge_id: str, code: str) -> str:
    return hmac.new(settings.derived_key("otp"), f"{challenge_id}\x00{code}".encode(), hashlib.sha256).hexdigest()


def new_code() -> str:
    """Six decimal digits from the operating system's CSPRNG."""
    return f"{secrets.randbelow(10**6):06d}"


def _pool() -> ThreadPoolExecutor:
    app = current_app._get_current_object()
    pool = app.extensions.get("idp.sms_pool")
    if pool is None:
        pool = app.extensions["idp.sms_pool"] = ThreadPoolExecutor(max_workers=16, thread_name_prefix="sms")
    return pool


_health: dict[str, tuple[bool, float]] = {}


def _note_health(st, ok: bool) -> None:
    """Tell the store how the gateway is doing: at once when it changes, else at most every
    15 seconds from this process (the mark lives a minute), not once per message."""
    last = _health.get(st.prefix)
    now = time.monotonic()
    if last is not None and last[0] == ok and now - last[1] < 15:
        return
    st.set_sms_health(ok)
    _health[st.prefix] = (ok, now)


def _deliver(app, challenge_id: str, send_id: str, to: str, code: str, text: str) -> None:
    """In a sender thread: send, then record the outcome on the challenge, unless a newer code
    was queued meanwhile (a late failure must not hide a resend that worked)."""
    st = app.extensions["idp.store"]
    state = "sent"
    try:
        app.extensions["idp.sms"].send(to, code, text)
    except SmsError as exc:
        log.warning("sms not sent (challenge %s…): %s", challenge_id[:6], exc)
        state = "failed"
    except Exception:  # noqa: BLE001 - a sender bug must not kill the pool thread silently
        log.exception("sms sender crashed")
        state = "failed"
    _note_health(st, state == "sent")
    metrics.code_sent(state)
    with app.app_context():
        audit.record("code_sent" if state == "sent" else "sms_failed", code_to=mask_mobile(to))
    current = st.get_challenge(challenge_id)
    if current is not None and current.get("send_id") == send_id:
        st.update_challenge(challenge_id, {"state": state})


#: Longest a sender waits for the answer to be sent before it sends all the same (a server that
#: never closes the response: werkzeug's development server, when the browser resets the
#: connection right after a redirect).
ANSWER_WAIT = 1.0


def _deliver_after(answered: threading.Event, app, challenge_id: str, send_id: str, citizen_id: str, to: str,
                   code: str, text: str) -> None:
    """In a sender thread: wait until the request's answer has gone out, then send (for a
    registered pair only)."""
    answered.wait(ANSWER_WAIT)
    if citizen_id:
        _deliver(app, challenge_id, send_id, to, code, text)


def _dispatch(challenge_id: str, send_id: str, citizen_id: str, to: str, code: str) -> None:
    """Queue the message, to be sent once this request's answer has gone out; for an unknown
    pair the same is queued, and sends nothing.

    The sender thread runs in this process and its work (the gateway, the outbox, the audit
    row) competes with the request for the interpreter and the database: started before the
    answer, it made a registered pair's answer measurably slower (a timing oracle). The
    answer is known to be out when the server closes the response (PEP 3333)."""
    answered = threading.Event()
    _pool().submit(_deliver_after, answered, current_app._get_current_object(), challenge_id, send_id, citizen_id,
                   to, code, message_text(code, settings.server.issuer))

    @after_this_request
    def _send_after_the_answer(response):
        response.call_on_close(answered.set)
        return response


def start(citizen: Citizen | None, mobile: str, kind: str = "sms", totp_ready: bool = False,
          count_in: Window | None = None) -> str:
    """Open a challenge; returns its id. ``kind`` is sms (a code is queued for a citizen) or totp
    (the code comes from the citizen's authenticator app; nothing is sent). A code really sent
    is counted in the ``count_in`` window, in the challenge's own write.

    For an unknown pair (``citizen`` None), or an app code asked of a citizen with no app,
    no code can ever match, and the pages look exactly the same. The challenge keeps what the
    login's end needs of the citizen (``verify`` gives it back), so no row is read again.
    """
    challenge_id = secrets.token_urlsafe(24)
    send_id = secrets.token_hex(4)
    code = new_code()
    cid = "" if citizen is None else str(citizen.id)
    who = ({"sk": citizen.subject_key, "bd": citizen.birth_date.isoformat(), "adult": "1" if citizen.adult_counted else ""}
           if citizen is not None else {"sk": "", "bd": "", "adult": ""})
    # The same work for every pair: for an unknown pair the code is made, hashed and dropped
    # (verify never accepts a challenge without a citizen); an app-code challenge's code is
    # never sent, so it can never be entered either.
    store.put_challenge(challenge_id, {"code_hash": _code_hash(challenge_id, code),
                                       "citizen_id": cid, "to": mobile, "kind": kind,
                                       "totp": "1" if (kind == "totp" and totp_ready and cid) else "",
                                       "sent_at": str(int(time.time())), "state": "queued", "send_id": send_id,
                                       "expires": str(int(time.time()) + settings.login.otp_ttl), **who},
                        ttl=_lifetime(), count_in=count_in if kind == "sms" else None,
                        spend=kind == "sms" and bool(cid))
    if kind == "sms":
        _dispatch(challenge_id, send_id, cid, mobile, code)
    return challenge_id


def resendable(challenge_id: str) -> dict:
    """The challenge, if a new code may be sent for it now; raises OtpExpired or ResendTooSoon.

    Asked before any send budget is counted: a press that is refused as too soon costs nothing."""
    challenge = store.get_challenge(challenge_id)
    if challenge is None:
        raise OtpExpired()
    wait = resend_wait(challenge)
    if wait:
        raise ResendTooSoon(wait)
    return challenge


def resend(challenge_id: str, challenge: dict, count_in: Window | None = None) -> None:
    """A new SMS code for the same challenge (from ``resendable``; wrong tries so far still
    count); from an app-code challenge this switches to SMS at once."""
    code = new_code()
    send_id = secrets.token_hex(4)
    cid = challenge["citizen_id"]
    if not store.update_challenge(challenge_id, {"code_hash": _code_hash(challenge_id, code),
                                                 "sent_at": str(int(time.time())), "state": "queued", "kind": "sms",
                                                 "totp": "", "send_id": send_id,
                                                 "expires": str(int(time.time()) + settings.login.otp_ttl)},
                                  ttl=_lifetime(), count_in=count_in, spend=bool(cid)):
        raise OtpExpired()
    _dispatch(challenge_id, send_id, cid, challenge["to"], code)


def resend_wait(challenge: dict) -> int:
    """Seconds before a new code may be sent (0 at once after a failed send or for an app code)."""
    if challenge.get("state") == "failed" or challenge.get("kind") == "totp":
        return 0
    return max(0, int(challenge.get("sent_at", 0)) + settings.limits.resend_after - int(time.time()))


def status(challenge_id: str) -> dict | None:
    """What the code page shows: seconds left, seconds before a resend, whether sending failed."""
    challenge = store.get_challenge(challenge_id)
    if challenge is None:
        return None
    kind = challenge.get("kind", "sms")
    failed = kind == "sms" and (challenge.get("state") == "failed"
                                or (not challenge["citizen_id"] and store.sms_failing()))
    expires = challenge.get("expires")
    seconds = max(0, int(expires) - int(time.time())) if expires else int(challenge["ttl"])
    return {"seconds": seconds, "resend_in": resend_wait(challenge), "failed": failed, "kind": kind}


def _citizen_of(challenge: dict) -> Citizen | None:
    """The citizen a challenge was opened for, as it was read then (None for a challenge made
    before challenges kept it: the caller reads the row)."""
    if not challenge.get("sk"):
        return None
    return Citizen(int(challenge["citizen_id"]), challenge["sk"], dt.date.fromisoformat(challenge["bd"]),
                   adult_counted=challenge.get("adult") == "1")


def verify(challenge_id: str, code: str) -> tuple[int, str, Citizen | None]:
    """(citizen id, method, the citizen as read at the start) when the code is right;
    otherwise raises an OtpError.

    The attempt is counted before the comparison, so parallel guesses each use up a try.
    """
    limit = settings.login.otp_attempts
    challenge, attempts = store.attempt_challenge(challenge_id)
    if challenge is None or _expired(challenge):
        raise OtpExpired()  # an expired code's challenge is kept: a new code can be sent for it
    if attempts > limit:
        store.consume_challenge(challenge_id)
        raise TooManyAttempts()
    method = challenge.get("kind", "sms")
    if method == "totp":
        if challenge["totp"]:
            ok = totp.check(int(challenge["citizen_id"]), code)
        else:
            ok = totp.check_without_app(code)  # the same work, so the time tells nothing
    else:
        ok = hmac.compare_digest(challenge["code_hash"], _code_hash(challenge_id, code)) and bool(
            challenge["citizen_id"])
    if ok:
        if not store.consume_challenge(challenge_id):
            raise OtpExpired()  # a parallel request used the code first
        return int(challenge["citizen_id"]), method, _citizen_of(challenge)
    if attempts >= limit:
        store.consume_challenge(challenge_id)
        metrics.wrong_code(method, locked=True)
        raise TooManyAttempts()
    metrics.wrong_code(method)
    raise OtpInvalid(limit - attempts)
