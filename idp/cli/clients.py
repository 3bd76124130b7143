"""``idp clients``: register, show, list, enable and disable agency clients, rotate their secrets.

May import: idp.platform, idp.protocol, .common.
"""
from __future__ import annotations

import json

import click

from ..platform import audit
from ..protocol.agencies import (
    describe_client,
    get_client,
    list_clients,
    read_jwks_file,
    register_client,
    rotate_secret,
    set_enabled,
)
from ..protocol.discovery import SCOPES
from .common import Context, json_output, pass_ctx


@click.group()
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
@json_output
@pass_ctx
def clients_add(obj: Context, name, name_fa, redirect_uris, post_logout, scope, auth_method, public, jwks_uri,
                jwks_file, backchannel_logout_uri, subject_type, sector, allow_national_id, trusted, client_id):
    """Register a client; prints client_id and client_secret once."""
    asked = scope.split()
    unknown = [s for s in asked if s not in SCOPES]
    if unknown:  # it would be dropped silently later: say so now
        raise click.ClickException(f"--scope: {' '.join(unknown)} not offered here (offered: {' '.join(SCOPES)})")
    if "national_id" in asked and not allow_national_id:
        raise click.ClickException("--scope national_id: also give --allow-national-id (the national ID is shared "
                                   "only with clients allowed it)")
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
    return data, (f"client_id: {data['client_id']}\nclient_secret: {secret or none}"
                  + ("\nThe secret is shown only now; it is stored hashed." if secret else ""))


@clients.command("show")
@click.argument("client_id")
@json_output
@pass_ctx
def clients_show(obj: Context, client_id):
    """Show a client's registration (never its secret)."""
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
    return data, "\n".join(lines)


@clients.command("rotate-secret")
@click.argument("client_id")
@json_output
@pass_ctx
def clients_rotate_secret(obj: Context, client_id):
    """Give a client a new secret, printed once; the old one stops working at once."""
    with obj.app.app_context():
        client = get_client(client_id)
        secret = rotate_secret(client)
        audit.record("client_secret_rotated", client_id=client.client_id)
    data = {"client_id": client_id, "client_secret": secret}
    return data, (f"client_id: {client_id}\nclient_secret: {secret}\n"
                  "The secret is shown only now; it is stored hashed. The old secret no longer works.")


def _set_enabled(obj: Context, client_id: str, enabled: bool):
    with obj.app.app_context():
        client = get_client(client_id)
        changed = set_enabled(client, enabled)
        if changed:
            audit.record("client_enabled" if enabled else "client_disabled", client_id=client_id)
    state = "enabled" if enabled else "disabled"
    return ({"client_id": client_id, "status": state, "changed": changed},
            f"client {client_id} {state}" if changed else f"client {client_id} was already {state}")


@clients.command("disable")
@click.argument("client_id")
@json_output
@pass_ctx
def clients_disable(obj: Context, client_id):
    """Stop a client at once: no logins, tokens or userinfo for it until it is enabled again."""
    return _set_enabled(obj, client_id, False)


@clients.command("enable")
@click.argument("client_id")
@json_output
@pass_ctx
def clients_enable(obj: Context, client_id):
    """Let a disabled client work again."""
    return _set_enabled(obj, client_id, True)


@clients.command("list")
@json_output
@pass_ctx
def clients_list(obj: Context):
    """List registered clients."""
    with obj.app.app_context():
        rows = [_client_row(c) for c in list_clients()]
    return rows, "\n".join(f"{r['client_id']}  {r['name']}  {' '.join(r['redirect_uris'])}" for r in rows) or "no clients"
