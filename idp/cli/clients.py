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
from ..protocol.subjects import sector_of
from .common import Context, Output, json_output, pass_ctx


@click.group()
def clients():
    """Agency clients."""


def _client_row(client) -> dict:
    return {"client_id": client.client_id, "name": client.name, "name_fa": client.name_fa,
            "redirect_uris": client.redirect_uris, "scope": client.scope,
            "token_endpoint_auth_method": client.token_endpoint_auth_method,
            "trusted": client.trusted, "accepts_guardians": bool(client.accepts_guardians),
            "disabled": client.disabled_at is not None}


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
@click.option("--accepts-guardians", is_flag=True,
              help="A guardian may act here for a linked minor under 18 (tokens then carry act).")
@click.option("--client-id", help="Choose the client_id (default: random).")
@json_output
@pass_ctx
def clients_add(obj: Context, name, name_fa, redirect_uris, post_logout, scope, auth_method, public, jwks_uri,
                jwks_file, backchannel_logout_uri, subject_type, sector, allow_national_id, trusted, accepts_guardians,
                client_id):
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
                                         sector=sector, allow_national_id=allow_national_id,
                                         accepts_guardians=accepts_guardians)
        method = client.token_endpoint_auth_method
        audit.record("client_registered", client_id=client.client_id, auth_method=method)
        data = {"client_id": client.client_id, "client_secret": secret}
        warnings = _registration_warnings(client, list_clients())
    none = "(none: public client)" if method == "none" else f"(none: authenticates with {method})"
    return Output(data, f"client_id: {data['client_id']}\nclient_secret: {secret or none}"
                  + ("\nThe secret is shown only now; it is stored hashed." if secret else ""),
                  note="\n".join(warnings) or None)


def _registration_warnings(client, every_client) -> list[str]:
    """What a new registration may not have meant, one line each: no Persian name, and (OIDC Core
    §8.1) a pairwise sector shared with other clients because no --sector was given."""
    warnings = []
    if not client.name_fa:
        warnings.append(f"idp: warning: {client.client_id} has no Persian name (--name-fa): Persian pages will show "
                        f"its English name {client.name!r}")
    meta = client.client_metadata
    if meta.get("subject_type") == "pairwise" and not meta.get("sector_identifier"):
        sector = sector_of(client)
        sharing = [c.client_id for c in every_client if c.client_id != client.client_id
                   and c.client_metadata.get("subject_type") == "pairwise" and sector_of(c) == sector]
        if sharing:
            warnings.append(f"idp: warning: {client.client_id} shares the pairwise sector {sector} with "
                            f"{', '.join(sharing)}: they see the same sub for every citizen; if they are separate "
                            f"agencies, disable {client.client_id} and add it again with --sector HOST (a host of "
                            "its own, e.g. its domain)")
    return warnings


@clients.command("show")
@click.argument("client_id")
@json_output
@pass_ctx
def clients_show(obj: Context, client_id):
    """Show every field of a client's registration (never its secret)."""
    with obj.app.app_context():
        client = get_client(client_id)
        data = describe_client(client)
        meta = client.client_metadata
        pairwise = meta.get("subject_type") == "pairwise"
        data["allow_national_id"] = bool(meta.get("allow_national_id"))
        data["sector"] = sector_of(client) if pairwise else None
    return data, "\n".join(f"{label}: {value}" for label, value in _show_lines(data))


#: Metadata that _show_lines names in its own words; any other key is shown as it is.
_SHOWN = {"redirect_uris", "post_logout_redirect_uris", "scope", "token_endpoint_auth_method", "subject_type",
          "sector_identifier", "allow_national_id", "backchannel_logout_uri", "backchannel_logout_session_required",
          "jwks", "jwks_uri", "grant_types", "response_types"}


def _show_lines(data: dict) -> list[tuple[str, str]]:
    """(label, value) for every field of a client, absent ones said so, in the order an operator checks them."""
    meta = data["metadata"]
    method = data["token_endpoint_auth_method"]
    disabled = data["disabled_at"]

    def words(values) -> str:
        return " ".join(values) if values else "(none)"

    keys = (f"jwks_uri {meta['jwks_uri']}" if meta.get("jwks_uri") else
            f"{len(meta['jwks']['keys'])} registered (jwks)" if meta.get("jwks") else None)
    backchannel = meta.get("backchannel_logout_uri")
    lines = [
        ("client_id", data["client_id"]),
        ("name", data["name"]),
        ("name (Persian)", data["name_fa"] or f"(none: Persian pages show {data['name']!r})"),
        ("status", f"disabled since {disabled}" if disabled else "enabled"),
        ("created", data["created_at"] or "(unknown)"),
        ("trusted", "yes (no consent page)" if data["trusted"] else "no (citizens are asked for consent)"),
        ("guardians", "accepted (a guardian may act for a linked minor; tokens carry act)"
         if data.get("accepts_guardians") else "not accepted"),
        ("auth method", method + (" (a secret, stored hashed)" if data["has_secret"] else "")),
    ]
    if keys:
        lines.append(("public keys", keys))
    lines += [
        ("redirect URIs", words(meta.get("redirect_uris"))),
        ("post-logout redirect URIs", words(meta.get("post_logout_redirect_uris"))),
        ("scopes", meta.get("scope", "openid")),
        ("national ID", "allowed (national_id scope)" if data["allow_national_id"] else "not allowed"),
        ("subject type", meta.get("subject_type", "pairwise")),
        ("sector", (f"{data['sector']} (--sector)" if meta.get("sector_identifier") else
                    f"{data['sector']} (the redirect URIs' host: every client there without --sector sees the "
                    "same sub)")
         if data["sector"] else "(none: public subjects, the same sub for every client)"),
        ("back-channel logout URI", f"{backchannel} (session required)"
         if backchannel and meta.get("backchannel_logout_session_required") else backchannel or "(none)"),
        ("grant types", words(meta.get("grant_types"))),
        ("response types", words(meta.get("response_types"))),
    ]
    for key, value in meta.items():  # anything registered that the lines above do not name
        if key not in _SHOWN:
            lines.append((key, words(value) if isinstance(value, list) else
                          json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, bool)) else str(value)))
    return lines


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
