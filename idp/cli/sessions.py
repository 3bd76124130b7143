"""``idp sessions revoke`` (log a citizen out everywhere) and ``idp logout deliver`` (the due
back-channel logouts, for cron).

May import: idp.citizens, idp.protocol, .common.
"""
from __future__ import annotations

import sys

import click

from ..citizens import directory
from ..citizens.national_id import mask_national_id, parse_national_id
from ..protocol import backchannel
from ..protocol import logout as logout_mod
from .common import Context, json_output, pass_ctx


@click.group()
def sessions():
    """Single sign-on sessions."""


@sessions.command("revoke")
@click.option("--national-id", required=True, help="The citizen to log out everywhere.")
@json_output
@pass_ctx
def sessions_revoke(obj: Context, national_id):
    """Log a citizen out everywhere: every live SSO session ends and the agencies that took part
    are told by back-channel logout (queued; the running servers deliver them)."""
    if obj.settings.store.url == "memory://":
        click.echo("idp: warning: [store] url is memory://, which only the serving process can see; "
                   "no session of a running server can be found from here", err=True)
    try:
        nid = parse_national_id(national_id)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--national-id") from None
    with obj.app.app_context():
        registered = directory.find(nid)
        if registered is None:
            click.echo(f"idp: no citizen with national ID {mask_national_id(nid)}", err=True)
            sys.exit(1)
        ended, queued = logout_mod.logout_everywhere(registered.citizen.id, "operator")
    data = {"national_id": mask_national_id(nid), "sessions_ended": ended, "backchannel_queued": queued}
    return data, f"ended {ended} session(s) of {data['national_id']}; {queued} back-channel logout(s) queued"


@click.group()
def logout():
    """Back-channel logout deliveries."""


@logout.command("deliver")
@json_output
@pass_ctx
def logout_deliver(obj: Context):
    """Deliver the due back-channel logouts once (for cron; the servers also do it themselves)."""
    with obj.app.app_context():
        result = backchannel.sweep(limit=10_000)
    data = result.as_dict()
    return data, (f"due {data['due']}, delivered {data['delivered']}, retrying later {data['retrying']}, "
                  f"given up {data['given_up']}")
