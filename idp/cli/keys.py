"""``idp keys``: generate, list and rotate the signing keys in ``[keys] dir``.

May import: idp.platform, .common.
"""
from __future__ import annotations

import click

from ..platform import keys as keymod
from .common import Context, json_output, pass_ctx


@click.group()
def keys():
    """Signing keys."""


@keys.command("generate")
@click.option("--alg", type=click.Choice(["RS256", "ES256", "all"]), default="all", show_default=True)
@json_output
@pass_ctx
def keys_generate(obj: Context, alg):
    """Create new active signing keys in [keys] dir (private files mode 0600)."""
    algs = keymod.ALGORITHMS if alg == "all" else (alg,)
    have = {k.alg: k.kid for k in keymod.load_all(obj.settings.keys.dir) if k.status == "active"}
    if clash := [a for a in algs if a in have]:
        # A new active key would sign at once, before agencies' cached JWKS hold it.
        raise keymod.KeysUnavailable(f"keys generate: an active {clash[0]} key exists ({have[clash[0]][:12]}); "
                                     "replace it with `idp keys rotate`, which publishes the new key before it signs")
    made = [keymod.generate(obj.settings.keys.dir, a) for a in algs]
    rows = [{"kid": k.kid, "alg": k.alg, "status": k.status, "created_at": k.created_at} for k in made]
    return rows, "\n".join(f"{r['alg']}  {r['kid']}  {r['status']}" for r in rows)


def _max_token_ttl(settings) -> int:
    """The longest lifetime of a token our keys sign: a retired key stays published that long."""
    return max(settings.tokens.access_token_ttl, settings.tokens.id_token_ttl)


@keys.command("list")
@json_output
@pass_ctx
def keys_list(obj: Context):
    """List the keys in [keys] dir with their status, dates and next rotation step."""
    rows = keymod.describe(keymod.load_all(obj.settings.keys.dir), _max_token_ttl(obj.settings))

    def line(r):
        step = (f"  signs from {r['promote_from']} (idp keys rotate)" if r["promote_from"] else
                f"  leaves the JWKS from {r['remove_from']} (idp keys rotate)" if r["remove_from"] else "")
        return (f"{r['alg']}  {r['kid']}  {r['status']:<7}  created {r['created_at']}"
                + (f"  active since {r['activated_at']}" if r["activated_at"] and r["status"] != "next" else "")
                + (f"  retired {r['retired_at']}" if r["retired_at"] else "") + step)

    return rows, "\n".join(line(r) for r in rows) or "no keys (create them: idp keys generate)"


@keys.command("rotate")
@click.option("--alg", type=click.Choice(["RS256", "ES256", "all"]), default="all", show_default=True)
@click.option("--force", is_flag=True,
              help="Emergency (a compromised key): promote a new key at once, without waiting for "
                   "agencies' cached JWKS to have it.")
@click.option("--withdraw", is_flag=True,
              help="With --force: remove the old key from the JWKS at once (its tokens stop verifying).")
@json_output
@pass_ctx
def keys_rotate(obj: Context, alg, force, withdraw):
    """One step of a rotation that breaks no one. Run it twice: the first run publishes a `next`
    key (it signs nothing yet); a run once that key has been published longer than agencies cache
    the JWKS (2 x 300 s) makes it sign and retires the old key, which stays published until every
    token it signed has expired; a later run removes it."""
    algs = None if alg == "all" else (alg,)
    rows = keymod.rotate(obj.settings.keys.dir, _max_token_ttl(obj.settings), algs=algs, force=force,
                         withdraw=withdraw)
    text = {"next_created": "next key {kid} published; it signs after `idp keys rotate` from {promote_from}",
            "promoted": "key {kid} now signs",
            "retired": "key {kid} retired: still published until {remove_from}, then removed by `idp keys rotate`",
            "removed": "retired key {kid} removed from the JWKS",
            "withdrawn": "key {kid} withdrawn from the JWKS at once"}
    return rows, "\n".join(f"{r['alg']}  " + text[r["action"]].format(**r) for r in rows) or "nothing to do"
