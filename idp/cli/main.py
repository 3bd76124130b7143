"""The ``idp`` command line: one function per command, ``--json`` wherever it prints data.

Every failure ends with one line on standard error and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

import click

from ..platform.database import upgrade_database
from ..platform.settings import ConfigError, Settings, example_toml, load_settings

DEV_CONFIG = Path("instance/dev.toml")
#: `idp citizens import`: the valid rows were imported, some rows were rejected.
EXIT_ROWS_REJECTED = 3


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
            from .. import create_app

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
        from ..citizens.records import InvalidCitizen
        from ..platform.keys import KeysUnavailable
        from ..protocol.agencies import InvalidClientMetadata

        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"idp: configuration: {exc}", err=True)
            sys.exit(2)
        except (InvalidClientMetadata, InvalidCitizen, KeysUnavailable) as exc:
            click.echo(f"idp: {exc}", err=True)
            sys.exit(1)
        except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into one line
            from redis import RedisError
            from sqlalchemy.exc import SQLAlchemyError

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
    from ..platform import keys as keymod

    algs = keymod.ALGORITHMS if alg == "all" else (alg,)
    have = {k.alg: k.kid for k in keymod.load_all(obj.settings.keys.dir) if k.status == "active"}
    if clash := [a for a in algs if a in have]:
        # A new active key would sign at once, before agencies' cached JWKS hold it.
        raise keymod.KeysUnavailable(f"keys generate: an active {clash[0]} key exists ({have[clash[0]][:12]}); "
                                     "replace it with `idp keys rotate`, which publishes the new key before it signs")
    made = [keymod.generate(obj.settings.keys.dir, a) for a in algs]
    rows = [{"kid": k.kid, "alg": k.alg, "status": k.status, "created_at": k.created_at} for k in made]
    emit(rows, as_json, "\n".join(f"{r['alg']}  {r['kid']}  {r['status']}" for r in rows))


def _max_token_ttl(settings) -> int:
    """The longest lifetime of a token our keys sign: a retired key stays published that long."""
    return max(settings.tokens.access_token_ttl, settings.tokens.id_token_ttl)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def keys_list(obj: Context, as_json):
    """List the keys in [keys] dir with their status, dates and next rotation step."""
    from ..platform import keys as keymod

    rows = keymod.describe(keymod.load_all(obj.settings.keys.dir), _max_token_ttl(obj.settings))

    def line(r):
        step = (f"  signs from {r['promote_from']} (idp keys rotate)" if r["promote_from"] else
                f"  leaves the JWKS from {r['remove_from']} (idp keys rotate)" if r["remove_from"] else "")
        return (f"{r['alg']}  {r['kid']}  {r['status']:<7}  created {r['created_at']}"
                + (f"  active since {r['activated_at']}" if r["activated_at"] and r["status"] != "next" else "")
                + (f"  retired {r['retired_at']}" if r["retired_at"] else "") + step)

    emit(rows, as_json, "\n".join(line(r) for r in rows) or "no keys (create them: idp keys generate)")


@keys.command("rotate")
@click.option("--alg", type=click.Choice(["RS256", "ES256", "all"]), default="all", show_default=True)
@click.option("--force", is_flag=True,
              help="Emergency (a compromised key): promote a new key at once, without waiting for "
                   "agencies' cached JWKS to have it.")
@click.option("--withdraw", is_flag=True,
              help="With --force: remove the old key from the JWKS at once (its tokens stop verifying).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def keys_rotate(obj: Context, alg, force, withdraw, as_json):
    """One step of a rotation that breaks no one. Run it twice: the first run publishes a `next`
    key (it signs nothing yet); a run once that key has been published longer than agencies cache
    the JWKS (2 x 300 s) makes it sign and retires the old key, which stays published until every
    token it signed has expired; a later run removes it."""
    from ..platform import keys as keymod

    algs = None if alg == "all" else (alg,)
    rows = keymod.rotate(obj.settings.keys.dir, _max_token_ttl(obj.settings), algs=algs, force=force,
                         withdraw=withdraw)
    text = {"next_created": "next key {kid} published; it signs after `idp keys rotate` from {promote_from}",
            "promoted": "key {kid} now signs",
            "retired": "key {kid} retired: still published until {remove_from}, then removed by `idp keys rotate`",
            "removed": "retired key {kid} removed from the JWKS",
            "withdrawn": "key {kid} withdrawn from the JWKS at once"}
    emit(rows, as_json, "\n".join(f"{r['alg']}  " + text[r["action"]].format(**r) for r in rows)
         or "nothing to do")


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
@click.option("--auth-method", type=click.Choice(["client_secret_basic", "client_secret_post", "private_key_jwt",
                                                  "none"]),
              help="How the client authenticates at the token endpoint [default: client_secret_basic].")
@click.option("--public", is_flag=True,
              help="A mobile or single-page app: no secret, PKCE only (= --auth-method none).")
@click.option("--jwks-uri", help="private_key_jwt: https URL of the client's public JWKS.")
@click.option("--jwks", "jwks_file", type=click.Path(dir_okay=False),
              help="private_key_jwt: file holding the client's public JWKS (private keys are refused).")
@click.option("--backchannel-logout-uri", help="Where the client receives back-channel logout tokens.")
@click.option("--subject-type", type=click.Choice(["pairwise", "public"]), default="pairwise", show_default=True)
@click.option("--sector", help="Sector identifier host for pairwise subjects (needed when the redirect URIs "
                               "are on several hosts).")
@click.option("--allow-national-id", is_flag=True, help="The client may receive the national_id scope.")
@click.option("--trusted", is_flag=True, help="A government agency that needs no consent page.")
@click.option("--client-id", help="Choose the client_id (default: random).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def clients_add(obj: Context, name, name_fa, redirect_uris, post_logout, scope, auth_method, public, jwks_uri,
                jwks_file, backchannel_logout_uri, subject_type, sector, allow_national_id, trusted, client_id,
                as_json):
    """Register a client; prints client_id and client_secret once."""
    from ..platform import audit
    from ..protocol.agencies import read_jwks_file, register_client

    jwks = read_jwks_file(jwks_file) if jwks_file else None
    with obj.app.app_context():
        client, secret = register_client(name, list(redirect_uris), name_fa=name_fa,
                                         post_logout_redirect_uris=list(post_logout), scope=scope,
                                         public=public, trusted=trusted, client_id=client_id,
                                         auth_method=auth_method, jwks=jwks, jwks_uri=jwks_uri,
                                         backchannel_logout_uri=backchannel_logout_uri, subject_type=subject_type,
                                         sector=sector, allow_national_id=allow_national_id)
        method = client.token_endpoint_auth_method
        audit.record("client_registered", client_id=client.client_id, auth_method=method)
        data = {"client_id": client.client_id, "client_secret": secret}
    none = "(none: public client)" if method == "none" else f"(none: authenticates with {method})"
    emit(data, as_json, f"client_id: {data['client_id']}\nclient_secret: {secret or none}"
                        + ("\nThe secret is shown only now; it is stored hashed." if secret else ""))


@clients.command("show")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def clients_show(obj: Context, client_id, as_json):
    """Show a client's registration (never its secret)."""
    from ..protocol.agencies import describe_client, get_client

    with obj.app.app_context():
        data = describe_client(get_client(client_id))
    meta = data["metadata"]
    lines = [f"client_id: {data['client_id']}",
             f"name: {data['name']}" + (f" / {data['name_fa']}" if data["name_fa"] else ""),
             f"status: {'disabled since ' + data['disabled_at'] if data['disabled_at'] else 'enabled'}",
             f"auth method: {data['token_endpoint_auth_method']}", f"trusted: {'yes' if data['trusted'] else 'no'}",
             f"created: {data['created_at']}"]
    def show(v):
        return " ".join(v) if isinstance(v, list) else json.dumps(v, ensure_ascii=False) if isinstance(v, dict) else v

    lines += [f"{k}: {show(v)}" for k, v in meta.items() if k != "token_endpoint_auth_method"]
    emit(data, as_json, "\n".join(lines))


@clients.command("rotate-secret")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def clients_rotate_secret(obj: Context, client_id, as_json):
    """Give a client a new secret, printed once; the old one stops working at once."""
    from ..platform import audit
    from ..protocol.agencies import get_client, rotate_secret

    with obj.app.app_context():
        client = get_client(client_id)
        secret = rotate_secret(client)
        audit.record("client_secret_rotated", client_id=client.client_id)
    data = {"client_id": client_id, "client_secret": secret}
    emit(data, as_json, f"client_id: {client_id}\nclient_secret: {secret}\n"
                        "The secret is shown only now; it is stored hashed. The old secret no longer works.")


def _set_enabled(obj: Context, client_id: str, enabled: bool, as_json: bool) -> None:
    from ..platform import audit
    from ..protocol.agencies import get_client, set_enabled

    with obj.app.app_context():
        client = get_client(client_id)
        changed = set_enabled(client, enabled)
        if changed:
            audit.record("client_enabled" if enabled else "client_disabled", client_id=client_id)
    state = "enabled" if enabled else "disabled"
    emit({"client_id": client_id, "status": state, "changed": changed}, as_json,
         f"client {client_id} {state}" if changed else f"client {client_id} was already {state}")


@clients.command("disable")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def clients_disable(obj: Context, client_id, as_json):
    """Stop a client at once: no logins, tokens or userinfo for it until it is enabled again."""
    _set_enabled(obj, client_id, False, as_json)


@clients.command("enable")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def clients_enable(obj: Context, client_id, as_json):
    """Let a disabled client work again."""
    _set_enabled(obj, client_id, True, as_json)


@clients.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def clients_list(obj: Context, as_json):
    """List registered clients."""
    from ..protocol.agencies import list_clients

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
    from ..citizens.national_id import mask_mobile
    from ..citizens.records import add_citizen

    with obj.app.app_context():
        c = add_citizen(national_id=national_id, mobile=mobile, birth_date=birth_date, given_name=given_name,
                        family_name=family_name)
        data = {"national_id": c.national_id, "mobile": c.mobile, "birth_date": c.birth_date.isoformat()}
    emit(data, as_json, f"added {data['national_id']} ({mask_mobile(data['mobile'])})")


@citizens.command("import")
@click.argument("file", type=click.Path())  # checked by import_file: one-line errors, exit 1
@click.option("--report", "report_path", type=click.Path(),
              help="Write the rejected rows here (CSV, or JSON lines for .jsonl/.ndjson/.json) "
                   "[default: FILE.rejected.csv when any row is rejected].")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def citizens_import(obj: Context, file, report_path, as_json):
    """Import citizens from CSV (header: national_id and any of mobile, birth_date, given_name,
    family_name, given_name_latin, family_name_latin) or JSON lines (one object per line with
    those keys), in one transaction, recorded as one registry_imported audit event.

    Only the columns the file holds are written: a column absent from the CSV header, or a key
    absent from a JSON line, keeps its value for a known citizen. An empty name in a present
    column clears it; an empty mobile or birth date rejects the row. A new citizen needs
    national_id, mobile and birth_date. An unknown CSV column refuses the file; an unknown JSON
    key rejects its row. Rejected rows are reported; the valid rows are still imported.

    \b
    Exit status:
      0  every row imported
      3  some rows rejected (the valid ones imported; the report printed, --json too)
      1  nothing imported: the file cannot be read, is refused, or the database failed
      2  usage or configuration error
    """
    from ..citizens.importer import import_file

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
    if r.rejected:
        click.echo(f"idp: {r.rejected:,} of {r.rows:,} rows rejected, {r.loaded:,} imported; see {r.report_path}",
                   err=True)
        sys.exit(EXIT_ROWS_REJECTED)


# ---- stats -------------------------------------------------------------------------------------

def _stats_day(value):
    """A --from/--to/--day/--before value: YYYY-MM-DD, Gregorian or Jalali (year before 1700)."""
    from ..stats.calendars import StatsError, parse_day

    if value is None:
        return None
    try:
        return parse_day(value)
    except StatsError as exc:
        raise click.BadParameter(str(exc)) from None


def _stats_errors(fn):
    """StatsError -> one line and exit 1."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ..stats.calendars import StatsError

        try:
            return fn(*args, **kwargs)
        except StatsError as exc:
            click.echo(f"idp: stats: {exc}", err=True)
            sys.exit(1)
    return wrapper


@main.group(invoke_without_command=True)
@click.option("--from", "date_from", callback=lambda c, p, v: _stats_day(v),
              help="First day (YYYY-MM-DD; a year before 1700 is Jalali) [default: 30 days, or 12 months].")
@click.option("--to", "date_to", callback=lambda c, p, v: _stats_day(v), help="Last day [default: today].")
@click.option("--by", type=click.Choice(["day", "month"]), default="day", show_default=True)
@click.option("--calendar", type=click.Choice(["gregorian", "jalali"]), default="gregorian", show_default=True,
              help="Dates, month names and month boundaries.")
@click.option("--agency", help="Only this client_id's logins, unique citizens and new adults.")
@click.option("--json", "as_json", is_flag=True, help="JSON (unique_adults, adult_population, coverage_percent, ...).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV: one line per period, then per period and agency.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Also draw daily unique citizens and cumulative unique adults to FILE (.png or .svg).")
@click.pass_context
@_stats_errors
def stats(ctx, date_from, date_to, by, calendar, agency, as_json, as_csv, plot_path):
    """The national figures: unique adults, coverage, today, this month, per day or month and agency.

    Subcommands: rollup (closed days into durable tables; run it from cron), prune (raw events
    already rolled up)."""
    if ctx.invoked_subcommand is not None:
        return
    from ..stats import chart
    from ..stats import report as st

    obj: Context = ctx.obj
    with obj.app.app_context():
        data = st.report(date_from, date_to, by=by, calendar=calendar, agency=agency)
        if plot_path:
            chart.plot(data, plot_path)
    data.pop("_series", None)
    if as_csv:
        click.echo(st.as_csv(data), nl=False)
    else:
        emit(data, as_json, st.as_text(data))
    if plot_path:
        click.echo(f"chart: {plot_path}", err=True)


@stats.command("rollup")
@click.option("--day", callback=lambda c, p, v: _stats_day(v),
              help="Recompute this closed day (default: every closed day not rolled up yet).")
@click.option("--population/--no-population", default=None,
              help="Refresh the registry's birth-date snapshot [default: once a day].")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@_stats_errors
def stats_rollup(obj: Context, day, population, as_json):
    """Compute closed days exactly from auth events into the daily rollups, close finished months.
    Idempotent; safe to run from cron on every node at once."""
    from ..stats.rollups import rollup

    with obj.app.app_context():
        data = rollup(day, population)
    lines = [f"{d['day']}: " + (d["skipped"] if "skipped" in d else
                                f"{d['logins']:,} logins, {d['unique_citizens']:,} unique citizens, "
                                f"{d['new_adults']:,} new adults, {d['clients']} agencies ({d['seconds']} s)")
             for d in data["days"]]
    lines += [f"month {m['month']} ({'Jalali' if m['calendar'] == 'j' else 'Gregorian'}) closed: "
              f"{m['unique_citizens']:,} unique citizens" for m in data["months"]]
    if data["population"]:
        p = data["population"]
        lines.append(f"population snapshot: {p['citizens']:,} citizens, {p['birth_dates']:,} birth dates "
                     f"({p['seconds']} s)")
    emit(data, as_json, "\n".join(lines) or "nothing to roll up")


@stats.command("prune")
@click.option("--before", required=True, callback=lambda c, p, v: _stats_day(v),
              help="Delete raw auth events of days before this one (only rolled-up days of closed months).")
@click.option("--batch", default=50000, show_default=True, type=click.IntRange(100, 1000000))
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@_stats_errors
def stats_prune(obj: Context, before, batch, as_json):
    """Delete raw auth events whose figures are final (retention of auth_events)."""
    from ..stats.rollups import prune

    with obj.app.app_context():
        data = prune(before, batch)
    text = f"deleted {data['deleted']:,} auth events before {data['pruned_before']}"
    if data["held_back"]:
        text += f" (not before {data['requested_before']}: {data['held_back']})"
    emit(data, as_json, text)


# ---- consents ----------------------------------------------------------------------------------

@main.group()
def consents():
    """What citizens allowed non-trusted agency services to receive."""


def _citizen_by_national_id(national_id: str):
    """The citizen with this national ID (Persian digits accepted), or a one-line error."""
    from ..citizens import directory
    from ..citizens.national_id import InvalidNationalId, parse_national_id

    try:
        national_id = parse_national_id(national_id)
    except InvalidNationalId:
        raise click.ClickException("not a valid national ID") from None
    registered = directory.find(national_id)
    if registered is None:
        raise click.ClickException("no citizen with this national ID")
    return national_id, registered.citizen


@consents.command("list")
@click.option("--national-id", required=True)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def consents_list(obj: Context, national_id, as_json):
    """The services a citizen has allowed, and what each receives."""
    from ..protocol.consent import granted

    with obj.app.app_context():
        rows = [g.as_dict() for g in granted(_citizen_by_national_id(national_id)[1].id)]
    emit(rows, as_json, "\n".join(f"{r['client_id']}  {r['name']}  [{r['scope']}]  since {r['granted_at']}"
                                  for r in rows) or "no consents")


@consents.command("revoke")
@click.option("--national-id", required=True)
@click.option("--client", "client_id", required=True, help="The client_id whose grant is withdrawn.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def consents_revoke(obj: Context, national_id, client_id, as_json):
    """Withdraw a citizen's grant to one service (it asks again at the next sign-in)."""
    from ..platform.audit import record
    from ..protocol.agencies import ClientNotFound, get_client
    from ..protocol.consent import withdraw

    with obj.app.app_context():
        nid, citizen = _citizen_by_national_id(national_id)
        try:
            get_client(client_id)
        except ClientNotFound:
            raise click.ClickException(f"no client {client_id!r}") from None
        if not withdraw(citizen.id, client_id):
            raise click.ClickException(f"this citizen has no consent for client {client_id!r}")
        record("consent_withdrawn", national_id=nid, client_id=client_id, via="cli")
    emit({"client_id": client_id, "withdrawn": True}, as_json, f"consent for {client_id} withdrawn")


# ---- sessions and logout ---------------------------------------------------------------------

@main.group()
def sessions():
    """Single sign-on sessions."""


@sessions.command("revoke")
@click.option("--national-id", required=True, help="The citizen to log out everywhere.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def sessions_revoke(obj: Context, national_id, as_json):
    """Log a citizen out everywhere: every live SSO session ends and the agencies that took part
    are told by back-channel logout (queued; the running servers deliver them)."""
    from ..citizens import directory
    from ..citizens.national_id import mask_national_id, parse_national_id
    from ..protocol import logout as logout_mod

    if obj.settings.store.url == "memory://":
        click.echo("idp: warning: [store] url is memory://, which only the serving process can see; "
                   "no session of a running server can be found from here", err=True)
    try:
        nid = parse_national_id(national_id)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--national-id") from None
    with obj.app.app_context():
        registered = directory.find(nid)
        if registered is None:
            click.echo(f"idp: no citizen with national ID {mask_national_id(nid)}", err=True)
            sys.exit(1)
        ended, queued = logout_mod.logout_everywhere(registered.citizen.id, "operator")
    data = {"national_id": mask_national_id(nid), "sessions_ended": ended, "backchannel_queued": queued}
    emit(data, as_json, f"ended {ended} session(s) of {data['national_id']}; "
                        f"{queued} back-channel logout(s) queued")


@main.group()
def logout():
    """Back-channel logout deliveries."""


@logout.command("deliver")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def logout_deliver(obj: Context, as_json):
    """Deliver the due back-channel logouts once (for cron; the servers also do it themselves)."""
    from ..protocol import backchannel

    with obj.app.app_context():
        result = backchannel.sweep(limit=10_000)
    data = result.as_dict()
    emit(data, as_json, f"due {data['due']}, delivered {data['delivered']}, retrying later {data['retrying']}, "
                        f"given up {data['given_up']}")


# ---- audit -------------------------------------------------------------------------------------

@main.group()
def audit():
    """The append-only audit trail."""


@audit.command("tail")
@click.option("-n", "--lines", "count", default=20, show_default=True, type=click.IntRange(1, 10000))
@click.option("--event", help="Only this event (login_started, otp_wrong, cooloff_started, registry_imported, ...).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def audit_tail(obj: Context, count, event, as_json):
    """The latest audit events, oldest first (identifiers appear only as fingerprints)."""
    from ..platform.audit import latest

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
    from .dev import run_dev

    obj: Context = ctx.obj
    if not obj.config_path:
        obj.config_path = str(_dev_config())
    run_dev(obj.settings, agencies)


@main.command()
@pass_ctx
def serve(obj: Context):
    """Run in production: granian workers, PostgreSQL and Redis."""
    from .serve import run_production

    run_production(obj.settings)


if __name__ == "__main__":
    main()
