"""Running the provider: ``idp dev`` (embedded default, one process) and ``idp serve`` (gunicorn)."""
from __future__ import annotations

import atexit
import gc
import importlib.util
import os
import subprocess
import sys
from urllib.parse import urlsplit

import click

from .config import Settings


def prepare_demo(app) -> list[dict]:
    """Schema, keys, demo citizens and demo agencies; returns the agencies with fresh secrets."""
    from . import keys
    from .agencies import register_client, rotate_secret
    from .cli import upgrade_database
    from .demo import DEMO_AGENCIES, demo_citizens
    from .extensions import db
    from .models import Citizen, Client

    settings = app.extensions["idp.settings"]
    upgrade_database(app)
    keys.ensure(settings.keys.dir)
    app.extensions["idp.keyring"].reload({settings.keys.id_token_alg, settings.keys.access_token_alg})
    agencies = []
    with app.app_context():
        for nid, mobile, birth, given, family, given_l, family_l in demo_citizens():
            if not db.session.execute(db.select(Citizen.id).filter_by(national_id=nid)).first():
                db.session.add(Citizen(national_id=nid, mobile=mobile, birth_date=birth, given_name=given,
                                       family_name=family, given_name_latin=given_l, family_name_latin=family_l))
        db.session.commit()
        for client_id, name, name_fa, kind, host, port in DEMO_AGENCIES:
            base = f"http://{host}:{port}"
            client = db.session.execute(db.select(Client).filter_by(client_id=client_id)).scalar_one_or_none()
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
    from . import create_app
    from .demo import demo_citizens

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


def _warm_templates(app) -> None:
    """Compile every template once in the master (preload_app), so that the forked workers share
    the compiled code instead of each compiling it on its first requests."""
    for name in app.jinja_env.list_templates():
        if name.endswith(".html"):
            app.jinja_env.get_template(name)


def run_production(settings: Settings) -> None:
    """gunicorn with gthread workers; refuses settings that only make sense in development."""
    from gunicorn.app.base import BaseApplication

    from . import create_app

    if settings.store.url == "memory://":
        raise click.ClickException("[store] url: memory:// cannot be shared by gunicorn workers; use redis://")
    if not settings.database.url.startswith("postgresql"):
        click.echo("idp serve: warning: [database] url is not PostgreSQL", err=True)
    if not settings.limits.enabled:
        click.echo("idp serve: WARNING: rate limits are OFF ([limits] enabled = false)", err=True)
    host = urlsplit(settings.server.issuer).hostname or ""
    click.echo(f"idp serve: issuer {settings.server.issuer} on {settings.server.bind} ({host})", err=True)

    class Application(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", settings.server.bind)
            self.cfg.set("workers", settings.server.workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", settings.server.threads)
            self.cfg.set("preload_app", True)
            self.cfg.set("accesslog", None)
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("timeout", 30)
            self.cfg.set("forwarded_allow_ips", "*" if settings.server.proxy_hops else "127.0.0.1")
            self.cfg.set("post_worker_init", post_worker_init)

        def load(self):
            app = create_app(settings)
            _warm_templates(app)
            # What the master built stays put: the collector no longer walks (and so no longer
            # writes to) those objects, so forked workers keep sharing their pages and each
            # collection in a worker has less to scan.
            gc.collect()
            gc.freeze()
            return app

    def post_worker_init(worker):
        """Each worker sweeps back-channel logouts left undelivered (e.g. by a restart) at once."""
        from .logout import ensure_worker

        ensure_worker(worker.wsgi)

    from .metrics import prepare_multiprocess
    prepare_multiprocess(settings)  # before the app is built: gunicorn workers share metric files
    Application().run()
