"""``idp serve``: the provider in production, served by granian (a Rust HTTP server) with WSGI
worker processes forked from one master.

Why granian: no proxy is assumed in front of a node, so the server itself must outlast slow
clients. granian reads and writes connections on its Rust runtime; a Python thread is taken only
once a request's headers have all arrived, so sockets that dribble their headers, or sit idle,
hold no thread. A client gets ``[server] header_timeout`` seconds, from the moment its connection
opened or its previous response ended, to send a request's headers, and is disconnected
otherwise. ``[server] max_connections`` bounds what a node holds open, and ``[server] backlog``
what the kernel queues beyond that. It was also the faster server in ``make bench``
(bench/README.md).

Signals to the master: SIGHUP replaces the workers one by one, each new worker serving before the
old one stops and finishes its requests in flight (a graceful restart: configuration and code are
those loaded at start); SIGTERM or SIGINT stop accepting, let requests in flight finish (at most
``GRACEFUL_SECONDS``) and exit.

May import: everything in idp.
"""
from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import resource
import time
from pathlib import Path
from urllib.parse import urlsplit

import click
from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.server import Server

from .. import create_app
from ..platform.metrics import forget_dead_workers, prepare_multiprocess
from ..platform.settings import Settings
from ..platform.web import BodyFirst
from ..protocol.backchannel import ensure_worker
from .common import Context, pass_ctx

#: How long a stopping worker (SIGTERM, or replaced at SIGHUP) may finish its requests in flight.
GRACEFUL_SECONDS = 10
#: At SIGHUP, how long a new worker serves beside the old one it replaces before that one stops.
RESPAWN_SECONDS = 1.0
#: A worker that dies younger than this is respawned after a pause, not at once (a crash loop).
YOUNG_WORKER_SECONDS = 5.0


class NodeServer(Server):
    """granian's multi-process server, except that a node never stops because its workers die.

    granian gives up and stops the whole node when a worker it has just respawned dies again
    within a few seconds. A worker killed twice in a row (the OOM killer, an operator, a request
    that crashes the interpreter) would then cut off every request in flight on the other
    workers, and a request that crashes a worker would become a switch that stops the node. Here
    a worker that dies young is respawned after a pause instead, so a real crash loop costs one
    fork a second, never the node."""

    #: Shared with the workers (BodyFirst): the pids of the workers a graceful restart replaces.
    draining = None

    def _respawn_workers(self, workers, spawn_target, target_loader, delay: float = 0):
        if not delay and any(time.monotonic() - self.wrks[idx].birth < YOUNG_WORKER_SECONDS for idx in workers):
            time.sleep(1.0)
        if delay and self.draining is not None:
            # a graceful restart (SIGHUP): the old workers tell every client to close its
            # connection after its answer, so that none is idle on them when they stop
            for idx in workers:
                self.draining[idx % len(self.draining)] = self.wrks[idx]._id() or 0
        try:
            super()._respawn_workers(workers, spawn_target, target_loader, delay)
        finally:
            if self.draining is not None:
                self.draining[:] = [0] * len(self.draining)
        for idx in workers:  # what granian's crash-loop check looks at
            self.respawned_wrks.pop(idx, None)


def listen_address(bind: str) -> dict:
    """granian's bind arguments for ``[server] bind``: ``HOST:PORT``, ``[IPv6]:PORT`` or ``unix:PATH``."""
    if bind.startswith("unix:"):
        return {"uds": Path(bind[5:])}
    host, _, port = bind.rpartition(":")
    return {"address": host.strip("[]") or "127.0.0.1", "port": int(port)}


def raise_open_files_limit(needed: int) -> None:
    """Every connection a worker holds is a file descriptor: lift the soft limit to the hard one
    when it is lower than a worker may need (1024 by default under systemd and most shells)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard == resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        click.echo(f"idp serve: warning: a worker may need {needed} open files but the limit is {hard} "
                   "(raise LimitNOFILE or ulimit -n, or lower [server] max_connections)", err=True)


def warm_templates(app) -> None:
    """Compile every template once before the workers are forked, so that they share the compiled
    code instead of each compiling it on its first requests."""
    for name in app.jinja_env.list_templates():
        if name.endswith(".html"):
            app.jinja_env.get_template(name)


def refuse_development_settings(settings: Settings) -> None:
    """Stop at start on settings that only make sense in development; say loudly what is off."""
    if settings.store.url == "memory://":
        raise click.ClickException("[store] url: memory:// cannot be shared by worker processes; use redis://")
    if not settings.database.url.startswith("postgresql"):
        click.echo("idp serve: warning: [database] url is not PostgreSQL", err=True)
    if not settings.limits.enabled:
        click.echo("idp serve: WARNING: rate limits are OFF ([limits] enabled = false)", err=True)


def worker_count(server) -> int:
    """``[server] workers``, or two per CPU core: each runs one request at a time (``concurrency``),
    so while one waits for PostgreSQL or Redis the other keeps the core busy (bench/README.md)."""
    return server.workers or 2 * (os.cpu_count() or 1)


def run_production(settings: Settings) -> None:
    """Build the app once, then fork ``[server] workers`` granian workers that serve it."""
    refuse_development_settings(settings)
    server = settings.server
    host = urlsplit(server.issuer).hostname or ""
    click.echo(f"idp serve: issuer {server.issuer} on {server.bind} ({host}), "
               f"{worker_count(server)} workers x {server.threads} threads "
               f"({server.concurrency} running at once)", err=True)
    workers = worker_count(server)
    per_worker = -(-server.max_connections // workers)
    raise_open_files_limit(per_worker + 2 * settings.database.pool_size + 64)
    prepare_multiprocess(settings)  # before the app is built: the workers share metric files
    app = create_app(settings)
    warm_templates(app)
    # What this process built stays put: the collector no longer walks (and so no longer writes
    # to) those objects, so forked workers keep sharing their pages and each collection in a
    # worker has less to scan.
    gc.collect()
    gc.freeze()

    draining = multiprocessing.get_context("fork").RawArray(ctypes.c_long, workers)  # shared with every worker

    def worker_app():
        """In each worker as it starts (after the fork): the app, and this process's sweep of
        back-channel logouts, so rows left undelivered (e.g. by a restart) go out at once."""
        forget_dead_workers()
        ensure_worker(app)
        app.wsgi_app = BodyFirst(app.wsgi_app, server.concurrency, draining=draining)
        return app

    node = NodeServer(
        "idp", interface=Interfaces.WSGI, **listen_address(server.bind),
        workers=workers, blocking_threads=server.threads,
        backlog=server.backlog, backpressure=per_worker,
        http=HTTPModes.http1, http1_settings=HTTP1Settings(header_read_timeout=server.header_timeout * 1000),
        respawn_failed_workers=True, respawn_interval=RESPAWN_SECONDS, workers_kill_timeout=GRACEFUL_SECONDS,
        websockets=False, log_access=False,
    )
    node.draining = draining
    node.serve(target_loader=worker_app, wrap_loader=False)


@click.command()
@pass_ctx
def serve(obj: Context):
    """Run in production: granian workers, PostgreSQL and Redis."""
    run_production(obj.settings)
