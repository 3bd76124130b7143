"""Append-only audit events, and the HMAC fingerprints that stand in for identifiers.

National IDs, mobile numbers and client IPs never appear raw in audit rows, logs or store
keys: they become keyed HMAC fingerprints, stable enough to correlate one person's events
and useless to anyone without the provider's secret.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import os
import pwd
import socket
from typing import Any

from flask import has_request_context, request
from sqlalchemy import JSON, Index, String, insert
from sqlalchemy.orm import Mapped, mapped_column

from .database import BigId, UTCDateTime, db, execute, utcnow, write_now
from .settings import settings

log = logging.getLogger("idp.audit")

#: Every event the provider records (``idp audit tail --event`` accepts these; a test checks that
#: each ``record`` call in the code names one of them).
EVENTS = (
    # logins
    "login_started", "code_sent", "sms_failed", "code_resent", "otp_wrong", "otp_locked", "login_succeeded",
    "rate_limited", "cooloff_started", "failures_capped", "totp_enrolled", "logout",
    # consent
    "consent_granted", "consent_denied", "consent_withdrawn",
    # tokens (a refresh-token family revoked, and why)
    "code_wrong_client", "code_replayed", "refresh_token_reused", "refresh_token_revoked", "revoked",
    # token exchange between agencies (RFC 8693)
    "token_exchanged", "token_exchange_refused",
    # a guardian acting for a minor (both fingerprints: the guardian's as the subject, the minor's in details)
    "guardian_acted", "guardian_act_refused",
    # operators
    "client_registered", "client_secret_rotated", "client_enabled", "client_disabled", "registry_imported",
    "delegation_added", "delegation_changed", "delegation_removed", "guardian_linked", "guardian_unlinked",
)


class AuditEvent(db.Model):
    """A security-relevant action (append-only). Identifiers appear only as HMAC fingerprints."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_occurred_at", "occurred_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    event: Mapped[str] = mapped_column(String(48))
    subject_fp: Mapped[str | None] = mapped_column(String(64))
    ip_fp: Mapped[str | None] = mapped_column(String(64))
    client_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


#: A citizen's own record (/account/record) lists the exchanges made for them: by fingerprint,
#: newest first. Partial, so that only token exchanges pay for it, not every login's events.
Index("ix_audit_events_exchange_subject", AuditEvent.subject_fp, AuditEvent.id,
      postgresql_where=AuditEvent.event == "token_exchanged", sqlite_where=AuditEvent.event == "token_exchanged")

_INSERT = insert(AuditEvent.__table__)


def fingerprint(kind: str, value: str) -> str:
    """A keyed fingerprint of an identifier (kind: nid, mobile, ip, ...)."""
    mac = hmac.new(settings.derived_key("fingerprint"), f"{kind}\x00{value}".encode(), hashlib.sha256)
    return mac.hexdigest()[:32]


def client_ip() -> str:
    """The client's address as seen by this app (ProxyFix has already applied trusted hops)."""
    return (request.remote_addr or "") if has_request_context() else ""


def operator() -> dict[str, str]:
    """Who runs an operator command, for its audit event: the OS account it runs as (the
    effective user, not an environment variable), the account that used sudo if any, and the host."""
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid with no passwd entry (containers)
        user = str(os.geteuid())
    who = {"os_user": user, "host": socket.gethostname()}
    if sudo_user := os.environ.get("SUDO_USER"):
        who["sudo_user"] = sudo_user
    return who


def record(event: str, *, national_id: str | None = None, subject_fp: str | None = None,
           client_id: str | None = None, commit: bool = True, **details: Any) -> None:
    """Append one audit event. Details must already be free of raw identifiers."""
    ip = client_ip()
    if national_id:
        subject_fp = fingerprint("nid", national_id)
    # one prebuilt Core INSERT on the table: no unit of work, no ORM bulk path, no statement
    # built and cache-keyed per event; committed at once (on its own when nothing else is under
    # way: one round trip), or left in the session's transaction for its commit
    row = {"event": event, "subject_fp": subject_fp, "ip_fp": fingerprint("ip", ip) if ip else None,
           "client_id": client_id, "details": details}
    if commit:
        write_now(_INSERT, row)
    else:
        execute(_INSERT, row)
    log.info("audit %s client=%s subject=%s %s", event, client_id, subject_fp, details)


def commit() -> None:
    """Commit audit events recorded with ``commit=False`` that no later commit took along."""
    db.session.commit()


def latest(count: int, event: str | None = None) -> list[dict[str, Any]]:
    """The newest ``count`` audit events (optionally of one kind), oldest first."""
    query = db.select(AuditEvent).order_by(AuditEvent.id.desc()).limit(count)
    if event:
        query = query.where(AuditEvent.event == event)
    rows = list(db.session.execute(query).scalars())
    return [{"id": r.id, "occurred_at": r.occurred_at.isoformat(timespec="seconds"), "event": r.event,
             "client_id": r.client_id, "subject_fp": r.subject_fp, "ip_fp": r.ip_fp, "details": r.details}
            for r in reversed(rows)]
