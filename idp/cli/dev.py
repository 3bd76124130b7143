"""Running the embedded default, ``idp dev``: one process with demo data (``idp serve`` is in serve.py).

May import: everything in idp.
"""
from __future__ import annotations

import atexit
import importlib.util
import os
import secrets
import subprocess
import sys
from pathlib import Path

import click

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


def prepare_demo(app) -> list[dict]:
    """Schema, keys, demo citizens and demo agencies; returns the agencies with fresh secrets."""
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
        for client_id, name, name_fa, kind, host, port in DEMO_AGENCIES:
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


def _start_agencies(issuer: str, agencies: list[dict]) -> list[subprocess.Popen]:
    """Run each demo agency app as its own process, as a real agency would be."""
    if importlib.util.find_spec("clients.agency_web") is None:
        click.echo("(demo agency apps not found: run from the repository checkout)")
        return []
    procs = []
    for a in agencies:
        env = {**os.environ, "AGENCY_ISSUER": issuer, "AGENCY_CLIENT_ID": a["client_id"],
               "AGENCY_CLIENT_SECRET": a["client_secret"], "AGENCY_PORT": str(a["port"]), "AGENCY_KIND": a["kind"],
               "AGENCY_HOST": a["host"]}
        procs.append(subprocess.Popen([sys.executable, "-m", "clients.agency_web"], env=env))
    atexit.register(lambda: [p.terminate() for p in procs])
    return procs


def run_dev(settings: Settings, with_agencies: bool) -> None:
    """The embedded default: one process, memory:// store unless configured otherwise."""
    if settings.store.url == "memory://":
        click.echo("idp dev: one process only (the memory:// store lives inside it).")
    app = create_app(settings, require_keys=False)
    agencies = prepare_demo(app)
    host, _, port = settings.server.bind.rpartition(":")
    issuer = settings.server.issuer
    click.echo(f"\nNational identity provider: {issuer}  (discovery: {issuer}/.well-known/openid-configuration)")
    click.echo(f"Database: {settings.database.url}   Store: {settings.store.url}   SMS: {settings.sms.backend}")
    if not settings.limits.enabled:
        click.echo("WARNING: rate limits are OFF ([limits] enabled = false)")
    click.echo("\nDemo citizens (national ID / mobile):")
    for nid, mobile, birth, given, family, given_l, family_l in demo_citizens():
        click.echo(f"  {nid}  {'0' + mobile[3:]}  {given_l} {family_l}, born {birth}")
    if with_agencies:
        _start_agencies(issuer, agencies)
        click.echo("\nDemo agencies (log in to the first, then open the second: no code needed):")
        for a in agencies:
            click.echo(f"  {a['url']}  {a['name']}")
    click.echo("\nOne-time codes are printed here, on the console.\n")
    app.run(host=host or "127.0.0.1", port=int(port), threaded=True, use_reloader=False)


def _dev_config() -> Path:
    """instance/dev.toml with a fresh secret, created on first use and kept (stable pairwise subs)."""
    if not DEV_CONFIG.exists():
        DEV_CONFIG.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(DEV_CONFIG, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("# Embedded default written by `idp dev`. Delete it to start afresh.\n"
                     f'[server]\nsecret_key = "{secrets.token_urlsafe(48)}"\n')
    return DEV_CONFIG


@click.command()
@click.option("--agencies/--no-agencies", default=True, show_default=True,
              help="Also run the two demo agency apps (ports 5001 and 5002).")
@click.pass_context
def dev(ctx, agencies):
    """Run the embedded default: SQLite, in-process store, console SMS, demo data. One process."""
    obj: Context = ctx.obj
    if not obj.config_path:
        obj.config_path = str(_dev_config())
    run_dev(obj.settings, agencies)
