"""The guardian's chooser: after their own login (or single sign-on) at an agency that accepts
guardians, a guardian with linked minors under 18 today chooses to go on as themselves or to act
for one of the minors (protocol.authorize pauses for it; citizens.guardians says who may act for
whom).

The answer is written into the paused request (``guardian_chosen``, ``acting_for``) and the
browser goes back to ``/authorize/resume``; protocol.authorize checks the link and the age again
when it issues the code, and the token endpoint checks them once more. Each minor is named in the
form by a value bound to this request (an HMAC of the minor's id under the request's id), never
by a row id, and a value no longer matching a linked minor under 18 is the "start again" page.
The page appears only after a successful login, so it tells a stranger nothing.
"""
from __future__ import annotations

import hashlib
import hmac

from flask import Blueprint, abort, redirect, render_template, request, url_for

from ..citizens import guardians
from ..platform.errors import InteractionGone
from ..platform.i18n import current_lang
from ..platform.settings import settings
from . import clients, interaction, sessions
from .interaction import Interaction
from .models import Client
from .sessions import Session

bp = Blueprint("acting", __name__, url_prefix="/acting-for")


def choice_value(paused: Interaction, citizen_id: int) -> str:
    """The form value that names a minor on this request's chooser."""
    mac = hmac.new(settings.derived_key("guardian-choice"), f"{paused.id}\x00{citizen_id}".encode(), hashlib.sha256)
    return mac.hexdigest()[:32]


def _paused(rid: str | None) -> tuple[Interaction, Session, Client]:
    """The paused request of this browser and signed-in guardian at an agency that accepts
    guardians, or the 'start again' page."""
    paused, session, client = sessions.paused_here(rid)
    if not client.accepts_guardians:
        raise InteractionGone()
    return paused, session, client


@bp.get("")
def page():
    """Continue as yourself, or act for one of the linked minors under 18 today."""
    paused, session, client = _paused(request.args.get("r"))
    minors = [{"value": choice_value(paused, m.citizen.id), "name": m.given_name, "national_id": m.national_id_masked}
              for m in guardians.minors_of(session.citizen.id)]
    return render_template("acting.html", rid=paused.id, client_name=clients.display_name(client, current_lang()),
                           minors=minors, who=sessions.signed_in_as(session))


@bp.post("")
def choose():
    """Record the choice in the paused request and go back to /authorize/resume."""
    paused, session, client = _paused(request.args.get("r"))
    chosen = request.form.get("as")
    if not isinstance(chosen, str) or not chosen or len(chosen) > 64:
        abort(400)
    if chosen == "self":
        paused.acting_for = None
    else:
        found = [m for m in guardians.minors_of(session.citizen.id)
                 if hmac.compare_digest(choice_value(paused, m.citizen.id), chosen)]
        if not found:
            raise InteractionGone()  # no longer linked, 18 today, or not a value of this page
        paused.acting_for = found[0].citizen.id
    paused.guardian_chosen = True
    if not interaction.save(paused):
        raise InteractionGone()
    return redirect(url_for("authorize.resume", r=paused.id), code=303)
