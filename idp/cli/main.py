"""The root ``idp`` group: ``--config``, the command groups of the modules beside this one, and
the one place where failures become one line on standard error and a non-zero exit, never a
traceback.

May import: everything in idp.
"""
from __future__ import annotations

import sys

import click
from redis import RedisError
from sqlalchemy.exc import SQLAlchemyError

from ..citizens.records import InvalidCitizen
from ..platform.keys import KeysUnavailable
from ..platform.settings import ConfigError
from ..protocol.agencies import InvalidClientMetadata
from ..protocol.delegations import InvalidDelegation
from . import audit, citizens, clients, config_cmd, consents, delegations, dev, keys, serve, sessions, stats
from .common import Context, one_line


class Group(click.Group):
    """Turns expected failures into one line and exit status 1 (2 for configuration and usage)."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as exc:  # idp --bogus
            raise one_line(exc) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            click.echo(f"idp: configuration: {exc}", err=True)
            sys.exit(2)
        except (InvalidClientMetadata, InvalidCitizen, InvalidDelegation, KeysUnavailable) as exc:
            click.echo(f"idp: {exc}", err=True)
            sys.exit(1)
        except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into one line
            if isinstance(exc, click.ClickException):  # usage errors of subcommands, and commands' own
                raise one_line(exc) from None
            if isinstance(exc, (click.exceptions.Exit, click.exceptions.Abort, SystemExit, KeyboardInterrupt)):
                raise
            if isinstance(exc, SQLAlchemyError):
                click.echo(f"idp: database: {str(exc.orig if hasattr(exc, 'orig') and exc.orig else exc).splitlines()[0]}"
                           " (did you run `idp db upgrade`?)", err=True)
            elif isinstance(exc, RedisError):
                click.echo(f"idp: store: {exc}", err=True)
            elif isinstance(exc, OSError) and exc.strerror:  # a file: its name and what is wrong, no class name
                click.echo(f"idp: {f'{exc.filename}: ' if exc.filename else ''}{exc.strerror}", err=True)
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


for command in (config_cmd.config, config_cmd.db, keys.keys, clients.clients, delegations.delegations,
                citizens.citizens, stats.stats, consents.consents, sessions.sessions, sessions.logout, audit.audit,
                dev.dev, serve.serve):
    main.add_command(command)


if __name__ == "__main__":
    main()
