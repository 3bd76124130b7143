"""The database: the Flask-SQLAlchemy object, migrations, the column types every table uses,
and the pooled reads of the hot paths.

Owns no table: each package declares the tables it owns (citizens/models.py,
protocol/models.py, stats/models.py, platform/audit.py). Imports nothing from idp.
"""
from __future__ import annotations

import contextvars
import datetime as dt
import logging
import time
import weakref
from contextlib import contextmanager
from pathlib import Path

from flask import Flask
from flask_migrate import Migrate, upgrade
from flask_sqlalchemy import SQLAlchemy
from flask_sqlalchemy.session import Session
from sqlalchemy import BigInteger, DateTime, Integer, create_engine, event, exc, text
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from .direct import Direct


class Base(DeclarativeBase):
    """Declarative base of every model."""


#: The engine a report reads from while it runs inside ``reports()`` (the replica), else None.
_reading_from = contextvars.ContextVar("idp_reading_from", default=None)


class _Session(Session):
    """Flask-SQLAlchemy's session, sent to the read replica inside ``reports()``."""

    def get_bind(self, *args, **kwargs):
        engine = _reading_from.get()
        return engine if engine is not None else super().get_bind(*args, **kwargs)


db = SQLAlchemy(model_class=Base, session_options={"class_": _Session})
migrate = Migrate()


def read_row(statement, params=None):
    """The first row of a read-only statement, on a connection of its own in autocommit (no ORM
    session, no BEGIN and ROLLBACK around one SELECT: one round trip instead of three), for the
    hot reads that need nothing else from the database (userinfo, the token endpoints). On
    PostgreSQL straight through psycopg (``direct.Direct``), elsewhere through the engine's pool."""
    direct, plan = _planned(statement, params)
    if plan is not None:
        return direct.run(plan, params).first()
    with _autocommit().connect() as conn:
        return conn.execute(statement, params).first()


def execute(statement, params=None):
    """Execute a statement in the session's transaction (begun when none is under way), to be
    committed or rolled back with it. On PostgreSQL straight through psycopg on the session's own
    connection (``direct.Direct``): the same transaction at a quarter of the CPU. The result has
    ``rowcount``, ``first()`` and ``mappings().one_or_none()``."""
    direct, plan = _planned(statement, params) if _reading_from.get() is None else (None, None)
    if plan is not None:
        return direct.run(plan, params, session=db.session())
    return db.session.execute(statement, params)


def _autocommit():
    """The app's engine in autocommit (sharing its pool), made once per engine."""
    engine = db.engine
    reader = _readers.get(engine)
    if reader is None:
        reader = _readers[engine] = engine.execution_options(isolation_level="AUTOCOMMIT")
    return reader


#: Per engine, the same engine in autocommit (it shares the engine's pool).
_readers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def write_now(statement, params=None) -> None:
    """Execute one write and make it durable: on its own in autocommit (one round trip, the
    statement its own transaction) when the session has no transaction under way, else in that
    transaction, committed with it. For the writes that stand alone (an audit event, a new
    refresh token family)."""
    if db.session().in_transaction():
        execute(statement, params)
        db.session.commit()
        return
    direct, plan = _planned(statement, params)
    if plan is not None:
        direct.run(plan, params)
        return
    with _autocommit().connect() as conn:
        conn.execute(statement, params)


#: Per PostgreSQL engine, its direct statements (None for other databases).
_directs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _direct() -> Direct | None:
    engine = db.engine
    direct = _directs.get(engine, False)
    if direct is False:
        direct = _directs[engine] = Direct(engine, PING_AFTER_IDLE_SECONDS) if engine.dialect.name == "postgresql" \
            else None
        if direct is not None:
            event.listen(engine, "engine_disposed", lambda *_: direct.close())
    return direct


def _planned(statement, params):
    """(the engine's Direct, the statement's plan) on PostgreSQL; a plan of None: through SQLAlchemy."""
    direct = _direct()
    return direct, direct.plan(statement, params) if direct is not None else None


def utcnow() -> dt.datetime:
    """The current time, timezone-aware, in UTC."""
    return dt.datetime.now(dt.timezone.utc)


# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets BIGINT identities.
BigId = BigInteger().with_variant(Integer, "sqlite")


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime given for a UTC column")
            value = value.astimezone(dt.timezone.utc)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value




log = logging.getLogger("idp.database")

def _database_uri(url: str) -> str:
    """psycopg 3 drives PostgreSQL; a relative SQLite path is relative to the working directory."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
        return "sqlite:///" + str(Path(url[len("sqlite:///"):]).expanduser().resolve())
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def _engine_options(url: str, pool_size: int) -> dict:
    if url.startswith("sqlite"):
        # Wait for a writer instead of failing at once; several processes may share the file.
        return {"connect_args": {"timeout": 30}}
    # No pool_pre_ping (a "SELECT 1" round trip at every checkout, several per request):
    # _ping_idle_connections below checks only connections that sat idle in the pool.
    # LIFO: the connection returned last is reused first, so busy connections stay busy (and are
    # not pinged) while the rest sit idle.
    return {"pool_size": pool_size, "max_overflow": pool_size, "pool_recycle": 1800, "pool_use_lifo": True}


#: A pooled connection idle for longer than this is pinged before use. One used moments ago is
#: not: a PostgreSQL restart takes far longer than this, so every connection it killed has sat
#: idle longer and is replaced before a request sees it, while a busy pool pings almost never.
PING_AFTER_IDLE_SECONDS = 0.05


def _ping_idle_connections(app: Flask) -> None:
    """pool_pre_ping, but only for connections idle longer than PING_AFTER_IDLE_SECONDS: a dead
    one is replaced at checkout (DisconnectionError makes the pool reconnect and retry)."""
    with app.app_context():
        engine = db.engine

        @event.listens_for(engine, "checkin")
        def _checkin(_dbapi_connection, record):
            record.info["idp_idle_since"] = time.monotonic()

        @event.listens_for(engine, "checkout")
        def _checkout(dbapi_connection, record, _proxy):
            since = record.info.pop("idp_idle_since", None)
            if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
                return  # a new connection, or one in use a moment ago
            try:
                engine.dialect.do_ping(dbapi_connection)
            except Exception as e:  # noqa: BLE001 - any failure: replace the connection
                raise exc.DisconnectionError() from e


def _read_only_is_a_lost_primary(app: Flask) -> None:
    """A write refused because the server is read-only (SQLSTATE 25006) means this connection
    reaches a server that is no longer the primary (a demoted one, or a standby): the connection
    is dropped, as for a disconnect, so the next one goes where libpq finds the primary, and the
    request gets the 503 of a database that is away (errors.py), not a 500."""
    with app.app_context():
        @event.listens_for(db.engine, "handle_error")
        def _handle_error(context):
            if getattr(context.original_exception, "sqlstate", None) == "25006":
                context.is_disconnect = True


def _sqlite_pragmas(app: Flask) -> None:
    """WAL lets readers and one writer work at once; foreign keys are enforced."""
    with app.app_context():
        @event.listens_for(db.engine, "connect")
        def _on_connect(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()



_LAG = text("SELECT CASE WHEN NOT pg_is_in_recovery() OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() "
             "THEN 0 ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END")


@contextmanager
def reports(app: Flask):
    """Inside, the session reads from ``[database] replica_url`` when one is set (reports only:
    read-only, and stale by the replica's lag, which is what this yields in seconds); without a
    replica it reads from the primary and yields None."""
    url = app.extensions["idp.settings"].database.replica_url
    if not url:
        yield None
        return
    engine = app.extensions.get("idp.replica")
    if engine is None:
        engine = app.extensions["idp.replica"] = create_engine(_database_uri(url), pool_size=2, pool_pre_ping=True)
    db.session.remove()  # nothing of the primary's carries over into the report
    token = _reading_from.set(engine)
    try:
        with engine.connect() as conn:
            lag = float(conn.execute(_LAG).scalar_one() or 0)
        yield lag
    finally:
        db.session.remove()
        _reading_from.reset(token)


#: Where the Alembic migrations live (the repository's top-level migrations/).
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def init_app(app: Flask, url: str, pool_size: int) -> None:
    """Bind the database to the app: the engine's settings, SQLite's pragmas or the idle-connection
    pings, migrations, and a teardown that survives a database gone away."""
    app.config.update(SQLALCHEMY_DATABASE_URI=_database_uri(url),
                      SQLALCHEMY_ENGINE_OPTIONS=_engine_options(url, pool_size))
    db.init_app(app)
    if url.startswith("sqlite"):
        _sqlite_pragmas(app)
    else:
        _ping_idle_connections(app)
        _read_only_is_a_lost_primary(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS))
    # registered after Flask-SQLAlchemy's own teardown, so it runs first
    app.teardown_appcontext(_close_session)


def _close_session(_exc) -> None:
    """End the request's database session even when the database went away meanwhile.

    Flask-SQLAlchemy's own teardown ROLLBACKs the session's open transaction; when the server
    was restarted or failed over after the request's last query, that ROLLBACK raises out of
    Flask, and the WSGI server turns a finished (or already 503) response into a bare 500. This
    teardown, registered later, runs first: the connection is discarded (the pool replaces it),
    the session is closed, and Flask-SQLAlchemy's finds nothing left to do.
    """
    try:
        db.session.remove()
    except exc.DBAPIError as error:
        log.warning("database connection lost at the end of a request: %s", error.__class__.__name__)
        try:
            db.session.remove()  # the transaction is gone with its connection: this only clears
        except exc.DBAPIError:
            db.session.registry.clear()


def upgrade_database(app: Flask) -> None:
    """Apply every migration (``idp db upgrade``; a SQLite file's directory is made first)."""
    url = app.extensions["idp.settings"].database.url
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
    with app.app_context():
        upgrade(directory=str(MIGRATIONS))
