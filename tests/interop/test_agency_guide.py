"""The agency developer's guide (docs/agencies.md) and clients/README.md, as written: their code
blocks are read out of the markdown and run against the real provider, so an example that stops
matching the provider (an option, an endpoint, the access token's audience) fails here.

- The access-token verifier example, in both files: it accepts a real access token issued to
  the agency's client and refuses one issued to another client (and an ID token).
- The Python (Authlib) sign-in example: a citizen signs in through it; a stale secret ends on its
  own plain page.
- The Node (openid-client) example, when Node and tests/interop/node/node_modules are there
  (as for test_openid_client.py).
"""
from __future__ import annotations

import json
import re
import secrets
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from clients.jwt_verify import InvalidAccessToken

from ..helpers import ROOT
from .test_openid_client import NODE_DIR, node_binary

GUIDE = ROOT / "docs" / "agencies.md"
CLIENTS_README = ROOT / "clients" / "README.md"


def code_blocks(path: Path, language: str, containing: str) -> list[str]:
    """The fenced ``language`` code blocks of a markdown file that contain ``containing``."""
    blocks = re.findall(rf"^```{language}\n(.*?)^```$", path.read_text(encoding="utf-8"), re.M | re.S)
    return [block for block in blocks if containing in block]


def the_block(path: Path, language: str, containing: str) -> str:
    found = code_blocks(path, language, containing)
    assert len(found) == 1, f"{path.name}: expected one {language} block with {containing!r}, found {len(found)}"
    return found[0]


def tokens_for(provider, redirect: str, scope: str = "openid profile") -> tuple[str, dict]:
    """A real client of the provider and the token response of one citizen's login at it."""
    client_id, secret, _ = provider.add_client(name="Guide agency", redirect_uri=redirect, scope=scope)
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    result = browser.login(client_id, redirect, national_id, mobile, scope=scope)
    token = browser.exchange(client_id, secret, redirect, result["code"])
    assert token.status_code == 200, token.text
    return client_id, token.json()


@pytest.mark.parametrize("doc", [GUIDE, CLIENTS_README], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_documented_verifier_takes_its_clients_tokens_and_refuses_others(interop_provider, monkeypatch, doc):
    example = the_block(doc, "python", "AccessTokenVerifier(")
    ours, our_tokens = tokens_for(interop_provider, "http://127.0.0.1:9/guide-ours/cb")
    theirs, their_tokens = tokens_for(interop_provider, "http://127.0.0.1:9/guide-theirs/cb")
    monkeypatch.setenv("AGENCY_ISSUER", interop_provider.url)
    monkeypatch.setenv("AGENCY_CLIENT_ID", ours)

    run = {"token": our_tokens["access_token"]}
    exec(compile(example, str(doc), "exec"), run)  # noqa: S102 - the documented example, as written
    claims = run["claims"]
    assert claims["client_id"] == ours and claims["aud"] == [ours] and claims["iss"] == interop_provider.url
    assert claims["sub"] and "openid" in claims["scope"].split()

    for token in (their_tokens["access_token"], our_tokens["id_token"]):
        run = {"token": token}
        exec(compile(example, str(doc), "exec"), run)  # noqa: S102
        assert "claims" not in run, "the example accepted a token it must refuse"
    with pytest.raises(InvalidAccessToken, match="invalid claim aud"):
        run["verifier"].verify(their_tokens["access_token"])
    with pytest.raises(InvalidAccessToken, match="typ"):
        run["verifier"].verify(our_tokens["id_token"])
    assert theirs != ours


def authlib_example(provider, client_id: str, secret: str, redirect: str, monkeypatch):
    """The guide's Authlib app, configured through the environment as it says; a test client."""
    for name, value in {"AGENCY_ISSUER": provider.url, "AGENCY_REDIRECT_URI": redirect, "AGENCY_CLIENT_ID": client_id,
                        "AGENCY_CLIENT_SECRET": secret, "AGENCY_SECRET_KEY": secrets.token_hex(32)}.items():
        monkeypatch.setenv(name, value)
    run: dict = {"__name__": f"guide_agency_{uuid.uuid4().hex[:6]}"}
    exec(compile(the_block(GUIDE, "python", "authorize_redirect"), str(GUIDE), "exec"), run)  # noqa: S102
    return run["app"].test_client()


def sign_in_through(agency, browser, provider, redirect: str):
    """A new citizen signs in starting at the agency's /login; the agency's answer to the callback."""
    national_id, mobile = provider.add_citizen(birth_date="1991-01-02")
    start = agency.get("/login")
    assert start.status_code == 302, start.get_data(as_text=True)
    callback = browser.walk_login(start.headers["Location"], redirect, national_id, mobile)
    parts = urlsplit(callback)
    return agency.get(f"{parts.path}?{parts.query}")


def test_documented_authlib_example_signs_a_citizen_in(interop_provider, browser, monkeypatch):
    redirect = "http://127.0.0.1:9/callback"  # the path the example serves
    client_id, secret, _ = interop_provider.add_client(name="Guide Authlib agency", redirect_uri=redirect)
    agency = authlib_example(interop_provider, client_id, secret, redirect, monkeypatch)
    answer = sign_in_through(agency, browser, interop_provider, redirect)
    assert answer.status_code == 302 and answer.headers["Location"] == "/", answer.get_data(as_text=True)[:500]
    with agency.session_transaction() as session:
        assert session["sub"] and session["id_token"].count(".") == 2


def test_documented_authlib_example_shows_its_own_page_for_a_refused_code(interop_provider, browser, monkeypatch,
                                                                          caplog):
    redirect = "http://127.0.0.1:9/callback"
    client_id, _, _ = interop_provider.add_client(name="Guide Authlib agency", redirect_uri=redirect)
    agency = authlib_example(interop_provider, client_id, "a-stale-secret", redirect, monkeypatch)
    answer = sign_in_through(agency, browser, interop_provider, redirect)
    page = answer.get_data(as_text=True)
    assert answer.status_code == 400 and "The sign-in could not be completed" in page and "invalid_client" not in page
    assert "invalid_client" in caplog.text


def test_documented_openid_client_example_signs_a_citizen_in(interop_provider, browser):
    node = node_binary()
    redirect = "http://127.0.0.1:9/guide-node/callback"
    client_id, secret, _ = interop_provider.add_client(name="Guide openid-client agency", redirect_uri=redirect)
    national_id, mobile = interop_provider.add_citizen(birth_date="1979-11-30")
    # The example is a module beside rp.mjs (so that it finds openid-client); a few lines of
    # harness call its two functions as an agency's /login and /callback routes would.
    module = NODE_DIR / f".guide-{uuid.uuid4().hex[:8]}.mjs"
    module.write_text(the_block(GUIDE, "js", "client.discovery("), encoding="utf-8")
    harness = ("import * as readline from 'node:readline';"
               f"const guide = await import({json.dumps(module.as_uri())});"
               "const { url, pending } = await guide.startLogin();"
               "console.log(JSON.stringify({ url }));"
               "const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();"
               "const { value } = await lines.next();"
               "const { claims, userinfo } = await guide.finishLogin(value.trim(), pending);"
               "console.log(JSON.stringify({ claims, userinfo })); process.exit(0);")
    env = {"PATH": "/usr/bin:/bin", "NODE_NO_WARNINGS": "1", "AGENCY_ISSUER": interop_provider.url,
           "AGENCY_CLIENT_ID": client_id, "AGENCY_CLIENT_SECRET": secret, "AGENCY_REDIRECT_URI": redirect}
    proc = subprocess.Popen([node, "--input-type=module", "-e", harness], cwd=NODE_DIR, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = proc.stdout.readline()
        assert first, proc.stderr.read()
        url = json.loads(first)["url"]
        assert url.startswith(interop_provider.url + "/authorize?") and "code_challenge_method=S256" in url
        proc.stdin.write(browser.walk_login(url, redirect, national_id, mobile) + "\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=30)
    finally:
        module.unlink()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["claims"]["sub"] == result["userinfo"]["sub"] and result["claims"]["sub"] != national_id
    assert client_id in result["claims"]["aud"] and result["claims"]["acr"] == "urn:idp:acr:sms"
    assert result["userinfo"]["birthdate"] == "1979-11-30" and result["userinfo"]["given_name"] == "آزمون"
