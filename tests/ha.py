"""Highly available engines of a test's own, on free loopback ports, for failover tests and the
failover drill: a Redis primary with a replica and three sentinels; a PostgreSQL cluster, and a
primary with a streaming standby. Each starts from Debian's
own server binaries, keeps nothing outside its temporary directory, and is stopped (the whole
set) by ``stop``; the shared Redis and PostgreSQL at :6379 and :5432 are never touched.
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import redis as redis_lib

from .helpers import free_port, wait_until

SERVICE = "idp-store"


class RedisSentinelSet:
    """A primary, one replica and three sentinels that watch the primary under ``SERVICE``
    (quorum 2, a server is down after ``down_after_ms``)."""

    def __init__(self, tmp: Path, down_after_ms: int = 1000, failover_timeout_ms: int = 10000):
        if not shutil.which("redis-server"):
            raise RuntimeError("redis-server is not installed")
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms
        self.data_ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def _spawn(self, port: int, *args: str) -> None:
        log = open(self.tmp / f"redis-{port}.log", "ab")
        self.procs[port] = subprocess.Popen(["redis-server", *args], stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=self.tmp, start_new_session=True)
        log.close()

    def start(self) -> None:
        primary, replica = self.data_ports
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.tmp)]
        self._spawn(primary, "--port", str(primary), *common)
        self._spawn(replica, "--port", str(replica), *common, "--replicaof", "127.0.0.1", str(primary))
        for port in self.sentinel_ports:
            conf = self.tmp / f"sentinel-{port}.conf"  # a sentinel rewrites its own file
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {self.tmp}\n"
                            f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n"
                            f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                            f"sentinel failover-timeout {SERVICE} {self.failover_timeout_ms}\n"
                            f"sentinel parallel-syncs {SERVICE} 1\n")
            self._spawn(port, str(conf), "--sentinel")
        assert wait_until(self.ready, 30), "the sentinels did not come to watch the primary and its replica"

    def ready(self) -> bool:
        """Every sentinel knows the two others and a replica in sync, so a failover can happen."""
        try:
            link = redis_lib.Redis(port=self.data_ports[1], socket_timeout=1, decode_responses=True)
            if link.info("replication").get("master_link_status") != "up":
                return False
            for port in self.sentinel_ports:
                s = redis_lib.Redis(port=port, socket_timeout=1, decode_responses=True)
                if len(s.sentinel_sentinels(SERVICE)) != 2 or not s.sentinel_slaves(SERVICE):
                    return False
        except redis_lib.RedisError:
            return False
        return True

    def primary_port(self) -> int | None:
        """The port of the primary the sentinels name now (None if none answers)."""
        for port in self.sentinel_ports:
            try:
                host, p = redis_lib.Redis(port=port, socket_timeout=1).sentinel_get_master_addr_by_name(SERVICE)
                return int(p)
            except (redis_lib.RedisError, TypeError):
                continue
        return None

    def kill(self, port: int) -> None:
        """SIGKILL one server: no goodbye to its clients, its replica or the sentinels."""
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        end = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


# ---- PostgreSQL ----------------------------------------------------------------------------------


def pg_bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    return Path(dirs[-1]) if dirs and Path(dirs[-1], "initdb").exists() else None


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own (initdb in a temporary directory, a free port)."""

    def __init__(self, bindir: Path):
        self.bindir, self.port = bindir, free_port()
        self.root = Path(tempfile.mkdtemp(prefix="idp-pg-"))  # not under pytest's 0700 tmp: postgres reads it
        self.data = self.root / "data"
        self.as_postgres = os.geteuid() == 0  # initdb refuses to run as root
        if self.as_postgres:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
        assert out.returncode == 0, f"{tool}: {out.stdout}\n{out.stderr}"

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60",
                  "-o", self.options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-m", "fast", "-w", "-t", "60",
                  "-o", self.options, "restart")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except AssertionError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


class PostgresPair:
    """A primary and a streaming standby made from it with pg_basebackup, each on its own
    loopback port. Commits wait for the standby (synchronous replication, set on the primary
    only: the standby, once promoted, has no standby of its own to wait for)."""

    def __init__(self, bindir: Path):
        self.primary = PrivatePostgres(bindir)
        self.standby = PrivatePostgres(bindir)
        self.standby.root = self.primary.root
        self.standby.data = self.primary.root / "standby"
        self.standby.options = (f"-p {self.standby.port} -k {self.standby.root} -c listen_addresses=127.0.0.1 "
                                f"-c fsync=off")
        self.standby.admin_url = f"postgresql://postgres@127.0.0.1:{self.standby.port}/postgres"

    def url(self, database: str) -> str:
        """The multi-host URL a node is given: libpq picks whichever host accepts writes."""
        return (f"postgresql://postgres@/{database}?host=127.0.0.1,127.0.0.1"
                f"&port={self.primary.port},{self.standby.port}&target_session_attrs=read-write&connect_timeout=2")

    def start(self) -> None:
        self.primary.init()
        self.primary.start()
        self.primary._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres",
                          "-D", str(self.standby.data), "-R", "-X", "stream", "--no-sync")
        self.standby.start()
        with psycopg.connect(self.primary.admin_url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
            conn.execute("SELECT pg_reload_conf()")
        assert wait_until(self.in_sync, 30), "the standby did not start streaming"

    def in_sync(self) -> bool:
        try:
            with psycopg.connect(self.primary.admin_url, autocommit=True, connect_timeout=2) as conn:
                row = conn.execute("SELECT sync_state FROM pg_stat_replication").fetchone()
                return row is not None and row[0] == "sync"
        except psycopg.Error:
            return False

    def create_database(self, name: str = "idp") -> str:
        with psycopg.connect(self.primary.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def switch_over(self) -> None:
        """Stop the primary (fast: its last WAL reaches the standby), promote the standby."""
        self.primary.stop("fast")
        self.standby._run("pg_ctl", "-D", str(self.standby.data), "-w", "-t", "60", "promote")

    def destroy(self) -> None:
        for server in (self.standby, self.primary):
            try:
                server.stop("immediate")
            except AssertionError:
                pass
        shutil.rmtree(self.primary.root, ignore_errors=True)
