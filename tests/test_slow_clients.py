"""Slow clients against `idp serve` as shipped (its default workers and threads, PostgreSQL and
Redis): 500 sockets that each send a request line and then one header line a second, and never
finish their headers ("slowloris"). No proxy is assumed in front of a node, so the server itself
must keep answering fresh requests while they hang on, and must drop each of them once it has
had `[server] header_timeout` seconds to send its headers.
"""
from __future__ import annotations

import resource
import selectors
import socket
import threading
import time

import pytest
import requests

from .test_multinode import Deployment

SLOW_SOCKETS = 500
#: How late past the header timeout a slow socket may still be open (timer granularity, a busy machine).
SLACK = 3.0


def shipped(key: str):
    """The default of a `[server]` key, as `idp serve` ships it."""
    from idp.platform.settings import SCHEMA

    return SCHEMA["server"][key].default


class Slowloris:
    """Sockets that send a request line, then one header line a second, never the blank line that
    ends the headers. One thread drives them all (non-blocking sockets and a selector) and notes
    when the server closes each one."""

    def __init__(self, port: int, count: int):
        self.port, self.count = port, count
        self.opened: dict[socket.socket, float] = {}
        self.closed: dict[socket.socket, float] = {}
        self.selector = selectors.DefaultSelector()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        request_line = f"GET /.well-known/openid-configuration HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n".encode()
        for _ in range(self.count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.setblocking(False)
            sock.send(request_line)
            self.opened[sock] = time.monotonic()
            self.selector.register(sock, selectors.EVENT_READ)
        self.thread.start()

    def _close(self, sock: socket.socket) -> None:
        self.closed[sock] = time.monotonic()
        self.selector.unregister(sock)
        sock.close()

    def _run(self) -> None:
        next_header, n = time.monotonic() + 1, 0
        while not self.stop.is_set() and len(self.closed) < self.count:
            for key, _ in self.selector.select(timeout=0.1):
                try:
                    data = key.fileobj.recv(4096)  # an answer (a 408) or the end of the connection
                except OSError:
                    data = b""
                if not data:
                    self._close(key.fileobj)
            if time.monotonic() >= next_header:
                next_header, n = next_header + 1, n + 1
                for sock in [s for s in self.opened if s not in self.closed]:
                    try:
                        sock.send(f"X-Slow-{n}: {n}\r\n".encode())
                    except OSError:
                        self._close(sock)

    def still_open(self) -> int:
        return self.count - len(self.closed)

    def longest_open(self) -> float:
        """Seconds the longest-lived socket stayed open (up to now for those still open)."""
        now = time.monotonic()
        return max(self.closed.get(s, now) - t for s, t in self.opened.items())

    def shutdown(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for sock in self.opened:
            sock.close()
        self.selector.close()


def open_files_limit(pid: int) -> int:
    """The soft RLIMIT_NOFILE of a running process, from /proc."""
    with open(f"/proc/{pid}/limits") as fh:
        for line in fh:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError(f"no open-files limit for {pid}")


@pytest.fixture(scope="module")
def held_node(tmp_path_factory, fresh_database, redis_url):  # noqa: F811
    """`idp serve` with its shipped workers and threads, and 500 slow sockets held open against it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = SLOW_SOCKETS + 500
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    dep = Deployment(tmp_path_factory.mktemp("slow"), fresh_database, redis_url,
                     workers=shipped("workers"), threads=shipped("threads"))
    slow = None
    try:
        node = dep.start_node()
        for pid in [node.proc.pid, *node.workers()]:
            # A single worker may end up holding every slow socket.
            assert open_files_limit(pid) >= wanted, f"process {pid} may open only {open_files_limit(pid)} files"
        slow = Slowloris(node.port, SLOW_SOCKETS)
        slow.start()
        time.sleep(2)  # every socket has sent a header line or two
        yield node, slow
    finally:
        if slow is not None:
            slow.shutdown()
        dep.stop()
        dep.forget_store_keys()


def test_fresh_requests_answer_within_a_second_while_500_slow_clients_hold_sockets(held_node):
    node, slow = held_node
    assert slow.still_open() > SLOW_SOCKETS * 0.9, "the slow sockets were dropped before the test began"
    times = []
    for _ in range(5):
        started = time.monotonic()
        try:  # no session: a fresh connection each time, as a new visitor's
            answer = requests.get(f"{node.url}/.well-known/openid-configuration", timeout=5)
            times.append((time.monotonic() - started, answer.status_code))
        except requests.RequestException as exc:
            times.append((time.monotonic() - started, type(exc).__name__))
        time.sleep(0.2)  # real time: probing a real server while slow sockets hold it
    print(f"discovery while {slow.still_open()} slow sockets were open: "
          + ", ".join(f"{t:.3f} s ({outcome})" for t, outcome in times))
    assert all(outcome == 200 and t < 1.0 for t, outcome in times), times


def test_a_client_that_never_finishes_its_headers_is_dropped_after_the_header_timeout(held_node):
    node, slow = held_node
    timeout = shipped("header_timeout")
    deadline = min(slow.opened.values()) + timeout + SLACK
    while slow.still_open() and time.monotonic() < deadline:
        time.sleep(0.1)  # polling real sockets until the server's header timeout closes them
    print(f"header timeout {timeout} s: {slow.count - slow.still_open()} of {slow.count} slow sockets dropped, "
          f"the longest after {slow.longest_open():.1f} s")
    assert slow.still_open() == 0, f"{slow.still_open()} slow sockets still open after {timeout + SLACK} s"
    assert slow.longest_open() <= timeout + SLACK
    # ...and the node serves on.
    assert requests.get(f"{node.url}/.well-known/openid-configuration", timeout=5).status_code == 200


def test_slow_bodies_hold_threads_but_not_the_turns_fresh_requests_need(tmp_path_factory, fresh_database,  # noqa: F811
                                                                         redis_url):
    """A POST whose body trickles in holds one of a worker's threads until the body is in (no
    timeout exists for it), but no turn to run the app (web.BodyFirst): with fewer such sockets
    than a worker's threads (the workers share them out unevenly), fresh requests through the
    app still answer at once, and the token requests whose bodies finally arrive are answered
    too. Before BodyFirst, with threads = turns = 4, eight such sockets stopped this node."""
    workers = 2
    dep = Deployment(tmp_path_factory.mktemp("slow-bodies"), fresh_database, redis_url,
                     workers=workers, threads=shipped("threads"))
    held = shipped("threads") - 2  # two threads left over even if one worker takes them all
    socks = []
    try:
        node = dep.start_node()
        for _ in range(held):
            sock = socket.create_connection(("127.0.0.1", node.port))
            sock.sendall(f"POST /token HTTP/1.1\r\nHost: {dep.issuer_host}\r\nContent-Type: "
                         f"application/x-www-form-urlencoded\r\nContent-Length: 40\r\n\r\ngrant".encode())
            socks.append(sock)
        time.sleep(1)  # real time: the server takes the slow requests to its threads
        times = []
        for _ in range(5):
            started = time.monotonic()  # through the app (a query string), on a fresh connection
            answer = requests.get(f"{node.url}/.well-known/openid-configuration?fresh=1", timeout=5)
            times.append((round(time.monotonic() - started, 3), answer.status_code))
        print(f"discovery while {held} slow bodies were arriving: {times}")
        assert all(status == 200 and t < 1.0 for t, status in times), times
        for sock in socks:  # the bodies arrive after all: each gets its (refusal) answer
            sock.sendall(b"_type=client_credentials&scope=openid")
        for sock in socks:
            sock.settimeout(10)
            assert sock.recv(64).startswith(b"HTTP/1.1 4"), "a slow body went unanswered"
    finally:
        for sock in socks:
            sock.close()
        dep.stop()
        dep.forget_store_keys()
