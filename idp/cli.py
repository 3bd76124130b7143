"""The ``idp`` command line: one function per command, ``--json`` wherever it prints data.

Every failure ends with one line on standard error and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import sys
from pathlib import Path

import click

from .config import ConfigError, Settings, example_toml, load_settings

DEV_CONFIG = Path("instance/dev.toml")


class Context:
    """Lazily loaded settings and app, so commands that need neither (keys generate) stay fast."""

    def __init__(self, config_path: str | None):
        self.config_path = config_path
        self._settings: Settings | None = None
        self._app = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    @property
    def app(self):
        if self._app is None:
            from . import create_app

            # Operator commands need the database, not the signing keys.
            self._app = create_app(self.settings, require_keys=False)
        return self._app


pass_ctx = click.make_pass_decorator(Context)


def emit(data, as_json: bool, text: str | None = None) -> None:
    """Print data as JSON or as the given text."""
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=1, default=str))
    else:
        click.echo(text if text is not None else data)


class Group(click.Group):
    """Turns expected failures into one line and exit status 1 (2 for configuration)."""

    def invoke(self, ctx):
        from .agencies import InvalidClientMetadata
        from .keys import KeysUnavailable
        from .registry import InvalidCitizen

        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"idp: configuration: {exc}", err=True)
            sys.exit(2)
        except (InvalidClientMetadata, InvalidCitizen, KeysUnavailable) as exc:
            click.echo(f"idp: {exc}", err=True)
            sys.exit(1)
        except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into one line
            from sqlalchemy.exc import SQLAlchemyError
            from redis import RedisError

            if isinstance(exc, (click.ClickException, click.exceptions.Exit, click.exceptions.Abort,
                                SystemExit, KeyboardInterrupt)):
                raise
            if isinstance(exc, SQLAlchemyError):
                click.echo(f"idp: database: {str(exc.orig if hasattr(exc, 'orig') and exc.orig else exc).splitlines()[0]}"
                           " (did you run `idp db upgrade`?)", err=True)
            elif isinstance(exc, RedisError):
                click.echo(f"idp: store: {exc}", err=True)
            else:
                click.echo(f"idp: {exc.__class__.__name__}: {exc}", err=True)
            sys.exit(1)


@click.group(cls=Group)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="IDP_CONFIG",
              help="TOML config file (default: $IDP_CONFIG; built-in defaults otherwise).")
@click.pass_context
def main(ctx, config_path):
    """National identity provider (OpenID Connect)."""
    ctx.obj = Context(config_path)


# ---- config ------------------------------------------------------------------------------------

@main.group()
def config():
    """Configuration helpers."""


@config.command("example")
def config_example():
    """Print config.example.toml (every key, documented)."""
    click.echo(example_toml(), nl=False)


@config.command("secret")
def config_secret():
    """Print a new random master secret for [server] secret_key."""
    click.echo(secrets.token_urlsafe(48))


@config.command("show")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def config_show(obj: Context, as_json):
    """Print the effective settings (secrets masked)."""
    data = obj.settings.as_dict()
    emit(data, as_json, "\n".join(f"[{s}] {k} = {v!r}" for s, keys in data.items() for k, v in keys.items()))


# ---- database ----------------------------------------------------------------------------------

@main.group()
def db():
    """Database schema."""


def migrations_dir() -> str:
    return str(Path(__file__).resolve().parent.parent / "migrations")


def upgrade_database(app) -> None:
    """Apply every migration (SQLite file directories are created first)."""
    from flask_migrate import upgrade

    url = app.extensions["idp.settings"].database.url
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
    with app.app_context():
        upgrade(directory=migrations_dir())


@db.command("upgrade")
@pass_ctx
def db_upgrade(obj: Context):
    """Create or upgrade the schema to the latest migration."""
    upgrade_database(obj.app)
    click.echo("database is up to date")


# ---- keys --------------------------------------------------------------------------------------

@main.group()
def keys():
    """Signing keys."""


@keys.command("generate")
@click.option("--alg", type=click.Choice(["RS256", "ES256", "all"]), default="all", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def keys_generate(obj: Context, alg, as_json):
    """Create new active signing keys in [keys] dir (private files mode 0600)."""
    from . import keys as keymod

    algs = keymod.ALGORITHMS if alg == "all" else (alg,)
    made = [keymod.generate(obj.settings.keys.dir, a) for a in algs]
    rows = [{"kid": k.kid, "alg": k.alg, "status": k.status, "created_at": k.created_at} for k in made]
    emit(rows, as_json, "\n".join(f"{r['alg']}  {r['kid']}  {r['status']}" for r in rows))


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def keys_list(obj: Context, as_json):
    """List the keys in [keys] dir."""
    from . import keys as keymod

    rows = [{"kid": k.kid, "alg": k.alg, "status": k.status, "created_at": k.created_at}
            for k in keymod.load_all(obj.settings.keys.dir)]
    emit(rows, as_json, "\n".join(f"{r['alg']}  {r['kid']}  {r['status']}  {r['created_at']}" for r in rows)
         or "no keys (create them: idp keys generate)")


# ---- clients -----------------------------------------------------------------------------------

@main.group()
def clients():
    """Agency clients."""


def _client_row(client) -> dict:
    return {"client_id": client.client_id, "name": client.name, "name_fa": client.name_fa,
            "redirect_uris": client.redirect_uris, "scope": client.scope,
            "token_endpoint_auth_method": client.token_endpoint_auth_method,
            "trusted": client.trusted, "disabled": client.disabled_at is not None}


@clients.command("add")
@click.option("--name", required=True, help="Agency service name (English).")
@click.option("--name-fa", help="Agency service name in Persian.")
@click.option("--redirect-uri", "redirect_uris", multiple=True, required=True)
@click.option("--post-logout-redirect-uri", "post_logout", multiple=True)
@click.option("--scope", default="openid profile", show_default=True)
@click.option("--public", is_flag=True, help="A mobile or single-page app: no secret, PKCE only.")
@click.option("--trusted", is_flag=True, help="A government agency that needs no consent page.")
@click.option("--client-id", help="Choose the client_id (default: random).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def clients_add(obj: Context, name, name_fa, redirect_uris, post_logout, scope, public, trusted, client_id,
                as_json):
    """Register a client; prints client_id and client_secret once."""
    from .agencies import register_client

    with obj.app.app_context():
        client, secret = register_client(name, list(redirect_uris), name_fa=name_fa,
                                         post_logout_redirect_uris=list(post_logout), scope=scope,
                                         public=public, trusted=trusted, client_id=client_id)
        data = {"client_id": client.client_id, "client_secret": secret}
    emit(data, as_json, f"client_id: {data['client_id']}\nclient_secret: {secret or '(none: public client)'}\n"
                        "The secret is shown only now; it is stored hashed.")


@clients.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def clients_list(obj: Context, as_json):
    """List registered clients."""
    from .agencies import list_clients

    with obj.app.app_context():
        rows = [_client_row(c) for c in list_clients()]
    emit(rows, as_json, "\n".join(f"{r['client_id']}  {r['name']}  {' '.join(r['redirect_uris'])}"
                                  for r in rows) or "no clients")


# ---- citizens ----------------------------------------------------------------------------------

@main.group()
def citizens():
    """The citizen registry."""


@citizens.command("add")
@click.option("--national-id", required=True)
@click.option("--mobile", required=True)
@click.option("--birth-date", required=True, help="YYYY-MM-DD")
@click.option("--given-name")
@click.option("--family-name")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def citizens_add(obj: Context, national_id, mobile, birth_date, given_name, family_name, as_json):
    """Add one citizen."""
    from .national_id import mask_mobile
    from .registry import add_citizen

    with obj.app.app_context():
        c = add_citizen(national_id=national_id, mobile=mobile, birth_date=birth_date, given_name=given_name,
                        family_name=family_name)
        data = {"national_id": c.national_id, "mobile": c.mobile, "birth_date": c.birth_date.isoformat()}
    emit(data, as_json, f"added {data['national_id']} ({mask_mobile(data['mobile'])})")


@citizens.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="Write the rejected rows here (CSV, or JSON lines for .jsonl/.ndjson/.json) "
                   "[default: FILE.rejected.csv when any row is rejected].")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def citizens_import(obj: Context, file, report_path, as_json):
    """Import citizens from CSV (header: national_id,mobile,birth_date[,given_name,family_name,
    given_name_latin,family_name_latin]) or JSON lines, in one transaction. Known national IDs
    get the file's mobile, names and birth date; bad rows are reported, not loaded."""
    from .registry import import_file

    with obj.app.app_context():
        r = import_file(file, report_path)
    lines = [f"loaded {r.loaded:,} (inserted {r.inserted:,}, updated {r.updated:,}, unchanged {r.unchanged:,}), "
             f"rejected {r.rejected:,}; {r.rows:,} rows in {r.seconds:.1f} s ({r.rows_per_second:,.0f} rows/s)"]
    lines += [f"  line {x['line']}: {x['reason']}" for x in r.rejections[:20]]
    if r.rejected > 20:
        lines.append(f"  ... and {r.rejected - 20:,} more")
    if r.report_path:
        lines.append(f"rejected rows: {r.report_path}")
    emit(r.as_dict(), as_json, "\n".join(lines))


# ---- stats -------------------------------------------------------------------------------------

@main.command()
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def stats(obj: Context, as_json):
    """The national figures so far: unique adults, adult population, coverage."""
    from .stats import totals

    with obj.app.app_context():
        data = totals()
    emit(data, as_json, f"unique adults who have authenticated: {data['unique_adults']:,}\n"
                        f"adult population: {data['adult_population']:,}\n"
                        f"coverage: {data['coverage_percent']:.2f}%")


# ---- audit -------------------------------------------------------------------------------------

@main.group()
def audit():
    """The append-only audit trail."""


@audit.command("tail")
@click.option("-n", "--lines", "count", default=20, show_default=True, type=click.IntRange(1, 10000))
@click.option("--event", help="Only this event (login_started, otp_wrong, cooloff_started, ...).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def audit_tail(obj: Context, count, event, as_json):
    """The latest audit events, oldest first (identifiers appear only as fingerprints)."""
    from .audit import latest

    with obj.app.app_context():
        rows = latest(count, event)
    emit(rows, as_json, "\n".join(
        f"{r['occurred_at']}  {r['event']:<18} client={r['client_id'] or '-'} subject={r['subject_fp'] or '-'} "
        f"ip={r['ip_fp'] or '-'} {json.dumps(r['details'], ensure_ascii=False) if r['details'] else ''}".rstrip()
        for r in rows) or "no audit events")


# ---- running -----------------------------------------------------------------------------------

def _dev_config() -> Path:
    """instance/dev.toml with a fresh secret, created on first use and kept (stable pairwise subs)."""
    if not DEV_CONFIG.exists():
        DEV_CONFIG.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(DEV_CONFIG, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("# Embedded default written by `idp dev`. Delete it to start afresh.\n"
                     f'[server]\nsecret_key = "{secrets.token_urlsafe(48)}"\n')
    return DEV_CONFIG


@main.command()
@click.option("--agencies/--no-agencies", default=True, show_default=True,
              help="Also run the two demo agency apps (ports 5001 and 5002).")
@click.pass_context
def dev(ctx, agencies):
    """Run the embedded default: SQLite, in-process store, console SMS, demo data. One process."""
    from .devserver import run_dev

    obj: Context = ctx.obj
    if not obj.config_path:
        obj.config_path = str(_dev_config())
    run_dev(obj.settings, agencies)


@main.command()
@pass_ctx
def serve(obj: Context):
    """Run in production: gunicorn workers, PostgreSQL and Redis."""
    from .devserver import run_production

    run_production(obj.settings)


if __name__ == "__main__":
    main()
