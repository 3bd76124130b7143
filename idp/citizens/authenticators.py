"""The citizen's authenticator app, as the citizens table keeps it: the encrypted secret and the
last time step used (so a code is accepted once). The login (idp.login.totp) holds the key and
checks the codes; only this module writes these columns.
"""
from __future__ import annotations

from sqlalchemy import bindparam, or_, select, update

from ..platform.database import db
from .models import CitizenRow

_c = CitizenRow.__table__.c
_SECRET = select(_c.totp_secret).where(_c.id == bindparam("p_cid"))
_CLAIM = (update(CitizenRow.__table__)
          .where(_c.id == bindparam("p_cid"), or_(_c.totp_last_step.is_(None), _c.totp_last_step < bindparam("p_step")))
          .values(totp_last_step=bindparam("p_step")))
_SET = update(CitizenRow.__table__).where(_c.id == bindparam("p_cid"))


def secret(citizen_id: int) -> str | None:
    """The citizen's encrypted secret, or None (no app, or no such citizen): one row read."""
    row = db.session.execute(_SECRET, {"p_cid": citizen_id}).first()
    return None if row is None else row[0]


def claim_step(citizen_id: int, step: int) -> bool:
    """Record a time step as used; False when it (or a later one) was already used."""
    result = db.session.execute(_CLAIM, {"p_cid": citizen_id, "p_step": step})
    db.session.commit()
    return result.rowcount == 1


def enrol(citizen_id: int, encrypted_secret: str, step: int) -> None:
    """Keep a new app's secret, its first code's step counted as used."""
    db.session.execute(_SET.values(totp_secret=encrypted_secret, totp_last_step=step), {"p_cid": citizen_id})
    db.session.commit()


def remove(citizen_id: int) -> None:
    """Forget the citizen's app."""
    db.session.execute(_SET.values(totp_secret=None, totp_last_step=None), {"p_cid": citizen_id})
    db.session.commit()
