"""``idp config`` (example, secret, show) and ``idp db upgrade``: setting a node up.

May import: idp.platform, .common.
"""
from __future__ import annotations

import secrets

import click

from ..platform.database import upgrade_database
from ..platform.settings import example_toml
from .common import Context, json_output, pass_ctx


@click.group()
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
@json_output
@pass_ctx
def config_show(obj: Context):
    """Print the effective settings (secrets masked)."""
    data = obj.settings.as_dict()
    return data, "\n".join(f"[{s}] {k} = {v!r}" for s, keys in data.items() for k, v in keys.items())


@click.group()
def db():
    """Database schema."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(obj: Context):
    """Create or upgrade the schema to the latest migration."""
    upgrade_database(obj.app)
    click.echo("database is up to date")
