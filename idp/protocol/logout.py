"""Logout: RP-initiated logout (the end_session_endpoint), back-channel logout, and logging a
citizen out everywhere.

Ending an SSO session reads top to bottom: the back-channel logouts owed to the session's
clients are written as ``logout_deliveries`` rows in the same transaction as the ``logout``
audit event (and the revocation of the session's refresh tokens) -> the session is deleted
from the store -> the browser's cookie is cleared -> the delivery worker is woken.

Delivery (OIDC Back-Channel Logout 1.0 §2.5): one daemon thread per serving process, started
lazily when the process first ends a session within a request (never by ``idp`` commands;
``ensure_worker`` may also be called at process start), sweeps every due row, whoever
queued it and before any restart, every few seconds and at once when this process queues
some. A row is *claimed* before it is sent:
``UPDATE ... SET attempts = attempts + 1, next_attempt_at = now + LEASE WHERE id = ? AND
attempts = ?`` succeeds for exactly one worker on any node (optimistic, on SQLite and
PostgreSQL alike), and a worker that dies mid-delivery leaves the row due again when the
lease ends. A 2xx answer delivers; anything else is retried with exponential backoff until
MAX_ATTEMPTS, then the row is given up. The Logout Token is signed at each attempt (fresh
iat/exp/jti, current key). ``idp logout deliver`` runs one sweep, for cron.

RP-initiated logout (OIDC RP-Initiated Logout 1.0): ``id_token_hint`` must be one of *our*
ID tokens (signature against the published keys, ``iss``, not an access or logout token,
``aud`` a known client); it may have expired. ``post_logout_redirect_uri`` is honoured only
on an exact match with the identified client's registered URIs, never otherwise. Without a
valid hint naming the browser's session the person confirms on a page (CSRF-protected).
"""
from __future__ import annotations

import datetime as dt
import hmac
import logging
import os
import re
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import requests
from flask import Blueprint, Flask, current_app, has_request_context, redirect, render_template, request
from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import update
from sqlalchemy.exc import InterfaceError, OperationalError

from ..citizens.models import Citizen
from ..platform import audit
from ..platform.database import db, utcnow
from ..platform.errors import PageError
from ..platform.i18n import use_ui_locales
from ..platform.keys import KeysUnavailable, keyring
from ..platform.settings import settings
from ..platform.store import store
from ..platform.web import csrf
from . import sessions
from .models import Client, LogoutDelivery

log = logging.getLogger("idp.logout")

bp = Blueprint("logout", __name__)

#: The event claim of a Logout Token (OIDC Back-Channel Logout 1.0 §2.4).
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: Lifetime of a Logout Token, in seconds.
LOGOUT_TOKEN_TTL = 120
#: Seconds to wait before each retry (the last one repeats). Tests may patch these constants.
BACKOFF: tuple[float, ...] = (10, 30, 120, 600, 3600)
#: Attempts before a delivery is given up.
MAX_ATTEMPTS = 12
#: Seconds an agency has to answer one delivery.
DELIVERY_TIMEOUT = 5.0
#: Seconds a claimed row stays reserved for its worker (longer than any delivery).
LEASE_SECONDS = 60
#: Seconds between sweeps of an idle worker.
SWEEP_INTERVAL = 5.0
#: Rows claimed per sweep, and deliveries in flight at once.
BATCH = 50
PARALLEL = 8

_MAX_PARAM = 2048
_MAX_HINT = 8192
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ---- ending sessions --------------------------------------------------------------------------

def _clients_by_id(client_ids: list[str]) -> dict[str, Client]:
    if not client_ids:
        return {}
    rows = db.session.execute(db.select(Client).where(Client.client_id.in_(client_ids))).scalars()
    return {c.client_id: c for c in rows}


def _queue_backchannel(session: dict[str, Any], citizen: Citizen | None) -> int:
    """Add (uncommitted) a delivery row for every client of the session that has a
    backchannel_logout_uri; returns how many."""
    from .oauth import subject_for

    if citizen is None:
        return 0
    queued = 0
    now = utcnow()
    clients = _clients_by_id(list(dict.fromkeys(session.get("clients") or [])))
    for client_id, client in clients.items():
        uri = (client.client_metadata or {}).get("backchannel_logout_uri")
        if not uri:
            continue
        db.session.add(LogoutDelivery(client_id=client_id, uri=uri, sub=subject_for(citizen, client),
                                      sid=session["psid"], created_at=now, attempts=0, next_attempt_at=now))
        queued += 1
    return queued


def _revoke_refresh_tokens(sid: str) -> None:
    """Revoke the session's refresh tokens (idp.tokens.revoke_session, which commits)."""
    try:
        from .tokens import revoke_session
    except ImportError:  # refresh tokens not wired in this build
        return
    revoke_session(sid)


def _end(found: list[dict[str, Any]], citizen_id: int, *, reason: str, client_id: str | None = None) -> int:
    """End live sessions of one citizen: deliveries + audit (+ refresh token revocation) in one
    transaction, then the store. Returns the back-channel logouts queued."""
    if not found:
        return 0
    citizen = db.session.get(Citizen, citizen_id)
    queued = sum(_queue_backchannel(s, citizen) for s in found)
    audit.record("logout", national_id=citizen.national_id if citizen else None, client_id=client_id,
                 commit=False, reason=reason, sessions=len(found), backchannel=queued)
    try:
        for s in found:
            _revoke_refresh_tokens(s["psid"])
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    store.end_sessions(citizen_id, [s["sid"] for s in found], [s["psid"] for s in found])
    if has_request_context():
        ensure_worker(current_app._get_current_object())  # a serving process: first use starts it
    if queued:
        kick()
    return queued


def end_session(session: dict[str, Any], *, reason: str, client_id: str | None = None) -> int:
    """End one SSO session (its dict from the store); returns the back-channel logouts queued."""
    return _end([session], session["citizen_id"], reason=reason, client_id=client_id)


def end_session_by_sid(psid: str, *, reason: str, client_id: str | None = None) -> bool:
    """End the SSO session with this public id (the `sid` in tokens) if it is still live (e.g.
    refresh-token reuse); True if it was."""
    session = store.session_by_public_id(psid) if psid else None
    if session is None:
        return False
    end_session(session, reason=reason, client_id=client_id)
    return True


def end_citizen_sessions(citizen_id: int, reason: str = "operator") -> int:
    """Log a citizen out everywhere: every live SSO session ends and its back-channel logouts
    are queued. Returns how many sessions ended."""
    return logout_everywhere(citizen_id, reason)[0]


def logout_everywhere(citizen_id: int, reason: str = "operator") -> tuple[int, int]:
    """As end_citizen_sessions; returns (sessions ended, back-channel logouts queued)."""
    sids = store.citizen_session_ids(citizen_id)
    found = [s for s in (store.get_session(sid) for sid in sids) if s and s.get("citizen_id") == citizen_id]
    stale = [sid for sid in sids if sid not in {s["sid"] for s in found}]
    queued = _end(found, citizen_id, reason=reason)
    store.end_sessions(citizen_id, stale)
    return len(found), queued


# ---- Logout Tokens ------------------------------------------------------------------------------

def _signing_key():
    alg = settings.keys.id_token_alg
    try:
        return keyring.signing_key(alg)
    except KeyError:
        raise KeysUnavailable(f"[keys] dir: no active {alg} key to sign logout tokens "
                              f"(create one: idp keys generate --alg {alg})") from None


def logout_token(client_id: str, sub: str, sid: str) -> str:
    """A Logout Token (Back-Channel Logout §2.4) signed with the ID-token key; never a nonce."""
    key = _signing_key()
    now = int(time.time())
    claims = {"iss": settings.server.issuer, "aud": client_id, "iat": now, "exp": now + LOGOUT_TOKEN_TTL,
              "jti": secrets.token_urlsafe(18), "sub": sub, "sid": sid, "events": {BACKCHANNEL_EVENT: {}}}
    return jwt.encode({"alg": key.alg, "kid": key.kid, "typ": "logout+jwt"}, claims, key.keyset,
                      algorithms=[key.alg])


# ---- delivery -------------------------------------------------------------------------------------

def _backoff(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones."""
    return BACKOFF[min(max(attempts, 1), len(BACKOFF)) - 1]


def _post(uri: str, token: str) -> str | None:
    """POST one Logout Token; None when delivered, else why not (for last_error)."""
    try:
        resp = requests.post(uri, data={"logout_token": token}, timeout=DELIVERY_TIMEOUT, allow_redirects=False,
                             headers={"Cache-Control": "no-store"})
    except requests.RequestException as exc:
        return f"{exc.__class__.__name__}: {exc}"[:200]
    if 200 <= resp.status_code < 300:
        return None
    return f"HTTP {resp.status_code}"


@dataclass
class SweepResult:
    due: int = 0
    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    given_up: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {"due": self.due, "claimed": self.claimed, "delivered": self.delivered,
                "retrying": self.retrying, "given_up": self.given_up}


def _pending():
    return (LogoutDelivery.delivered_at.is_(None), LogoutDelivery.given_up_at.is_(None))


def sweep(limit: int = BATCH) -> SweepResult:
    """Deliver the due back-channel logouts once (within an app context). Safe to run on many
    nodes at once: a row is sent only by the worker whose claim succeeded."""
    _signing_key()  # fail early, before claiming anything
    result = SweepResult()
    now = utcnow()
    due = db.session.execute(db.select(LogoutDelivery.id, LogoutDelivery.attempts)
                             .where(*_pending(), LogoutDelivery.next_attempt_at <= now)
                             .order_by(LogoutDelivery.next_attempt_at).limit(limit)).all()
    db.session.rollback()
    result.due = len(due)
    claimed: list[tuple[LogoutDelivery, int]] = []
    for row_id, seen in sorted(due):
        taken = db.session.execute(update(LogoutDelivery)
                                   .where(LogoutDelivery.id == row_id, LogoutDelivery.attempts == seen, *_pending())
                                   .values(attempts=seen + 1,
                                           next_attempt_at=now + dt.timedelta(seconds=LEASE_SECONDS)))
        db.session.commit()
        if taken.rowcount == 1:
            row = db.session.get(LogoutDelivery, row_id)
            claimed.append((row, seen + 1))
    result.claimed = len(claimed)
    if not claimed:
        return result
    jobs = [(row.uri, logout_token(row.client_id, row.sub, row.sid)) for row, _ in claimed]
    with ThreadPoolExecutor(max_workers=min(PARALLEL, len(jobs)), thread_name_prefix="bcl") as pool:
        outcomes = list(pool.map(lambda job: _post(*job), jobs))
    done = utcnow()
    for (row, attempts), error in zip(claimed, outcomes):
        if error is None:
            values = {"delivered_at": done, "last_error": None}
            result.delivered += 1
        elif attempts >= MAX_ATTEMPTS:
            values = {"given_up_at": done, "last_error": error}
            result.given_up += 1
            log.warning("back-channel logout to %s given up after %d attempts: %s", row.client_id, attempts, error)
        else:
            values = {"next_attempt_at": done + dt.timedelta(seconds=_backoff(attempts)), "last_error": error}
            result.retrying += 1
            log.info("back-channel logout to %s failed (attempt %d): %s", row.client_id, attempts, error)
        # Still ours only while nobody else re-claimed it after a lease ran out.
        db.session.execute(update(LogoutDelivery)
                           .where(LogoutDelivery.id == row.id, LogoutDelivery.attempts == attempts, *_pending())
                           .values(**values))
    db.session.commit()
    return result


class _Worker:
    """The per-process delivery thread of one app (a daemon)."""

    def __init__(self, app: Flask):
        self.app = app
        self.pid = os.getpid()
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="backchannel-logout", daemon=True)

    def _run(self) -> None:
        while not self.stopped.is_set():
            busy = False
            try:
                with self.app.app_context():
                    busy = sweep().claimed >= BATCH
            except (OperationalError, InterfaceError) as error:
                # An outage, not a bug: one line, as requests log it; the next sweep tries again.
                log.warning("back-channel logout sweep: database unavailable: %s", error.__class__.__name__)
            except Exception:  # noqa: BLE001 - the worker must outlive a failing database or store
                log.exception("back-channel logout sweep failed")
            if not busy:
                self.wake.wait(SWEEP_INTERVAL)
                self.wake.clear()


_workers_lock = threading.Lock()
_WORKER_KEY = "idp.logout_worker"


def ensure_worker(app: Flask) -> None:
    """Start this process's delivery thread for the app unless it runs (or was stopped for good).

    Called when a serving process first ends a session (never by ``idp`` commands); a serving
    process may also call it at start (``idp serve`` does, in each worker) so that rows left by
    a restart are swept before the next logout. A forked process starts its own."""
    worker = app.extensions.get(_WORKER_KEY)
    if worker == "disabled" or (isinstance(worker, _Worker) and worker.pid == os.getpid()):
        return
    with _workers_lock:
        worker = app.extensions.get(_WORKER_KEY)
        if worker == "disabled" or (isinstance(worker, _Worker) and worker.pid == os.getpid()):
            return
        worker = _Worker(app)
        app.extensions[_WORKER_KEY] = worker
        worker.thread.start()


def stop_worker(app: Flask) -> None:
    """Stop the app's delivery thread and do not start it again (shutdown, tests)."""
    with _workers_lock:
        worker = app.extensions.get(_WORKER_KEY)
        app.extensions[_WORKER_KEY] = "disabled"
    if isinstance(worker, _Worker):
        worker.stopped.set()
        worker.wake.set()
        worker.thread.join(DELIVERY_TIMEOUT * 2)


def start_worker(app: Flask) -> None:
    """Allow the delivery thread again after stop_worker, and start it."""
    with _workers_lock:
        if app.extensions.get(_WORKER_KEY) == "disabled":
            del app.extensions[_WORKER_KEY]
    ensure_worker(app)


def kick() -> None:
    """Wake this process's worker (rows were just queued); a no-op where none runs (CLI)."""
    worker = current_app.extensions.get(_WORKER_KEY)
    if isinstance(worker, _Worker) and worker.pid == os.getpid():
        worker.wake.set()


# ---- the id_token_hint ----------------------------------------------------------------------------

@dataclass
class Hint:
    """A verified id_token_hint: one of our ID tokens (possibly expired)."""

    claims: dict[str, Any]
    client: Client

    @property
    def sid(self) -> str | None:
        sid = self.claims.get("sid")
        return sid if isinstance(sid, str) and sid else None


def _enabled_client(client_id: Any) -> Client | None:
    if not isinstance(client_id, str) or not client_id or len(client_id) > 64:
        return None
    client = db.session.execute(db.select(Client).filter_by(client_id=client_id)).scalar_one_or_none()
    return client if client is not None and client.is_enabled else None


def verify_hint(token: str | None) -> Hint | None:
    """The hint when it is an ID token this provider issued to a known client, else None.

    Checked: the signature against our published keys, ``typ`` (an access token or a Logout
    Token is not an ID token), ``iss``, and ``aud`` naming an enabled client (``azp`` when
    there are several). ``exp`` is not checked: an expired hint still identifies the session
    (RP-Initiated Logout §2).
    """
    if not token or len(token) > _MAX_HINT:
        return None
    try:
        decoded = jwt.decode(token, keyring.public_key_set(), algorithms=["RS256", "ES256"])
    except (JoseError, ValueError, TypeError, KeyError):
        return None
    typ = decoded.header.get("typ")
    if typ is not None and str(typ).upper() != "JWT":
        return None
    claims = decoded.claims
    if claims.get("iss") != settings.server.issuer or "events" in claims:
        return None
    aud = claims.get("aud")
    auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if len(auds) == 1:
        client_id = auds[0]
    elif claims.get("azp") in auds:
        client_id = claims["azp"]
    else:
        return None
    client = _enabled_client(client_id)
    if client is None or not isinstance(claims.get("sub"), str):
        return None
    return Hint(claims, client)


# ---- RP-initiated logout ---------------------------------------------------------------------------

class BadLogoutRequest(PageError):
    """A logout request with malformed parameters."""

    key = "bad_request"
    error = "invalid_request"


_PARAMS = ("id_token_hint", "client_id", "post_logout_redirect_uri", "state", "ui_locales", "logout_hint")


@dataclass
class LogoutRequest:
    """A validated logout request."""

    params: dict[str, str]
    hint: Hint | None
    client: Client | None
    redirect_uri: str | None  # only ever a URI registered by the identified client

    @property
    def hint_given(self) -> bool:
        return bool(self.params.get("id_token_hint"))


def _read_params(values) -> dict[str, str]:
    params: dict[str, str] = {}
    for name in _PARAMS:
        got = values.getlist(name)
        if not got:
            continue
        if len(got) > 1:
            raise BadLogoutRequest()
        limit = _MAX_HINT if name == "id_token_hint" else _MAX_PARAM
        if len(got[0]) > limit or _CONTROL.search(got[0]):
            raise BadLogoutRequest()
        if got[0]:
            params[name] = got[0]
    return params


def parse_logout_request(values) -> LogoutRequest:
    """Validate the parameters. The client is identified by a valid hint or by client_id (which
    must then agree with the hint); an invalid hint or a disagreeing client_id identifies nobody."""
    params = _read_params(values)
    hint = verify_hint(params.get("id_token_hint"))
    client: Client | None = None
    if params.get("id_token_hint"):
        if hint is not None:
            asked = params.get("client_id")
            aud = hint.claims.get("aud")
            auds = [aud] if isinstance(aud, str) else aud or []
            if asked is None or asked in auds:
                client = hint.client
            else:
                hint = None  # a hint and a client_id that disagree: trust neither
    elif params.get("client_id"):
        client = _enabled_client(params["client_id"])
    wanted = params.get("post_logout_redirect_uri")
    redirect_uri = wanted if client is not None and wanted and wanted in client.post_logout_redirect_uris else None
    return LogoutRequest(params, hint, client, redirect_uri)


def _hinted_session(req: LogoutRequest) -> dict[str, Any] | None:
    """The live session the hint names, when it is this hint's citizen's."""
    from .oauth import subject_for

    if req.hint is None or req.hint.sid is None or len(req.hint.sid) > 64:
        return None
    session = store.session_by_public_id(req.hint.sid)
    if session is None:
        return None
    citizen = db.session.get(Citizen, session["citizen_id"])
    if citizen is None or not hmac.compare_digest(subject_for(citizen, req.hint.client), req.hint.claims["sub"]):
        return None
    return session


def _finish(req: LogoutRequest):
    """Redirect to the registered post-logout URI (with state), or show the signed-out page."""
    if req.redirect_uri:
        target = req.redirect_uri
        if req.params.get("state"):
            target += ("&" if "?" in target else "?") + urlencode({"state": req.params["state"]})
        response = redirect(target, code=303)
    else:
        response = current_app.make_response(render_template("logout_done.html", client=req.client))
    response.delete_cookie(sessions.SSO_COOKIE, path="/", secure=settings.is_https, httponly=True, samesite="Lax")
    return response


def _end_all(targets: list[dict[str, Any]], reason: str, client: Client | None) -> None:
    seen: set[str] = set()
    for session in targets:
        if session and session["sid"] not in seen:
            seen.add(session["sid"])
            end_session(session, reason=reason, client_id=client.client_id if client else None)


@bp.route("/logout", methods=["GET", "POST"])
@csrf.exempt  # the end_session_endpoint: relying parties may POST to it (RP-Initiated Logout §2)
def end_session_endpoint():
    """OpenID Connect RP-Initiated Logout 1.0: log out at once when a valid id_token_hint names
    this browser's session (or the browser shows none, e.g. a cross-site POST that carries no
    Lax cookie); otherwise ask the person to confirm."""
    req = parse_logout_request(request.values)
    use_ui_locales(req.params.get("ui_locales"))
    current = sessions.current_session()
    hinted = _hinted_session(req)
    if current is not None and (hinted is None or hinted["sid"] != current["sid"]):
        return render_template("logout_confirm.html", client=req.client, params=req.params)
    _end_all([hinted], "rp_initiated", req.client)
    return _finish(req)


@bp.post("/logout/confirm")
def confirm():
    """The person confirmed (CSRF-checked by Flask-WTF): end this browser's session (and the one
    a valid hint names)."""
    if not request.form.get("confirm"):
        raise BadLogoutRequest()
    req = parse_logout_request(request.form)
    use_ui_locales(req.params.get("ui_locales"))
    _end_all([sessions.current_session(), _hinted_session(req)], "confirmed", req.client)
    return _finish(req)
