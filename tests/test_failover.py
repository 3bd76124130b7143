"""Failover of the engines under login traffic, against `idp serve` nodes as in production: the
store's Redis primary killed under Redis Sentinel, the database's primary switched over to its
standby, and reports read from a replica.

The servers that fail here are the test's own (tests/ha.py, free loopback ports); the shared
ones are never touched. Each test prints its window and counts.
"""
from __future__ import annotations

import json
import os
import shutil

import psycopg
import pytest
import redis as redis_lib

from . import drills
from .conftest import need
from .drills import DrillResult, LoginTraffic
from .ha import PostgresPair, RedisSentinelSet, pg_bindir
from .helpers import run_idp, wait_until
from .test_multinode import Deployment, assert_no_tracebacks


@pytest.fixture
def sentinel_set(tmp_path):
    try:
        servers = RedisSentinelSet(tmp_path / "redis-ha")
    except RuntimeError as exc:
        need("Redis", f"{exc} (a Redis primary, replica and sentinels of the test's own are started)")
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def postgres_pair():
    bindir = pg_bindir()
    if bindir is None or (os.geteuid() == 0 and not shutil.which("runuser")):
        need("PostgreSQL", "initdb/pg_ctl/pg_basebackup are not installed (a primary and standby of the test's own)")
    pair = PostgresPair(bindir)
    try:
        pair.start()
        yield pair
    finally:
        pair.destroy()


# ---- the Sentinel form of [store] url -------------------------------------------------------


@pytest.mark.parametrize("url, message", [
    ("redis+sentinel://127.0.0.1/svc", "names a sentinel without host:port"),
    ("redis+sentinel://127.0.0.1:26379", "must name the service"),
    ("redis+sentinel://127.0.0.1:26379/svc/zero", "database number that is not a number"),
    ("redis+sentinel://127.0.0.1:26379/svc?retries=3", "unknown option (retries)"),
])
def test_a_malformed_sentinel_url_is_one_line(tmp_path, url, message):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "IDP_SERVER_SECRET_KEY": "t" * 48,
           "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.db'}", "IDP_STORE_URL": url}
    out = run_idp(env, "stats")
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "[store] url" in lines[0] and message in lines[0], out.stderr


def test_the_store_talks_to_the_primary_the_sentinels_name(sentinel_set):
    from idp.platform.store import connect

    r = connect(sentinel_set.url.replace("/0", "/3"))
    r.set("ha-test", "written")
    primary = redis_lib.Redis(port=sentinel_set.data_ports[0], db=3, decode_responses=True)
    assert primary.get("ha-test") == "written"
    assert r.connection_pool.service_name == "idp-store"


# ---- logins under a failover ------------------------------------------------------------------


def _assert_drill(result: DrillResult) -> None:
    print("\n" + "\n".join(result.lines()))
    assert not drills.problems(result)
    assert result.adults_with_code <= result.adults_with_event


def test_the_store_primary_killed_under_sentinel_fails_logins_only_for_the_window(
        tmp_path, fresh_database, sentinel_set):
    dep = Deployment(tmp_path / "dep", fresh_database, sentinel_set.url, workers=1, threads=4)
    try:
        dep.start_node(), dep.start_node()
        result = drills.redis_failover(dep, sentinel_set)
        _assert_drill(result)
        assert_no_tracebacks(dep)
    finally:
        dep.stop()


def test_a_postgres_switchover_loses_nothing_committed_and_needs_no_restart(tmp_path, redis_url, postgres_pair):
    dep = Deployment(tmp_path / "dep", postgres_pair.create_database(), redis_url, workers=1, threads=4)
    try:
        dep.start_node(), dep.start_node()
        result = drills.postgres_switchover(dep, postgres_pair)
        _assert_drill(result)
        assert result.lost == 0, "a switchover of a synchronous standby loses no login's state"
        assert result.refresh_families >= 12 and not result.refresh_failed, result.refresh_failed[:5]
        assert_no_tracebacks(dep)
    finally:
        dep.stop()


def test_reports_read_from_the_replica_and_show_its_lag(tmp_path, redis_url, postgres_pair):
    database_url = postgres_pair.create_database()
    replica_url = f"postgresql://postgres@127.0.0.1:{postgres_pair.standby.port}/idp"
    dep = Deployment(tmp_path / "dep", database_url, redis_url, workers=1, threads=4)
    try:
        node = dep.start_node()
        client = dep.add_client(scope="openid phone")
        adult = dep.add_citizen(birth_date="1980-01-01")
        traffic = LoginTraffic(dep, client, [(adult, True)], threads=1)
        traffic.start()
        traffic.stop()
        assert [a.outcome for a in traffic.attempts] == ["ok"]

        env = {**dep.env, "IDP_DATABASE_REPLICA_URL": replica_url}
        out = dep.cli("stats", "--json")
        assert out.returncode == 0, out.stderr
        assert "replica_lag_seconds" not in json.loads(out.stdout)
        out = run_idp(env, "stats", "--json")
        assert out.returncode == 0, out.stderr
        figures = json.loads(out.stdout)
        assert figures["unique_adults"] == 1 and 0 <= figures["replica_lag_seconds"] < 5
        text = run_idp(env, "stats").stdout
        assert "read from the replica" in text and "behind the primary" in text
        pairs = run_idp(env, "stats", "--by", "agency-pair", "--json")
        assert pairs.returncode == 0 and "replica_lag_seconds" in json.loads(pairs.stdout), pairs.stderr

        # the report really reads the replica: with its WAL replay paused, a new adult's login
        # reaches the primary at once and the replica's report only once replay resumes
        with psycopg.connect(replica_url, autocommit=True) as r:
            r.execute("SELECT pg_wal_replay_pause()")
            later = dep.add_citizen(birth_date="1981-01-01")
            traffic = LoginTraffic(dep, client, [(later, True)], threads=1)
            traffic.start()
            traffic.stop()
            assert [a.outcome for a in traffic.attempts] == ["ok"]
            assert json.loads(dep.cli("stats", "--json").stdout)["unique_adults"] == 2
            assert json.loads(run_idp(env, "stats", "--json").stdout)["unique_adults"] == 1
            r.execute("SELECT pg_wal_replay_resume()")
        assert wait_until(lambda: json.loads(run_idp(env, "stats", "--json").stdout)["unique_adults"] == 2, 20)

        # the login path never reads from it: the nodes hold no connection to the replica
        with psycopg.connect(postgres_pair.standby.admin_url, autocommit=True) as r:
            clients = r.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = 'idp'").fetchone()[0]
        assert clients == 0
        assert node.proc.poll() is None
        bad = run_idp({**dep.env, "IDP_DATABASE_REPLICA_URL": "mysql://x"}, "stats")
        assert bad.returncode != 0 and "[database] replica_url" in bad.stderr.strip()
        assert len(bad.stderr.strip().splitlines()) == 1
    finally:
        dep.stop()


def test_a_write_that_reaches_a_read_only_server_is_the_503_not_a_500(tmp_path, redis_url, postgres_pair):
    """A node whose connection reaches a server that no longer takes writes (a demoted primary,
    a standby named by mistake) answers as for a database that is away, and drops the connection."""
    from .conftest import start_provider
    from .helpers import FlowClient

    dep = Deployment(tmp_path / "dep", postgres_pair.create_database(), redis_url, workers=1, threads=4)
    provider = None
    try:
        client_id, secret, redirect = dep.add_client(scope="openid")
        national_id, mobile = dep.add_citizen()
        standby_url = f"postgresql://postgres@127.0.0.1:{postgres_pair.standby.port}/idp"
        def replayed() -> bool:  # the standby has the schema and the citizen (it may not have replayed yet)
            try:
                with psycopg.connect(standby_url) as conn:
                    return conn.execute("SELECT count(*) FROM citizens").fetchone()[0] == 1
            except psycopg.Error:
                return False

        assert wait_until(replayed, 20), "the standby did not replay the registry"
        provider = start_provider(tmp_path / "on-standby", standby_url, redis_url)
        browser = FlowClient(provider)
        page = browser.start(client_id, redirect, scope="openid")
        assert page.status_code == 200 and 'name="national_id"' in page.text
        # asking for a code writes (the audit trail): the first write that meets the read-only server
        done = browser.submit(page, {"national_id": national_id, "mobile": mobile})
        assert done.status_code == 503 and "temporarily_unavailable" in done.text, (done.status_code, done.text[:300])
        assert done.headers.get("Retry-After") and "Traceback" not in done.text
    finally:
        if provider is not None:
            provider.stop()
        dep.stop()
