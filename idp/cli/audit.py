"""``idp audit tail``: the latest events of the append-only audit trail.

May import: idp.platform, .common.
"""
from __future__ import annotations

import json

import click

from ..platform.audit import EVENTS, latest
from .common import Context, json_output, pass_ctx


def _event(ctx, param, value: str | None) -> str | None:
    """--event: one of the events the provider records (a misspelt one would show "no audit events")."""
    if value is not None and value not in EVENTS:
        raise click.BadParameter(f"{value!r} is not an audit event (known: {', '.join(EVENTS)})")
    return value


@click.group()
def audit():
    """The append-only audit trail."""


@audit.command("tail")
@click.option("-n", "--lines", "count", default=20, show_default=True, type=click.IntRange(1, 10000))
@click.option("--event", callback=_event,
              help="Only this event (login_started, otp_wrong, cooloff_started, registry_imported, "
                   "token_exchanged, ...; an unknown one is refused with the list).")
@json_output
@pass_ctx
def audit_tail(obj: Context, count, event):
    """The latest audit events, oldest first (identifiers appear only as fingerprints)."""
    with obj.app.app_context():
        rows = latest(count, event)
    return rows, "\n".join(
        f"{r['occurred_at']}  {r['event']:<18} client={r['client_id'] or '-'} subject={r['subject_fp'] or '-'} "
        f"ip={r['ip_fp'] or '-'} {json.dumps(r['details'], ensure_ascii=False) if r['details'] else ''}".rstrip()
        for r in rows) or "no audit events"
