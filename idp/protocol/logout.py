"""Logout: RP-initiated logout (the end_session_endpoint), and ending SSO sessions (a logout,
refresh-token reuse, or an operator logging a citizen out everywhere).

Ending sessions reads top to bottom: the back-channel logouts owed to the sessions' clients are
queued (backchannel.queue) in the same transaction as the ``logout`` audit event and the
revocation of the sessions' refresh tokens -> the sessions are deleted from the store -> the
browser's cookie is cleared -> the delivery worker is woken.

RP-initiated logout (OIDC RP-Initiated Logout 1.0): ``id_token_hint`` must be one of *our* ID
tokens (verify.verify_hint); it may have expired. ``post_logout_redirect_uri`` is honoured only
on an exact match with the identified client's registered URIs, never otherwise. Without a
valid hint naming the browser's session the person confirms on a page (CSRF-protected).
"""
from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from urllib.parse import urlencode

from flask import Blueprint, current_app, has_request_context, redirect, render_template, request

from ..citizens import directory
from ..platform import audit
from ..platform.database import db
from ..platform.errors import PageError
from ..platform.i18n import use_ui_locales
from ..platform.store import store
from ..platform.web import csrf
from . import backchannel, clients, sessions, tokens
from .models import Client
from .sessions import Session
from .subjects import subject_for
from .verify import MAX_HINT, Hint, verify_hint

bp = Blueprint("logout", __name__)

_MAX_PARAM = 2048
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ---- ending sessions --------------------------------------------------------------------------

def _end(found: list[Session], citizen_id: int, *, reason: str, client_id: str | None = None) -> int:
    """End live sessions of one citizen: deliveries + audit + refresh-token revocation in one
    transaction, then the store. Returns the back-channel logouts queued."""
    if not found:
        return 0
    person = directory.profile(citizen_id)
    queued = sum(backchannel.queue(s) for s in found)
    audit.record("logout", national_id=person.national_id if person else None, client_id=client_id,
                 commit=False, reason=reason, sessions=len(found), backchannel=queued)
    try:
        for s in found:
            tokens.revoke_session(s.psid, commit=False)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    store.end_sessions(citizen_id, [s.sid for s in found], [s.psid for s in found])
    if has_request_context():
        backchannel.ensure_worker(current_app._get_current_object())  # a serving process: first use starts it
    if queued:
        backchannel.kick()
    return queued


def end_session(session: Session, *, reason: str, client_id: str | None = None) -> int:
    """End one SSO session; returns the back-channel logouts queued."""
    return _end([session], session.citizen.id, reason=reason, client_id=client_id)


def end_session_by_sid(psid: str, *, reason: str, client_id: str | None = None) -> bool:
    """End the SSO session with this public id (the `sid` in tokens) if it is still live (e.g.
    refresh-token reuse); True if it was."""
    session = sessions.by_public_id(psid) if psid else None
    if session is None:
        return False
    end_session(session, reason=reason, client_id=client_id)
    return True


def logout_everywhere(citizen_id: int, reason: str = "operator") -> tuple[int, int]:
    """Log a citizen out everywhere: every live SSO session ends and its back-channel logouts
    are queued. Returns (sessions ended, back-channel logouts queued)."""
    sids = store.citizen_session_ids(citizen_id)
    found = [s for s in (sessions.by_id(sid) for sid in sids) if s is not None and s.citizen.id == citizen_id]
    stale = [sid for sid in sids if sid not in {s.sid for s in found}]
    queued = _end(found, citizen_id, reason=reason)
    store.end_sessions(citizen_id, stale)
    return len(found), queued


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
        limit = MAX_HINT if name == "id_token_hint" else _MAX_PARAM
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
        client = clients.find(params["client_id"])
    wanted = params.get("post_logout_redirect_uri")
    redirect_uri = wanted if client is not None and wanted and wanted in client.post_logout_redirect_uris else None
    return LogoutRequest(params, hint, client, redirect_uri)


def _hinted_session(req: LogoutRequest) -> Session | None:
    """The live session the hint names, when it is this hint's citizen's."""
    if req.hint is None or req.hint.sid is None or len(req.hint.sid) > 64:
        return None
    session = sessions.by_public_id(req.hint.sid)
    if session is None or not hmac.compare_digest(subject_for(session.citizen, req.hint.client),
                                                  req.hint.claims["sub"]):
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
    sessions.forget_cookie(response)
    return response


def _end_all(targets: list[Session | None], reason: str, client: Client | None) -> None:
    seen: set[str] = set()
    for session in targets:
        if session and session.sid not in seen:
            seen.add(session.sid)
            end_session(session, reason=reason, client_id=client.client_id if client else None)


@bp.route("/logout", methods=["GET", "POST"])
@csrf.exempt  # the end_session_endpoint: relying parties may POST to it (RP-Initiated Logout §2)
def end_session_endpoint():
    """OpenID Connect RP-Initiated Logout 1.0: log out at once when a valid id_token_hint names
    this browser's session (or the browser shows none, e.g. a cross-site POST that carries no
    Lax cookie); otherwise ask the person to confirm."""
    req = parse_logout_request(request.values)
    use_ui_locales(req.params.get("ui_locales"))
    current = sessions.current()
    hinted = _hinted_session(req)
    if current is not None and (hinted is None or hinted.sid != current.sid):
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
    _end_all([sessions.current(), _hinted_session(req)], "confirmed", req.client)
    return _finish(req)
