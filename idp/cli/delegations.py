"""``idp delegations``: which agency may call which other agency for a citizen (RFC 8693 token
exchange), and with what scopes at most.

May import: idp.platform, idp.protocol, .common.
"""
from __future__ import annotations

import click

from ..protocol import delegations as store
from .common import Context, json_output, pass_ctx


@click.group()
def delegations():
    """Agencies calling other agencies for a citizen (token exchange)."""


@delegations.command("add")
@click.option("--from", "from_id", required=True, help="client_id of the calling agency (a confidential client).")
@click.option("--to", "to_id", required=True, help="client_id of the agency it may call (a trusted client).")
@click.option("--scope", required=True, help='Scopes the exchanged tokens may carry at most, e.g. "openid profile".')
@json_output
@pass_ctx
def delegations_add(obj: Context, from_id, to_id, scope):
    """Allow FROM to exchange a citizen's access token for one meant for TO (a new scope replaces the old)."""
    with obj.app.app_context():
        row, created = store.add(from_id, to_id, scope)
        data = {**store.describe(row), "created": created}
    what = "added" if created else "changed"
    return data, f"delegation {what}: {data['from']} -> {data['to']} ({data['scope']})"


@delegations.command("list")
@json_output
@pass_ctx
def delegations_list(obj: Context):
    """Every delegation: from, to, scope."""
    with obj.app.app_context():
        rows = [store.describe(r) for r in store.all_delegations()]
    return rows, "\n".join(f"{r['from']} -> {r['to']}  {r['scope']}" for r in rows) or "no delegations"


@delegations.command("remove")
@click.option("--from", "from_id", required=True)
@click.option("--to", "to_id", required=True)
@json_output
@pass_ctx
def delegations_remove(obj: Context, from_id, to_id):
    """Withdraw a delegation: exchanges stop at once (tokens already exchanged expire as they would)."""
    with obj.app.app_context():
        gone = store.remove(from_id, to_id)
    if not gone:
        raise click.ClickException(f"no delegation {from_id} -> {to_id}")
    return {"from": from_id, "to": to_id, "removed": True}, f"delegation removed: {from_id} -> {to_id}"
