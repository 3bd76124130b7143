"""Delegations between agencies (RFC 8693 token exchange): which agency may exchange a citizen's
access token for one meant for which other agency, with what scopes at most; and the record of
every exchange (an audit event, a Prometheus counter, a count per agency pair and day).

An operator allows a pair with ``idp delegations add``. The rules a delegation must meet:

* both agencies are registered, and they are two;
* the calling agency (``from``) is confidential: the exchange needs client authentication, and
  a public client has none to give;
* the receiving agency (``to``) is trusted (``idp clients add --trusted``): the citizen is not
  asked before an exchange, so only agencies that need no consent page may receive one;
* its scopes are offered here and registered for the receiving agency; never ``offline_access``
  (an exchange gives no refresh token), and ``national_id`` only when the receiving agency is
  allowed it.

The count per pair and day (``exchange_days``) is kept in the exchange's own transaction, by
one upsert: exact, read at once by ``idp stats --by agency-pair``, and independent of how long
audit events are kept.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..citizens.counting import local_date
from ..platform import audit, metrics
from ..platform.database import db, utcnow
from .clients import client_cache
from .discovery import SCOPES
from .models import Client, Delegation, ExchangeDay

#: Scopes a delegation may never carry: an exchange gives no refresh token.
NOT_DELEGABLE = {"offline_access"}
#: ``to_client_id`` of a count whose audience named no registered agency.
UNKNOWN = "-"


class InvalidDelegation(ValueError):
    """A delegation an operator asked for is not acceptable; the message says why."""


def _client(client_id: str, role: str) -> Client:
    client = db.session.execute(db.select(Client).filter_by(client_id=client_id)).scalar_one_or_none()
    if client is None:
        raise InvalidDelegation(f"--{role} {client_id!r}: no such client")
    return client


def check_scope(scope: str, to: Client) -> str:
    """The delegation's scopes, in the order offered, after the rules above."""
    asked = list(dict.fromkeys(scope.split()))
    if not asked:
        raise InvalidDelegation("--scope: give at least one scope")
    unknown = [s for s in asked if s not in SCOPES]
    if unknown:
        raise InvalidDelegation(f"--scope: {' '.join(unknown)} not offered here (offered: {' '.join(SCOPES)})")
    if NOT_DELEGABLE & set(asked):
        raise InvalidDelegation("--scope offline_access: an exchange gives no refresh token; leave it out")
    if "national_id" in asked and not to.client_metadata.get("allow_national_id"):
        raise InvalidDelegation(f"--scope national_id: {to.client_id} is not allowed the national ID "
                                "(idp clients add --allow-national-id)")
    unregistered = [s for s in asked if s not in to.scope.split()]
    if unregistered:
        raise InvalidDelegation(f"--scope: {to.client_id} is not registered for {' '.join(unregistered)} "
                                f"(its scope: {to.scope})")
    return " ".join(s for s in SCOPES if s in asked)


def add(from_id: str, to_id: str, scope: str) -> tuple[Delegation, bool]:
    """Allow ``from_id`` to exchange tokens for ``to_id`` with at most ``scope``; returns the
    delegation and whether it is new (an existing one gets the new scope)."""
    if from_id == to_id:
        raise InvalidDelegation("--from and --to are the same agency")
    source, target = _client(from_id, "from"), _client(to_id, "to")
    if source.is_public:
        raise InvalidDelegation(f"--from {from_id}: a public client cannot authenticate at the token endpoint, "
                                "so it cannot exchange tokens")
    if not target.trusted:
        raise InvalidDelegation(f"--to {to_id}: not a trusted agency; the citizen is not asked before an exchange, "
                                "so only trusted agencies (idp clients add --trusted) may receive one")
    scope = check_scope(scope, target)
    row = find(from_id, to_id)
    now = utcnow()
    created = row is None
    if created:
        row = Delegation(from_client_id=from_id, to_client_id=to_id, scope=scope, created_at=now, updated_at=now)
        db.session.add(row)
    else:
        row.scope, row.updated_at = scope, now
    audit.record("delegation_added" if created else "delegation_changed", client_id=from_id, commit=False,
                 to=to_id, scope=scope, **audit.operator())
    db.session.commit()
    return row, created


def remove(from_id: str, to_id: str) -> bool:
    """Withdraw a delegation; False when there was none. Tokens already exchanged live on until
    they expire (no longer than the tokens they came from)."""
    gone = db.session.execute(delete(Delegation).where(Delegation.from_client_id == from_id,
                                                       Delegation.to_client_id == to_id)).rowcount
    if gone:
        audit.record("delegation_removed", client_id=from_id, commit=False, to=to_id, **audit.operator())
    db.session.commit()
    return bool(gone)


def find(from_id: str, to_id: str) -> Delegation | None:
    return db.session.execute(db.select(Delegation).filter_by(from_client_id=from_id, to_client_id=to_id)
                              ).scalar_one_or_none()


def all_delegations() -> list[Delegation]:
    return list(db.session.execute(db.select(Delegation).order_by(Delegation.from_client_id,
                                                                  Delegation.to_client_id)).scalars())


def describe(row: Delegation) -> dict[str, Any]:
    return {"from": row.from_client_id, "to": row.to_client_id, "scope": row.scope,
            "created_at": row.created_at.isoformat(timespec="seconds"),
            "updated_at": row.updated_at.isoformat(timespec="seconds")}


# ---- the record of every exchange ---------------------------------------------------------------

def _count(day: dt.date, from_id: str, to_id: str, issued: bool) -> None:
    insert = (pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert)(ExchangeDay)
    column = "issued" if issued else "refused"
    stmt = insert.values(day=day, from_client_id=from_id, to_client_id=to_id, issued=int(issued),
                         refused=int(not issued))
    db.session.execute(stmt.on_conflict_do_update(
        index_elements=["day", "from_client_id", "to_client_id"],
        set_={column: getattr(ExchangeDay.__table__.c, column) + 1}))


def record(outcome: str, from_id: str | None, audience: str | None, *, subject_fp: str | None = None,
           **details: Any) -> None:
    """One exchange, issued (``outcome`` = ``issued``) or refused (the error code): an audit
    event, the Prometheus counter, and the day's count for the pair, committed together.

    The pair is counted only for an authenticated caller, and under the audience only when it
    names a registered agency (``-`` otherwise): what anyone may send is never a new row or label."""
    known = isinstance(audience, str) and 0 < len(audience) <= 64 and client_cache.get(audience) is not None
    to_id = audience if known else None
    issued = outcome == "issued"
    audit.record("token_exchanged" if issued else "token_exchange_refused", client_id=from_id, subject_fp=subject_fp,
                 commit=False, to=to_id or UNKNOWN, **({} if issued else {"error": outcome}), **details)
    if from_id:
        _count(local_date(utcnow()), from_id, to_id or UNKNOWN, issued)
    db.session.commit()
    metrics.token_exchange(from_id or UNKNOWN, to_id or UNKNOWN, outcome)


def pair_counts(first: dt.date, last: dt.date) -> list[ExchangeDay]:
    """The counts of the days first..last, by day and pair."""
    return list(db.session.execute(
        db.select(ExchangeDay).where(ExchangeDay.day >= first, ExchangeDay.day <= last)
        .order_by(ExchangeDay.day, ExchangeDay.from_client_id, ExchangeDay.to_client_id)).scalars())
