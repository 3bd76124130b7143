"""Highly available engines of a test's own, on free loopback ports, for failover tests and the
failover drill: a Redis primary with a replica and three sentinels. Each starts from Debian's
own server binaries, keeps nothing outside its temporary directory, and is stopped (the whole
set) by ``stop``; the shared Redis and PostgreSQL at :6379 and :5432 are never touched.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

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
