"""What `idp serve` keeps across its worker processes, tested on the real command (granian
workers, PostgreSQL, Redis): metrics summed over every worker, the back-channel logout sweep run
by every worker, a graceful restart (SIGHUP) that answers every request throughout, and a stop
(SIGTERM) that finishes the requests in flight.
"""
from __future__ import annotations

import os
import secrets
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from .helpers import LogoutReceiver, wait_until
from .test_multinode import Deployment, exchange, login_for_code

WORKERS = 2
DISCOVERY = "/.well-known/openid-configuration"
TOKEN = secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def dep(tmp_path_factory, fresh_database, redis_url):  # noqa: F811
    tmp = tmp_path_factory.mktemp("serving")
    deployment = Deployment(tmp, fresh_database, redis_url, workers=WORKERS, threads=4,
                            IDP_METRICS_ENABLED="true", IDP_METRICS_TOKEN=TOKEN,
                            IDP_METRICS_MULTIPROC_DIR=str(tmp / "prom"))
    try:
        deployment.start_node()
        yield deployment
    finally:
        deployment.stop()
        deployment.forget_store_keys()


def served_discoveries(node) -> float:
    """`idp_request_duration_seconds_count` of the discovery document, as one scrape sums it."""
    body = requests.get(f"{node.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(body) for s in f.samples
               if s.name == "idp_request_duration_seconds_count" and s.labels.get("endpoint") == DISCOVERY)


def metric_file_pids(dep) -> set[int]:
    """The processes that wrote metric files (prometheus_client names them by pid)."""
    return {int(p.stem.rsplit("_", 1)[1]) for p in Path(dep.settings.metrics.multiproc_dir).glob("*.db")}


def fetch_in_parallel(url: str, count: int, threads: int = 8) -> list[int]:
    """GET a URL ``count`` times over fresh connections from several threads; the statuses."""
    statuses: list[int] = []
    lock = threading.Lock()

    def run(n: int) -> None:
        for _ in range(n):
            status = requests.get(url, timeout=10).status_code
            with lock:
                statuses.append(status)

    workers = [threading.Thread(target=run, args=(count // threads,)) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    return statuses


def test_metrics_of_every_worker_add_up(dep):
    node = dep.nodes[0]
    before = served_discoveries(node)
    assert fetch_in_parallel(f"{node.url}{DISCOVERY}", 80) == [200] * 80
    assert set(node.workers()) <= metric_file_pids(dep), "each worker counted some of the requests"
    assert served_discoveries(node) - before == 80


def test_a_graceful_restart_answers_every_request_throughout(dep):
    """SIGHUP: each worker is replaced by a new one, which serves before the old one stops and
    finishes what it was doing. Fresh connections, kept-alive ones and requests that read the
    database all get their answer; the counts of the replaced workers stay in the metrics."""
    node = dep.nodes[0]
    client = dep.add_client()
    national_id, mobile = dep.add_citizen()
    browser, params = login_for_code(node, client, national_id, mobile)
    token = exchange(node, client, browser, params["code"]).json()["access_token"]
    old = set(node.workers())
    counted = served_discoveries(node)
    outcomes: dict[str, list] = {"fresh": [], "kept-alive": [], "userinfo": []}
    stop = threading.Event()

    def load(kind: str) -> None:
        http = node.session()
        while not stop.is_set():
            try:
                if kind == "fresh":
                    status = requests.get(f"{node.url}{DISCOVERY}", timeout=10).status_code
                elif kind == "kept-alive":
                    status = http.get(f"{node.url}{DISCOVERY}", timeout=10).status_code
                else:
                    status = http.get(f"{node.url}/userinfo", headers={"Authorization": f"Bearer {token}"},
                                      timeout=10).status_code
            except requests.RequestException as exc:
                status = f"{type(exc).__name__}: {exc}"
            outcomes[kind].append(status)
            time.sleep(0.01)  # paces the load on a real `idp serve` process

    threads = [threading.Thread(target=load, args=(kind,), daemon=True) for kind in outcomes]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)  # real time: the load reaches the workers of a real process before SIGHUP
        node.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: len(node.workers()) == WORKERS and not set(node.workers()) & old, 30), \
            f"workers not replaced: {old} -> {node.workers()}"
        time.sleep(0.5)  # and the new workers serve on
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert node.proc.poll() is None
    for kind, statuses in outcomes.items():
        failed = [s for s in statuses if s != 200]
        assert statuses and not failed, f"{kind}: {len(failed)} of {len(statuses)} failed: {failed[:3]}"
    assert served_discoveries(node) - counted == len(outcomes["fresh"]) + len(outcomes["kept-alive"])


def test_every_worker_sweeps_back_channel_logouts(dep):
    """Logouts queued outside any serving process (`idp sessions revoke`) are delivered by the
    workers' own sweeps: with all workers but one paused, that one delivers, whichever it is."""
    node = dep.nodes[0]
    receiver = LogoutReceiver()
    try:
        client = dep.add_client(backchannel_logout_uri=receiver.url("/bcl"))
        workers = node.workers()
        people = [dep.add_citizen() for _ in workers]
        for national_id, mobile in people:
            login_for_code(node, client, national_id, mobile)
        for worker, (national_id, _) in zip(workers, people):
            paused = [w for w in workers if w != worker]
            for other in paused:
                os.kill(other, signal.SIGSTOP)
            try:
                delivered = len(receiver.posts_to("/bcl"))
                out = dep.cli("sessions", "revoke", "--national-id", national_id, "--json")
                assert out.returncode == 0, out.stderr
                assert wait_until(lambda: len(receiver.posts_to("/bcl")) > delivered, 10), \
                    f"worker {worker} delivered nothing while the others were paused"
            finally:
                for other in paused:
                    os.kill(other, signal.SIGCONT)
    finally:
        receiver.stop()


def test_a_stop_finishes_the_requests_in_flight(dep):
    """SIGTERM to the master (as systemd sends it with KillMode=mixed): a request whose body is
    still arriving gets its answer, then the node exits cleanly."""
    node = dep.nodes[0]
    with socket.create_connection(("127.0.0.1", node.port), timeout=15) as sock:
        body = b"grant_type=authorization_code&code=nothing"
        sock.sendall(b"POST /token HTTP/1.1\r\nHost: " + dep.issuer_host.encode() + b"\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body[:10])
        time.sleep(0.5)  # a worker holds the request now
        node.proc.send_signal(signal.SIGTERM)
        time.sleep(1)  # real time: the separate process drains the held request as it stops
        sock.sendall(body[10:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]  # no client authentication: a real answer
    assert b'"invalid_client"' in answer
    assert node.proc.wait(20) == 0
