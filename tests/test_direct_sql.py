"""The hot statements straight through psycopg on PostgreSQL (platform/direct.py): the same rows,
writes and errors as through SQLAlchemy's engine and session, on a real server."""
from __future__ import annotations

import datetime as dt
import time

import psycopg
import pytest
from sqlalchemy import bindparam, exc, select

from idp.citizens.directory import _BY_NATIONAL_ID, _PROFILE
from idp.citizens.models import CitizenRow
from idp.platform import audit, database
from idp.platform.database import db, execute, read_row, write_now
from idp.protocol.tokens import _CLAIM, _INSERT

from .conftest import _reset_postgres, start_provider


@pytest.fixture(scope="module")
def pg(tmp_path_factory, postgres_url, redis_url):
    _reset_postgres(postgres_url)
    live = start_provider(tmp_path_factory.mktemp("direct-sql"), postgres_url, redis_url)
    yield live
    live.stop()
    with live.app.app_context():
        db.engine.dispose()


def _engine_row(statement, params):
    with database._autocommit().connect() as conn:
        return conn.execute(statement, params).first()


def test_reads_are_the_rows_the_engine_reads(pg):
    national_id, _mobile = pg.add_citizen(birth_date="1990-02-03")
    with pg.app.app_context():
        assert database._direct() is not None
        found = read_row(_BY_NATIONAL_ID, {"p_nid": national_id})
        assert found is not None and tuple(found) == tuple(_engine_row(_BY_NATIONAL_ID, {"p_nid": national_id}))
        profile = read_row(_PROFILE, {"p_cid": found[0]})
        assert tuple(profile) == tuple(_engine_row(_PROFILE, {"p_cid": found[0]}))
        assert profile[4] == dt.date(1990, 2, 3)
        assert read_row(_PROFILE, {"p_cid": -1}) is None


def test_writes_fill_python_defaults_and_json(pg):
    with pg.app.app_context():
        before = database.utcnow()
        write_now(audit._INSERT, {"event": "logout", "subject_fp": "fp-direct", "ip_fp": None, "client_id": None,
                                  "details": {"k": "v", "n": 1}})
        row = db.session.execute(db.select(audit.AuditEvent).filter_by(subject_fp="fp-direct")).scalar_one()
        assert row.details == {"k": "v", "n": 1}
        assert row.occurred_at.tzinfo is not None and row.occurred_at >= before - dt.timedelta(seconds=1)
        db.session.rollback()


def test_in_session_statements_commit_and_roll_back_with_the_session(pg):
    national_id, _ = pg.add_citizen()
    with pg.app.app_context():
        cid = read_row(_BY_NATIONAL_ID, {"p_nid": national_id})[0]
        seen = (db.update(CitizenRow).where(CitizenRow.id == bindparam("p_cid"))
                .values(given_name=bindparam("p_name")))
        execute(seen, {"p_cid": cid, "p_name": "Rolled"})
        db.session.rollback()
        assert read_row(_PROFILE, {"p_cid": cid})[5] != "Rolled"
        result = execute(seen, {"p_cid": cid, "p_name": "Kept"})
        assert result.rowcount == 1
        db.session.commit()
        assert read_row(_PROFILE, {"p_cid": cid})[5] == "Kept"


def test_a_claim_returns_the_mapping_the_session_returned(pg):
    client_id, _secret, _redirect = pg.add_client(scope="openid offline_access")
    national_id, _ = pg.add_citizen()
    with pg.app.app_context():
        cid = read_row(_BY_NATIONAL_ID, {"p_nid": national_id})[0]
        now = database.utcnow()
        for token_hash in ("h-direct", "h-session"):
            write_now(_INSERT, {"token_hash": token_hash, "family_id": "f" + token_hash, "client_id": client_id,
                                "citizen_id": cid, "sid": "s", "scope": "openid", "auth_time": 1, "method": "sms",
                                "created_at": now, "expires_at": now + dt.timedelta(days=1)})
        mine = execute(_CLAIM, {"p_hash": "h-direct", "p_client": client_id, "p_now": now}).mappings().one_or_none()
        db.session.commit()
        theirs = db.session.execute(_CLAIM, {"p_hash": "h-session", "p_client": client_id,
                                             "p_now": now}).mappings().one_or_none()
        db.session.commit()
        assert set(mine) == set(theirs)
        assert {k: v for k, v in mine.items() if k not in ("id", "token_hash", "family_id")} == \
            {k: v for k, v in theirs.items() if k not in ("id", "token_hash", "family_id")}
        assert mine["rotated_at"].tzinfo is not None
        again = execute(_CLAIM, {"p_hash": "h-direct", "p_client": client_id, "p_now": now}).mappings().one_or_none()
        assert again is None  # claimed once only
        db.session.rollback()


def test_what_the_plan_cannot_take_goes_through_sqlalchemy(pg):
    with pg.app.app_context():
        expanding = select(CitizenRow.id).where(CitizenRow.national_id.in_(bindparam("ids", expanding=True)))
        assert database._direct().plan(expanding, {"ids": ["1"]}) is None
        assert read_row(expanding, {"ids": ["nobody"]}) is None


def test_a_dead_connection_is_replaced_and_a_lost_one_is_a_503_error(pg):
    with pg.app.app_context():
        direct = database._direct()
        read_row(_PROFILE, {"p_cid": 1})
        conn, _since = direct.idle[-1]
        pid = conn.info.backend_pid
        with psycopg.connect(pg.settings.database.url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # idle for longer than PING_AFTER_IDLE_SECONDS: pinged, found dead, replaced, answered
        time.sleep(database.PING_AFTER_IDLE_SECONDS * 3)
        assert read_row(_PROFILE, {"p_cid": -1}) is None
        assert conn.closed
        # used a moment ago and killed meanwhile: the statement fails as a lost connection
        read_row(_PROFILE, {"p_cid": 1})
        conn, _since = direct.idle[-1]
        with psycopg.connect(pg.settings.database.url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        time.sleep(0.05)
        direct.idle[-1] = (conn, time.monotonic())
        with pytest.raises(exc.DBAPIError) as lost:
            read_row(_PROFILE, {"p_cid": 1})
        assert lost.value.connection_invalidated and conn.closed
        assert read_row(_PROFILE, {"p_cid": -1}) is None  # the next one connects afresh


def test_a_forked_worker_does_not_use_its_parents_connections(pg):
    with pg.app.app_context():
        direct = database._direct()
        read_row(_PROFILE, {"p_cid": 1})
        inherited = [conn for conn, _ in direct.idle]
        direct.pid = -1  # as a child sees its parent's pid
        read_row(_PROFILE, {"p_cid": 1})
        assert all(not conn.closed for conn in inherited)  # not closed: the parent still uses them
        assert not any(conn is mine for conn, _ in direct.idle for mine in inherited)
        for conn in inherited:
            conn.close()
