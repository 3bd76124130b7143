"""The hot statements on PostgreSQL straight through psycopg, for database.py (``read_row``,
``write_now``, ``execute``): each compiled once by SQLAlchemy and run as a prepared statement.

Imports nothing from idp: database.py hands it the engine, and the session when a statement
belongs in the session's transaction.
"""
from __future__ import annotations

import collections
import os
import time

import psycopg
from sqlalchemy import exc


class Plan:
    """One statement compiled once for PostgreSQL: its SQL, what fills its parameters, what reads
    its result columns."""

    __slots__ = ("statement", "sql", "binds", "processors", "defaults", "results", "keys")

    def __init__(self, statement, sql, binds, processors, defaults, results, keys):
        self.statement, self.sql, self.binds = statement, sql, binds
        self.processors, self.defaults, self.results, self.keys = processors, defaults, results, keys


class Result:
    """What a statement run by ``Direct`` returned: its rows (processed) and its rowcount."""

    __slots__ = ("rows", "rowcount", "keys")

    def __init__(self, rows: list, rowcount: int, keys: list):
        self.rows, self.rowcount, self.keys = rows, rowcount, keys

    def first(self):
        return self.rows[0] if self.rows else None

    def mappings(self):
        return self

    def one_or_none(self):
        if len(self.rows) > 1:
            raise exc.MultipleResultsFound("Multiple rows were found when one or none was required")
        return dict(zip(self.keys, self.rows[0])) if self.rows else None


class Direct:
    """The hot statements on PostgreSQL straight through psycopg: ``read_row`` and ``write_now``
    on a few autocommit connections of their own, ``execute`` on the session's connection (in
    its transaction).

    The same statement through the engine or the session costs four times the CPU (about 210 µs
    against 50 µs per statement on the benchmark machine: the pool's checkout and checkin, the
    execution context, the result object); here each statement is compiled once by SQLAlchemy
    (the same SQL, bind and result processing, Python-side column defaults) and runs as a
    prepared statement. What the pool did is kept: a connection idle longer than
    ``ping_after`` seconds is pinged before use and replaced when dead; a lost connection, or a
    write refused by a read-only server (a demoted primary), is closed (the session's is
    invalidated) and raised as SQLAlchemy's DBAPIError with ``connection_invalidated``, which
    errors.py answers with a 503. Statements the plan cannot take as they are (expanding IN
    lists, SQL-side defaults to fetch first) go through SQLAlchemy as before."""

    #: Idle connections kept per process; more in use at once are closed when given back.
    KEEP = 8

    def __init__(self, engine, ping_after: float):
        self.ping_after = ping_after
        self.dialect = engine.dialect
        self.connect_args = engine.dialect.create_connect_args(engine.url)
        self.idle: collections.deque = collections.deque()
        self.pid = os.getpid()
        self.plans: dict = {}

    def plan(self, statement, params) -> Plan | None:
        key = (id(statement), tuple(params) if params else ())
        plan = self.plans.get(key, False)
        if plan is False or (plan is not None and plan.statement is not statement):
            plan = self.plans[key] = self._compile(statement, list(params) if params else [])
        return plan

    def _compile(self, statement, keys) -> Plan | None:
        compiled = statement.compile(dialect=self.dialect, column_keys=keys)
        if any(b.expanding for b in compiled.binds.values()) or getattr(compiled, "update_prefetch", None):
            return None
        defaults = []
        for column in getattr(compiled, "insert_prefetch", ()) or ():
            default = column.default
            if default is None or not (default.is_scalar or default.is_callable):
                return None
            defaults.append((column.key, default))
        processors = {name: proc for name, proc in compiled._bind_processors.items() if proc is not None}
        columns = compiled._result_columns or []
        results = [c.type.result_processor(self.dialect, None) for c in columns]
        binds = list(compiled.binds.items())
        return Plan(statement, compiled.string, binds, processors, defaults, results, [c.keyname for c in columns])

    def values(self, plan: Plan, params) -> dict:
        params = dict(params or {})
        for key, default in plan.defaults:
            if key not in params:
                params[key] = default.arg(None) if default.is_callable else default.arg
        out = {}
        for name, bind in plan.binds:
            value = params[bind.key] if bind.key in params else bind.effective_value
            processor = plan.processors.get(name)
            out[name] = processor(value) if processor is not None else value
        return out

    def run(self, plan: Plan, params, session=None) -> Result:
        """Run the plan: in ``session``'s transaction (begun if none is), or alone on an autocommit
        connection."""
        in_session = session is not None
        values = self.values(plan, params)
        session_conn, conn = self._in_session(session) if in_session else (None, self._take())
        try:
            cursor = conn.execute(plan.sql, values, prepare=True)
            rows = cursor.fetchall() if cursor.rownumber is not None else []  # (``description`` builds columns)
            rowcount = cursor.rowcount
        except psycopg.Error as error:
            lost = conn.broken or conn.closed or getattr(error, "sqlstate", None) == "25006" \
                or isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError))
            if in_session:
                if lost:
                    session_conn.invalidate()
            elif lost:
                conn.close()
            else:
                self._give_back(conn)
            raise exc.DBAPIError.instance(plan.sql, values, error, psycopg.Error, connection_invalidated=lost,
                                          dialect=self.dialect) from error
        if not in_session:
            self._give_back(conn)
        results = plan.results
        if rows and any(results):
            rows = [tuple(p(v) if p is not None else v for p, v in zip(results, row)) for row in rows]
        return Result(rows, rowcount, plan.keys)

    @staticmethod
    def _in_session(session):
        """The session's connection (SQLAlchemy's and psycopg's), its transaction begun: asked of
        the session once per transaction (each ask walks its state machine), then kept in its
        ``info`` with the transaction it belongs to."""
        transaction = session.get_transaction()
        kept = session.info.get("idp_direct")
        if kept is not None and transaction is not None and kept[0] is transaction and transaction.is_active:
            return kept[1], kept[2]
        session_conn = session.connection()
        driver = session_conn.connection.driver_connection
        session.info["idp_direct"] = (session.get_transaction(), session_conn, driver)
        return session_conn, driver

    def _take(self):
        if self.pid != os.getpid():  # a forked worker: its parent's connections are not its own
            self.idle, self.pid = collections.deque(), os.getpid()
        while True:
            try:
                conn, since = self.idle.pop()
            except IndexError:
                return self._connect()
            if time.monotonic() - since < self.ping_after:
                return conn
            try:
                conn.execute("SELECT 1")
                return conn
            except psycopg.Error:  # dead while idle (a restart, a failover): the next one
                conn.close()

    def _connect(self):
        cargs, cparams = self.connect_args
        try:
            return psycopg.connect(*cargs, **cparams, autocommit=True)
        except psycopg.Error as error:
            raise exc.DBAPIError.instance(None, None, error, psycopg.Error, connection_invalidated=True,
                                          dialect=self.dialect) from error

    def _give_back(self, conn) -> None:
        if len(self.idle) < self.KEEP and self.pid == os.getpid():
            self.idle.append((conn, time.monotonic()))
        else:
            conn.close()

    def close(self) -> None:
        while self.idle:
            self.idle.pop()[0].close()
