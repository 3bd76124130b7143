"""Back-channel logout (OIDC Back-Channel Logout 1.0): the queue of Logout Tokens owed to the
agencies of an ended session, and their delivery.

Ending a session queues one ``logout_deliveries`` row per client of the session that has a
``backchannel_logout_uri``, in the caller's transaction (:func:`queue`). Delivery (§2.5): one
daemon thread per serving process, started lazily when the process first ends a session within
a request (never by ``idp`` commands; ``ensure_worker`` may also be called at process start),
sweeps every due row, whoever queued it and before any restart, every few seconds and at once
when this process queues some. A row is *claimed* before it is sent:
``UPDATE ... SET attempts = attempts + 1, next_attempt_at = now + LEASE WHERE id = ? AND
attempts = ?`` succeeds for exactly one worker on any node (optimistic, on SQLite and
PostgreSQL alike), and a worker that dies mid-delivery leaves the row due again when the lease
ends. A 2xx answer delivers; anything else is retried with exponential backoff until
MAX_ATTEMPTS, then the row is given up. The Logout Token is signed at each attempt (fresh
iat/exp/jti, current key). ``idp logout deliver`` runs one sweep, for cron.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests
from flask import Flask, current_app
from sqlalchemy import update
from sqlalchemy.exc import InterfaceError, OperationalError

from ..platform.database import db, utcnow
from ..platform.keyring import keyring
from ..platform.keys import KeysUnavailable
from ..platform.settings import settings
from . import clients
from .models import LogoutDelivery
from .sessions import Session
from .subjects import subject_for

log = logging.getLogger("idp.logout")


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



def queue(session: Session) -> int:
    """Add (uncommitted) a delivery row for every client of the session that has a
    backchannel_logout_uri; returns how many."""
    queued = 0
    now = utcnow()
    for client_id, client in clients.find_many(session.clients).items():
        uri = (client.client_metadata or {}).get("backchannel_logout_uri")
        if not uri:
            continue
        db.session.add(LogoutDelivery(client_id=client_id, uri=uri, sub=subject_for(session.citizen, client),
                                      sid=session.psid, created_at=now, attempts=0, next_attempt_at=now))
        queued += 1
    return queued


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
    return key.sign_jwt(claims, "logout+jwt")


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


