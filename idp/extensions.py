"""Extension objects: the database, the store, CSRF, the key ring and the Authlib server.

This is the only place they are built; everything else reaches them through here.
"""
from __future__ import annotations

from flask import current_app
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase
from werkzeug.local import LocalProxy


class Base(DeclarativeBase):
    """Declarative base of every model."""


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
csrf = CSRFProtect()

#: The short-lived store of the current app (idp.store.Store).
store = LocalProxy(lambda: current_app.extensions["idp.store"])
#: The signing keys of the current app (idp.keys.KeyRing).
keyring = LocalProxy(lambda: current_app.extensions["idp.keyring"])
#: The validated settings of the current app (idp.config.Settings).
settings = LocalProxy(lambda: current_app.extensions["idp.settings"])


def read_row(statement, params=None):
    """The first row of a read-only statement, on a pooled connection of its own (no ORM session,
    no transaction left to roll back): half the CPU of the same SELECT through the session, for
    the hot reads that need nothing else from the database (userinfo, the token endpoints)."""
    with db.engine.connect() as conn:
        return conn.execute(statement, params).first()
