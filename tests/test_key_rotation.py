"""Signing-key rotation that breaks no one: next -> active -> retired -> removed.

The waiting times are computed from the timestamps in the key files, so these tests backdate a
file's ``published_at`` or ``retired_at`` instead of sleeping for minutes.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path

import pytest
import requests

from clients.jwt_verify import AccessTokenVerifier
from idp.platform import keys
from idp.platform.keyring import KeyRing

from .helpers import Clock, redirect_params, run_idp, verify_id_token


def backdate(directory, status: str, field: str, seconds: int) -> list[str]:
    """Move a timestamp of every key with this status back in time (rewritten whole, like idp does)."""
    moved = []
    for path in Path(directory).glob("*.json"):
        record = json.loads(path.read_text())
        if record["status"] == status:
            when = keys.parse_time(record.get(field) or record["created_at"]) - dt.timedelta(seconds=seconds)
            record[field] = keys.format_time(when)
            keys._write_record(path, record)
            moved.append(record["kid"])
    return moved


def keyring_clock(provider, monkeypatch) -> Clock:
    """The clock by which the running provider's key ring decides to look at its directory again
    (at most every RELOAD_SECONDS): advanced by the test rather than waited for."""
    clock = Clock(monkeypatch)
    monkeypatch.setattr(provider.app.extensions["idp.keyring"], "_clock", clock.monotonic)
    return clock


def statuses(directory) -> dict[str, str]:
    return {k.kid: k.status for k in keys.load_all(directory)}


def jwks_kids(provider) -> set[str]:
    return {k["kid"] for k in requests.get(f"{provider.url}/jwks", timeout=10).json()["keys"]}


def operator_env(provider, tmp_path) -> dict:
    """The environment of `idp` as another process on the same keys directory (another node, or
    the operator): not the provider's own settings."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "IDP_SERVER_SECRET_KEY": "t" * 48, "IDP_DATABASE_URL": provider.settings.database.url,
           "IDP_KEYS_DIR": provider.settings.keys.dir}


# ---- the timeline, on a directory --------------------------------------------------------------

def test_rotation_timeline(tmp_path):
    d = tmp_path / "keys"
    first = {k.alg: k.kid for k in keys.ensure(d)}
    ring = KeyRing(d, {"RS256", "ES256"}, reload_seconds=0)
    ttl = 600

    # Step 1: a next key per algorithm, published but not signing.
    done = keys.rotate(d, ttl)
    assert {(r["alg"], r["action"]) for r in done} == {("RS256", "next_created"), ("ES256", "next_created")}
    nxt = {r["alg"]: r["kid"] for r in done}
    assert {k["kid"] for k in ring.jwks()["keys"]} == set(first.values()) | set(nxt.values())
    assert ring.signing_key("RS256").kid == first["RS256"] and ring.signing_key("ES256").kid == first["ES256"]

    # Too early: refused, nothing changed.
    before = statuses(d)
    with pytest.raises(keys.RotationRefused, match="--force"):
        keys.rotate(d, ttl)
    assert statuses(d) == before

    # Step 2, once the next keys have been published longer than twice the JWKS cache lifetime.
    assert len(backdate(d, "next", "published_at", keys.PUBLISH_WAIT + 1)) == 2
    done = keys.rotate(d, ttl)
    assert {(r["alg"], r["action"], r["kid"]) for r in done} == (
        {(a, "promoted", kid) for a, kid in nxt.items()} | {(a, "retired", kid) for a, kid in first.items()})
    assert ring.signing_key("RS256").kid == nxt["RS256"] and ring.signing_key("ES256").kid == nxt["ES256"]
    published = {k["kid"] for k in ring.jwks()["keys"]}
    assert published == set(first.values()) | set(nxt.values()), "retired keys stay published"
    for path in d.glob("*.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    # The retired keys stay while a token they signed may live; then a run removes them.
    keys.rotate(d, ttl)  # publishes the following next keys; the retired ones are too young to go
    assert set(first.values()) <= {k["kid"] for k in ring.jwks()["keys"]}
    backdate(d, "retired", "retired_at", ttl + keys.RETIRE_MARGIN + 1)
    backdate(d, "next", "published_at", keys.PUBLISH_WAIT + 1)
    done = keys.rotate(d, ttl)
    assert {(r["alg"], r["kid"]) for r in done if r["action"] == "removed"} == set(first.items())
    assert not set(first.values()) & {k["kid"] for k in ring.jwks()["keys"]}
    assert not any((d / f"{kid}.json").exists() for kid in first.values())

    rows = keys.describe(keys.load_all(d), ttl)
    assert {r["status"] for r in rows} == {"active", "retired"}
    assert all(r["remove_from"] for r in rows if r["status"] == "retired")


def test_force_promotes_at_once_and_withdraw_drops_the_old_key(tmp_path):
    d = tmp_path / "keys"
    old = {k.alg: k.kid for k in keys.ensure(d)}
    done = keys.rotate(d, 600, algs=("RS256",), force=True)
    assert [r["action"] for r in done] == ["promoted", "retired"]
    assert statuses(d)[old["RS256"]] == "retired" and statuses(d)[old["ES256"]] == "active"
    with pytest.raises(keys.RotationRefused, match="--force"):
        keys.rotate(d, 600, withdraw=True)
    done = keys.rotate(d, 600, algs=("ES256",), force=True, withdraw=True)
    assert [r["action"] for r in done] == ["promoted", "withdrawn"]
    assert old["ES256"] not in statuses(d)


def test_a_bad_file_never_takes_the_keys_away(tmp_path, caplog):
    d = tmp_path / "keys"
    keys.ensure(d)
    ring = KeyRing(d, {"RS256", "ES256"}, reload_seconds=0)
    signing = ring.signing_key("RS256").kid
    (d / "broken.json").write_text("{not json")
    assert ring.signing_key("RS256").kid == signing and len(ring.jwks()["keys"]) == 2
    assert "keeping the keys in use" in caplog.text
    (d / "broken.json").unlink()
    keys.rotate(d, 600, force=True)
    assert ring.signing_key("RS256").kid != signing


def test_keyring_looks_at_the_directory_at_most_every_few_seconds(tmp_path):
    d = tmp_path / "keys"
    keys.ensure(d)
    now = [1000.0]
    ring = KeyRing(d, {"RS256", "ES256"}, clock=lambda: now[0])
    old = ring.signing_key("RS256").kid
    keys.rotate(d, 600, force=True)
    assert ring.signing_key("RS256").kid == old, "no look before RELOAD_SECONDS"
    now[0] += keys.RELOAD_SECONDS
    assert ring.signing_key("RS256").kid != old


# ---- a running provider, rotated by the operator's CLI in another process ------------------------

def exchange_tokens(provider, browser, client_id, secret, redirect) -> dict:
    code = redirect_params(browser.start(client_id, redirect), redirect)["code"]
    response = browser.exchange(client_id, secret, redirect, code)
    assert response.status_code == 200, response.text
    return response.json()


def header_kid(token: str) -> str:
    from joserfc import jws

    return jws.extract_compact(token.encode()).headers()["kid"]


def test_running_provider_follows_a_cli_rotation(make_provider, tmp_path, monkeypatch):
    provider = make_provider()
    clock = keyring_clock(provider, monkeypatch)
    client_id, secret, redirect = provider.add_client(trusted=True)
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    code = browser.login(client_id, redirect, national_id, mobile)["code"]
    response = browser.exchange(client_id, secret, redirect, code)
    assert response.status_code == 200, response.text
    before = response.json()
    old_id_kid, old_at_kid = header_kid(before["id_token"]), header_kid(before["access_token"])

    fetches = []

    def counting_get(url, **kw):
        fetches.append(url)
        return requests.get(url, **kw)

    verifier = AccessTokenVerifier(provider.url, audience=client_id, jwks_uri=f"{provider.url}/jwks",
                                   http_get=counting_get)
    assert verifier.verify(before["access_token"])["client_id"] == client_id
    assert len(fetches) == 1

    # Step 1 in another process: the next keys appear in the running provider's JWKS, unused.
    out = run_idp(operator_env(provider, tmp_path), "keys", "rotate", "--json")
    assert out.returncode == 0, out.stderr
    created = {r["alg"]: r["kid"] for r in json.loads(out.stdout)}
    assert set(created) == {"RS256", "ES256"}
    clock.advance(keys.RELOAD_SECONDS)
    assert set(created.values()) <= jwks_kids(provider)
    during = exchange_tokens(provider, browser, client_id, secret, redirect)
    assert header_kid(during["id_token"]) == old_id_kid and header_kid(during["access_token"]) == old_at_kid

    # Too early to promote: one line, non-zero, nothing changed.
    out = run_idp(operator_env(provider, tmp_path), "keys", "rotate")
    assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "--force" in out.stderr and "Traceback" not in out.stderr

    listed = json.loads(run_idp(operator_env(provider, tmp_path), "keys", "list", "--json").stdout)
    assert {r["status"] for r in listed} == {"active", "next"}
    assert all(r["promote_from"] for r in listed if r["status"] == "next")

    # Step 2, once the next keys have been published long enough (backdated here).
    backdate(provider.settings.keys.dir, "next", "published_at", keys.PUBLISH_WAIT + 1)
    out = run_idp(operator_env(provider, tmp_path), "keys", "rotate", "--json")
    assert out.returncode == 0, out.stderr
    assert {(r["alg"], r["action"]) for r in json.loads(out.stdout)} >= {("RS256", "promoted"), ("ES256", "promoted")}

    after: dict = {}

    def signs_with_new_keys() -> bool:
        after.update(exchange_tokens(provider, browser, client_id, secret, redirect))
        return header_kid(after["id_token"]) == created["RS256"]

    clock.advance(keys.RELOAD_SECONDS)
    assert signs_with_new_keys()
    assert header_kid(after["access_token"]) == created["ES256"]

    # Tokens signed before the promotion still verify: their keys are retired but published.
    assert verify_id_token(provider.url, before["id_token"])["header"]["kid"] == old_id_kid
    assert {old_id_kid, old_at_kid} <= jwks_kids(provider)
    assert verifier.verify(before["access_token"])["client_id"] == client_id
    info = requests.get(f"{provider.url}/userinfo", headers={"Authorization": f"Bearer {before['access_token']}"},
                        timeout=10)
    assert info.status_code == 200, info.text
    assert len(fetches) == 1
    # An agency's API accepts the new key after exactly one refetch of the JWKS.
    assert verifier.verify(after["access_token"])["client_id"] == client_id
    assert len(fetches) == 2
    verify_id_token(provider.url, after["id_token"])

    # Once the tokens the old keys signed have expired, a run takes them out of the JWKS.
    backdate(provider.settings.keys.dir, "retired", "retired_at", 3600)
    out = run_idp(operator_env(provider, tmp_path), "keys", "rotate", "--json")
    assert out.returncode == 0, out.stderr
    removed = {r["kid"] for r in json.loads(out.stdout) if r["action"] == "removed"}
    assert removed == {old_id_kid, old_at_kid}
    clock.advance(keys.RELOAD_SECONDS)
    assert not removed & jwks_kids(provider)


def test_cli_force_promotes_at_once(make_provider, tmp_path, monkeypatch):
    provider = make_provider()
    clock = keyring_clock(provider, monkeypatch)
    old = jwks_kids(provider)
    out = run_idp(operator_env(provider, tmp_path), "keys", "rotate", "--force", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    promoted = {r["kid"] for r in rows if r["action"] == "promoted"}
    assert len(promoted) == 2 and {r["kid"] for r in rows if r["action"] == "retired"} == old
    clock.advance(keys.RELOAD_SECONDS)
    assert jwks_kids(provider) == old | promoted
    out = run_idp(operator_env(provider, tmp_path), "keys", "list")
    assert out.returncode == 0 and "retired" in out.stdout and "active" in out.stdout, out.stderr
