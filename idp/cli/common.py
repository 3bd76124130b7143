"""What every command module shares: the lazily built settings and app (``Context``),
``json_output``, the one way a command prints its result as text or, with ``--json``, as JSON,
and ``one_line``, the one way a failure is printed (Click's usage errors too).

May import: idp (create_app) and idp.platform.
"""
from __future__ import annotations

import functools
import json
import sys
from typing import Any, NamedTuple

import click

from .. import create_app
from ..platform.settings import Settings, load_settings


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
            # Operator commands need the database, not the signing keys.
            self._app = create_app(self.settings, require_keys=False)
        return self._app


pass_ctx = click.make_pass_decorator(Context)


class Output(NamedTuple):
    """What a command prints: ``data`` with --json, ``text`` otherwise (always ``text`` when
    ``data`` is None: a form with no JSON, such as CSV); then ``note``, one line on standard
    error, and exit status ``exit_code``. A command may return just ``data, text``."""

    data: Any
    text: str
    note: str | None = None
    exit_code: int = 0
    nl: bool = True


def json_output(fn=None, *, help: str | None = None):  # noqa: A002 - click's own name for it
    """Add ``--json`` to a command, which returns ``data, text`` (or an Output) rather than printing."""
    if fn is None:
        return lambda f: json_output(f, help=help)

    @functools.wraps(fn)
    def wrapper(*args, as_json: bool, **kwargs):
        out = fn(*args, **kwargs)
        if out is None:  # a group run with a subcommand: the subcommand prints
            return
        out = Output(*out)
        if as_json and out.data is not None:
            click.echo(json.dumps(out.data, ensure_ascii=False, indent=1, default=str))
        else:
            click.echo(out.text, nl=out.nl)
        if out.note:
            click.echo(out.note, err=True)
        if out.exit_code:
            sys.exit(out.exit_code)

    return click.option("--json", "as_json", is_flag=True, help=help)(wrapper)


class OneLineError(click.ClickException):
    """A failure as the project prints it: ``idp: ...``, one line on standard error, no usage block."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"idp: {self.message}", err=True)


def _command_path(ctx: click.Context | None) -> str:
    """``clients add`` for a subcommand's context (the root's own name left out: it is ``idp``)."""
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


def one_line(exc: click.ClickException) -> click.ClickException:
    """A Click error as one line in the project's style; a usage error names its command and where
    its help is (``idp: clients add: missing option '--name' (see idp clients add --help)``), with
    Click's exit status (2). ``idp`` or a group without a command still prints its help."""
    if isinstance(exc, (OneLineError, click.exceptions.NoArgsIsHelpError)):
        return exc
    message = " ".join(exc.format_message().split())
    if isinstance(exc, click.UsageError):
        message = message.removesuffix(".")
        if message[:2].istitle():  # "Missing option" -> "missing option", but not "ID ..."
            message = message[0].lower() + message[1:]
        path = _command_path(exc.ctx)
        help_hint = f"(see idp {path + ' ' if path else ''}--help)"
        message = f"{path}: {message} {help_hint}" if path else f"{message} {help_hint}"
    return OneLineError(message, exc.exit_code)
