"""``idp consents``: what citizens allowed non-trusted agency services to receive; list and revoke.

May import: idp.platform, idp.citizens, idp.protocol, .common.
"""
from __future__ import annotations

import click

from ..citizens import directory
from ..citizens.national_id import InvalidNationalId, parse_national_id
from ..platform.audit import record
from ..protocol.agencies import ClientNotFound, get_client
from ..protocol.consent import granted, withdraw
from .common import Context, json_output, pass_ctx


@click.group()
def consents():
    """What citizens allowed non-trusted agency services to receive."""


def _citizen_by_national_id(national_id: str):
    """The citizen with this national ID (Persian digits accepted), or a one-line error."""
    try:
        national_id = parse_national_id(national_id)
    except InvalidNationalId:
        raise click.ClickException("not a valid national ID") from None
    registered = directory.find(national_id)
    if registered is None:
        raise click.ClickException("no citizen with this national ID")
    return national_id, registered.citizen


@consents.command("list")
@click.option("--national-id", required=True)
@json_output
@pass_ctx
def consents_list(obj: Context, national_id):
    """The services a citizen has allowed, and what each receives."""
    with obj.app.app_context():
        rows = [g.as_dict() for g in granted(_citizen_by_national_id(national_id)[1].id)]
    return rows, "\n".join(f"{r['client_id']}  {r['name']}  [{r['scope']}]  since {r['granted_at']}"
                           for r in rows) or "no consents"


@consents.command("revoke")
@click.option("--national-id", required=True)
@click.option("--client", "client_id", required=True, help="The client_id whose grant is withdrawn.")
@json_output
@pass_ctx
def consents_revoke(obj: Context, national_id, client_id):
    """Withdraw a citizen's grant to one service (it asks again at the next sign-in)."""
    with obj.app.app_context():
        nid, citizen = _citizen_by_national_id(national_id)
        try:
            get_client(client_id)
        except ClientNotFound:
            raise click.ClickException(f"no client {client_id!r}") from None
        if not withdraw(citizen.id, client_id):
            raise click.ClickException(f"this citizen has no consent for client {client_id!r}")
        record("consent_withdrawn", national_id=nid, client_id=client_id, via="cli")
    return {"client_id": client_id, "withdrawn": True}, f"consent for {client_id} withdrawn"
