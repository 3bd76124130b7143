"""Running the embedded default, ``idp dev``: one process with demo data (``idp serve`` is in serve.py).

May import: everything in idp, and the demo agency app in clients/.
"""
from __future__ import annotations

import errno
import os
import secrets
import signal
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import click
from werkzeug.serving import BaseWSGIServer, get_sockaddr, make_server, select_address_family

from clients.agency_web import create_app as create_agency_web

from .. import create_app
from ..citizens import directory
from ..citizens.records import add_citizen
from ..platform import keys
from ..platform.database import upgrade_database
from ..platform.settings import Settings
from ..protocol.agencies import ClientNotFound, get_client, register_client, rotate_secret
from .common import Context
from .demo import DEMO_AGENCIES, demo_citizens

DEV_CONFIG = Path("instance/dev.toml")


def prepare_demo(app, agency_ports: tuple[int, ...] = ()) -> list[dict]:
    """Schema, keys, demo citizens, and the demo agencies on ``agency_ports`` (one port each, in
    the order of DEMO_AGENCIES); returns those agencies with fresh secrets."""
    settings = app.extensions["idp.settings"]
    upgrade_database(app)
    keys.ensure(settings.keys.dir)
    app.extensions["idp.keyring"].reload({settings.keys.id_token_alg, settings.keys.access_token_alg})
    agencies = []
    with app.app_context():
        for nid, mobile, birth, given, family, given_l, family_l in demo_citizens():
            if directory.find(nid) is None:
                add_citizen(national_id=nid, mobile=mobile, birth_date=birth, given_name=given, family_name=family,
                            given_name_latin=given_l, family_name_latin=family_l)
        for (client_id, name, name_fa, kind, host, _default), port in zip(DEMO_AGENCIES, agency_ports):
            base = f"http://{host}:{port}"
            try:
                client = get_client(client_id)
            except ClientNotFound:
                client = None
            if client is None:
                client, secret = register_client(name, [f"{base}/callback"], name_fa=name_fa,
                                                 post_logout_redirect_uris=[f"{base}/"], scope="openid profile",
                                                 trusted=True, client_id=client_id)
            else:
                client.client_metadata = {**client.client_metadata, "redirect_uris": [f"{base}/callback"],
                                          "post_logout_redirect_uris": [f"{base}/"]}
                secret = rotate_secret(client)  # the demo apps get a fresh secret at every start
            agencies.append({"client_id": client_id, "client_secret": secret, "kind": kind, "port": port,
                             "host": host, "url": base + "/", "name": name})
    return agencies


@dataclass
class Listener:
    """A socket ``idp dev`` listens on, bound before anything else happens."""

    host: str
    port: int
    sock: socket.socket


def listen(what: str, host: str, port: int, setting: str) -> Listener:
    """Listen on ``host:port`` now, or stop ``idp dev`` with one line naming the port and the
    ``setting`` that chooses it.

    Every port is bound before the demo data is touched, so a port that is taken (an earlier
    ``idp dev`` still running, say) stops this one at once instead of half-starting beside it.
    The address is resolved as werkzeug resolves it (``localhost`` is 127.0.0.1).
    """
    family = select_address_family(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As werkzeug's own servers do: a port left in TIME_WAIT by a stopped run is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(get_sockaddr(host, port, family))
        sock.listen(socket.SOMAXCONN)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise click.ClickException(f"port {port} is already in use ({what} on {host}:{port}): stop what holds it "
                                       f"(an earlier `idp dev`?) or choose another port with {setting}") from None
        raise click.ClickException(f"cannot listen on {host}:{port} ({what}): {error.strerror or error}") from None
    return Listener(host, port, sock)


def serve(listener: Listener, app) -> BaseWSGIServer:
    """A threaded werkzeug server for ``app`` on the socket ``listener`` already holds."""
    server = make_server(listener.host, listener.port, app, threaded=True, fd=listener.sock.fileno())
    listener.sock.close()  # the server works on its own duplicate of the descriptor
    return server


def agency_app(issuer: str, agency: dict):
    """One demo agency web app, configured as ``python -m clients.agency_web`` would be."""
    return create_agency_web({"AGENCY_ISSUER": issuer, "AGENCY_CLIENT_ID": agency["client_id"],
                              "AGENCY_CLIENT_SECRET": agency["client_secret"], "AGENCY_PORT": str(agency["port"]),
                              "AGENCY_KIND": agency["kind"], "AGENCY_HOST": agency["host"]})


def _interrupt(signum, frame):
    """SIGTERM ends ``idp dev`` as Ctrl-C does: the servers close and the process exits 0."""
    raise KeyboardInterrupt


def run_dev(settings: Settings, agency_ports: tuple[int, ...]) -> None:
    """The embedded default: one process, memory:// store unless configured otherwise.

    The demo agencies (one per port in ``agency_ports``; none when it is empty) run inside this
    process, each on its own port and thread, and talk to the provider only over HTTP, as a real
    agency would. Living in the same process, they end with it however it ends (Ctrl-C, SIGTERM,
    even SIGKILL): no agency is left behind holding its port with a secret that no longer works.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    app = create_app(settings, require_keys=False)
    host, _, port = settings.server.bind.rpartition(":")
    provider_socket = listen("the identity provider", host or "127.0.0.1", int(port), "[server] bind")
    agency_sockets = [listen(f"demo agency {name}", agency_host, agency_port, "--agency-ports")
                      for (_id, name, _fa, _kind, agency_host, _default), agency_port
                      in zip(DEMO_AGENCIES, agency_ports)]
    if settings.store.url == "memory://":
        click.echo("idp dev: one process only (the memory:// store lives inside it).")
    agencies = prepare_demo(app, agency_ports)
    issuer = settings.server.issuer
    click.echo(f"\nNational identity provider: {issuer}  (discovery: {issuer}/.well-known/openid-configuration)")
    click.echo(f"Database: {settings.database.url}   Store: {settings.store.url}   SMS: {settings.sms.backend}")
    if not settings.limits.enabled:
        click.echo("WARNING: rate limits are OFF ([limits] enabled = false)")
    click.echo("\nDemo citizens (national ID / mobile):")
    for nid, mobile, birth, given, family, given_l, family_l in demo_citizens():
        click.echo(f"  {nid}  {'0' + mobile[3:]}  {given_l} {family_l}, born {birth}")
    if agencies:
        click.echo("\nDemo agencies (log in to the first, then open the second: no code needed):")
        for a in agencies:
            click.echo(f"  {a['url']}  {a['name']}")
    click.echo("\nOne-time codes are printed here, on the console.\n")
    provider = serve(provider_socket, app)
    agency_servers = [serve(held, agency_app(issuer, a)) for held, a in zip(agency_sockets, agencies)]
    running = []
    try:
        for server in agency_servers:
            threading.Thread(target=server.serve_forever, name=f"agency-{server.port}", daemon=True).start()
            running.append(server)
        provider.serve_forever()  # returns on Ctrl-C or SIGTERM, its socket closed
    finally:
        for server in running:
            server.shutdown()  # waits for its loop to end, which closes its socket


def _dev_config() -> Path:
    """instance/dev.toml with a fresh secret, created on first use and kept (stable pairwise subs)."""
    if not DEV_CONFIG.exists():
        DEV_CONFIG.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(DEV_CONFIG, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("# Embedded default written by `idp dev`. Delete it to start afresh.\n"
                     f'[server]\nsecret_key = "{secrets.token_urlsafe(48)}"\n')
    return DEV_CONFIG


def _ports(ctx, param, value: str) -> tuple[int, ...]:
    """``--agency-ports 5001,5002``: one distinct TCP port per demo agency."""
    try:
        ports = tuple(int(p) for p in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected {len(DEMO_AGENCIES)} ports separated by a comma, e.g. 5001,5002") from None
    if len(ports) != len(DEMO_AGENCIES) or len(set(ports)) != len(ports) or not all(0 < p < 65536 for p in ports):
        raise click.BadParameter(f"expected {len(DEMO_AGENCIES)} different ports from 1 to 65535, e.g. 5001,5002")
    return ports


@click.command()
@click.option("--agencies/--no-agencies", default=True, show_default=True,
              help="Also run the two demo agency apps.")
@click.option("--agency-ports", default=",".join(str(a[-1]) for a in DEMO_AGENCIES), show_default=True,
              callback=_ports, help="The demo agencies' ports (the provider's is [server] bind).")
@click.pass_context
def dev(ctx, agencies, agency_ports):
    """Run the embedded default: SQLite, in-process store, console SMS, demo data. One process."""
    obj: Context = ctx.obj
    if not obj.config_path:
        obj.config_path = str(_dev_config())
    run_dev(obj.settings, agency_ports if agencies else ())
