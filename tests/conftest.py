"""Test fixtures: real SQLite and PostgreSQL, real Redis, and the provider on a real HTTP port.

PostgreSQL and Redis are the ones at 127.0.0.1:5432 and :6379. Without them a test skips
with the reason, except under CI=true, where a missing service is a failure.
"""
from __future__ import annotations

import os
import secrets
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis as redis_lib

from idp import create_app
from idp.platform.settings import load_settings

from .helpers import FlowClient, Outbox, ServedApp, free_port, running_gateway

PG_ADMIN_URL = os.environ.get("IDP_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("IDP_TEST_REDIS", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"


GENEROUS_IP_LIMITS = {"starts_per_ip": "100000/60", "code_checks_per_ip": "100000/60",
                      "paused_requests_per_ip": "100000/60"}


def need(service: str, reason: str):
    """Skip for want of a service, or fail under CI, where every service must be up."""
    if IN_CI:
        pytest.fail(f"{service} is required under CI=true: {reason}")
    pytest.skip(f"{service} not available: {reason}")


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis_lib.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis_lib.RedisError as exc:
        need("Redis", str(exc))
    return REDIS_URL


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    import psycopg

    name = f"idp_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=2) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        need("PostgreSQL", str(exc).strip())
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_settings(tmp: Path, database_url: str, store_url: str, port: int, **extra):
    """Settings for a test instance: its own keys, outbox, store prefix and database."""
    overrides = {
        "server": {"issuer": f"http://127.0.0.1:{port}", "bind": f"127.0.0.1:{port}",
                   "secret_key": secrets.token_urlsafe(48)},
        "database": {"url": database_url},
        "store": {"url": store_url, "prefix": f"idptest:{uuid.uuid4().hex[:8]}:"},
        "sms": {"backend": "file", "outbox": str(tmp / "outbox.jsonl")},
        "keys": {"dir": str(tmp / "keys")},
    }
    for section, values in extra.items():
        overrides.setdefault(section, {}).update(values)
    return load_settings(None, env={}, overrides=overrides)


class LiveProvider(ServedApp):
    """The provider served over HTTP on loopback from a background thread."""

    def __init__(self, app, settings):
        self.settings = settings
        host, port = settings.server.bind.split(":")
        super().__init__(app, int(port), host)
        self.url = settings.server.issuer
        self.outbox = Outbox(Path(settings.sms.outbox))

    def flow(self) -> FlowClient:
        """A fresh browser-like HTTP client for this provider."""
        return FlowClient(self)

    def add_client(self, **kwargs):
        """Register a client; returns (client_id, secret, redirect_uri)."""
        from idp.protocol.agencies import register_client

        redirect = kwargs.pop("redirect_uri", f"http://127.0.0.1:9/{uuid.uuid4().hex[:6]}/cb")
        kwargs.setdefault("trusted", True)  # consent pages are tested on their own
        with self.app.app_context():
            client, secret = register_client(kwargs.pop("name", "Test agency"), [redirect], **kwargs)
            return client.client_id, secret, redirect

    def add_citizen(self, birth_date: str = "1980-01-01", mobile: str | None = None):
        """Register a citizen with a random valid national ID; returns (national_id, mobile)."""
        from idp.citizens.national_id import make_national_id
        from idp.citizens.records import add_citizen

        national_id = make_national_id(f"{secrets.randbelow(10**9):09d}")
        mobile = mobile or f"+98912{secrets.randbelow(10**7):07d}"
        with self.app.app_context():
            add_citizen(national_id=national_id, mobile=mobile, birth_date=birth_date, given_name="آزمون",
                        family_name="شهروند")
        return national_id, mobile

    def stop(self):
        from idp.protocol import backchannel

        backchannel.stop_worker(self.app)  # its database goes away with the test
        super().stop()


def start_provider(tmp: Path, database_url: str, store_url: str, **extra) -> LiveProvider:
    from idp.platform import keys
    from idp.platform.database import upgrade_database

    port = free_port()
    settings = make_settings(tmp, database_url, store_url, port, **extra)
    keys.ensure(settings.keys.dir)
    app = create_app(settings)
    upgrade_database(app)
    return LiveProvider(app, settings)


@contextmanager
def sqlite_provider(tmp_path_factory, redis_url: str, name: str):
    """A module's own provider on SQLite with real Redis, for tests that do not depend on the
    database (attacks, fuzzing); stopped and its pool closed afterwards."""
    tmp = tmp_path_factory.mktemp(name)
    live = start_provider(tmp, f"sqlite:///{tmp / 'idp.sqlite3'}", redis_url, limits=GENEROUS_IP_LIMITS)
    try:
        yield live
    finally:
        live.stop()
        with live.app.app_context():
            from idp.platform.database import db

            db.engine.dispose()


@pytest.fixture(scope="module")
def fresh_database():
    """A database of its own on the shared PostgreSQL server, dropped afterwards."""
    import psycopg

    from .test_multinode import create_database, drop_database

    try:
        url = create_database()
    except psycopg.Error as exc:
        need("PostgreSQL", str(exc).strip())
    yield url
    drop_database(url)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def provider(request, tmp_path_factory, redis_url):
    """The provider on SQLite and on PostgreSQL, both with real Redis."""
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "sqlite":
        db_url = f"sqlite:///{tmp / 'idp.sqlite3'}"
    else:
        db_url = request.getfixturevalue("postgres_url")
        _reset_postgres(db_url)
    # Every test request comes from 127.0.0.1: the per-IP limits are tested on their own.
    live = start_provider(tmp, db_url, redis_url, limits=GENEROUS_IP_LIMITS)
    yield live
    live.stop()
    with live.app.app_context():
        from idp.platform.database import db

        db.engine.dispose()


@pytest.fixture()
def make_provider(tmp_path_factory, redis_url):
    """A factory of providers on SQLite + real Redis with chosen settings (stopped after the test)."""
    started = []

    def make(**extra):
        tmp = tmp_path_factory.mktemp("p")
        live = start_provider(tmp, f"sqlite:///{tmp / 'idp.sqlite3'}", redis_url, **extra)
        started.append(live)
        return live

    yield make
    for live in started:
        live.stop()


@pytest.fixture()
def gateway():
    """A scripted SMS gateway on loopback (helpers.Gateway)."""
    with running_gateway() as gw:
        yield gw


def _reset_postgres(url: str) -> None:
    """An empty schema, so modules sharing the session database start alike."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
