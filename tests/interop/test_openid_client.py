"""panva's openid-client (npm, v6: strict, OpenID-certified) as a relying party of the real
provider: discovery, code + PKCE S256 + state + nonce, the RFC 9207 `iss` check, ID token
validation, userinfo, refresh with rotation, introspection, revocation, RP-initiated logout and
the back-channel Logout Token the agency then receives.

The relying party is tests/interop/node/rp.mjs, run by Node as a subprocess. It prints one JSON
object per step on stdout; this test plays the citizen's browser: it follows the authorization
URL the library built, walks the login (SMS code from the outbox) and writes the callback URL
back on the script's stdin, then does the same with the end-session URL.

Node and tests/interop/node/node_modules (`npm ci` there; .ci/browser-deps runs it) are required
under CI=true; elsewhere the test skips without them.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
from joserfc.jwk import ECKey, RSAKey

from ..conftest import need
from .conftest import verify_logout_token

NODE_DIR = Path(__file__).resolve().parent / "node"
SCRIPT = NODE_DIR / "rp.mjs"
DEADLINE = 45.0  # seconds for the whole conversation with the script


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        need("Node.js", "`node` is not on PATH; install Node 20+ (.ci/browser-deps runs npm ci for tests/interop/node)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        need("Node.js", f"openid-client v6 needs Node 20 or later, found {version}")
    if not (NODE_DIR / "node_modules" / "openid-client" / "package.json").exists():
        need("openid-client", f"{NODE_DIR / 'node_modules'} is missing; run `npm ci` in {NODE_DIR}")
    return node


class NodeRP:
    """The rp.mjs process: JSON lines out, JSON lines in, with one overall deadline."""

    def __init__(self, node: str, config: dict):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
               "NODE_NO_WARNINGS": "1", "IDP_RP_CONFIG": json.dumps(config)}
        self.proc = subprocess.Popen([node, str(SCRIPT)], cwd=NODE_DIR, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8")
        self.deadline = time.monotonic() + DEADLINE
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, step: str) -> dict:
        """The next message, which must be ``step`` (an error or early exit fails with its report)."""
        try:
            line = self.lines.get(timeout=max(0.1, self.deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"rp.mjs sent nothing within {DEADLINE:.0f} s while the test waited for {step!r}; "
                        f"steps so far: {[m['step'] for m in self.seen]}")
        if line is None:
            pytest.fail(f"rp.mjs exited (status {self.proc.wait(5)}) before {step!r}: {self.stderr()}")
        message = json.loads(line)
        self.seen.append(message)
        assert message["step"] != "error", f"openid-client failed at {message['where']}: {message['error']}"
        assert message["step"] == step, f"expected {step!r}, got {message}"
        return message

    def send(self, **data):
        self.proc.stdin.write(json.dumps(data) + "\n")
        self.proc.stdin.flush()

    def stderr(self) -> str:
        try:
            return self.proc.stderr.read()[-2000:]
        except ValueError:
            return ""

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass


@pytest.fixture()
def node_rp():
    node = node_binary()
    started: list[NodeRP] = []

    def start(config: dict) -> NodeRP:
        rp = NodeRP(node, config)
        started.append(rp)
        return rp

    yield start
    for rp in started:
        rp.close()


def client_keys(alg: str) -> tuple[dict, dict]:
    """A client's private JWK (for the relying party) and public JWKS (for registration)."""
    key = ECKey.generate_key("P-256") if alg == "ES256" else RSAKey.generate_key(2048)
    private = {**key.as_dict(private=True), "kid": key.thumbprint(), "alg": alg, "use": "sig"}
    public = {**key.as_dict(private=False), "kid": key.thumbprint(), "alg": alg, "use": "sig"}
    return private, {"keys": [public]}


@pytest.mark.parametrize("auth", ["client_secret_post", "private_key_jwt_ES256", "private_key_jwt_RS256"])
def test_openid_client_end_to_end(interop_provider, discovery, browser, logout_receiver, node_rp, auth):
    """The whole life of a login, with openid-client authenticating by its default for a secret
    (client_secret_post) or by private_key_jwt at every endpoint (token, introspection, revocation)."""
    provider = interop_provider
    tag = auth.replace("_", "-")
    bye = f"http://127.0.0.1:9/oc-{tag}/bye"
    bcl_path = f"/openid-client/{tag}/backchannel"
    client_kw, extra = {}, {}
    if auth.startswith("private_key_jwt"):
        private, public_jwks = client_keys(auth.rsplit("_", 1)[1])
        client_kw = {"auth_method": "private_key_jwt", "jwks": public_jwks}
        extra = {"private_jwk": private}
    client_id, secret, redirect = provider.add_client(
        name="openid-client agency", redirect_uri=f"http://127.0.0.1:9/oc-{tag}/cb",
        scope="openid profile offline_access", post_logout_redirect_uris=[bye],
        backchannel_logout_uri=logout_receiver.url(bcl_path), **client_kw)
    national_id, mobile = provider.add_citizen(birth_date="1990-06-15")
    rp = node_rp({"issuer": provider.url, "client_id": client_id, "client_secret": secret,
                  "redirect_uri": redirect, "post_logout_redirect_uri": bye,
                  "scope": "openid profile offline_access", **extra})

    # Discovery: openid-client checks that the document's issuer is exactly the one asked for.
    meta = rp.expect("discovery")["metadata"]
    assert meta["issuer"] == provider.url
    assert meta == discovery

    # The authorization URL the library built: code, S256, state, nonce.
    authorize = rp.expect("authorize")
    query = {k: v[0] for k, v in parse_qs(urlsplit(authorize["url"]).query).items()}
    assert authorize["url"].startswith(discovery["authorization_endpoint"] + "?")
    assert query["response_type"] == "code" and query["code_challenge_method"] == "S256"
    assert query["state"] == authorize["state"] and query["nonce"] == authorize["nonce"]
    callback = browser.walk_login(authorize["url"], redirect, national_id, mobile)
    rp.send(callback=callback)

    # The library refuses a tampered response on its own (strict RFC 9207 and state checks).
    checks = rp.expect("callback_checks")
    for case, word in (("wrong_iss", '"iss"'), ("missing_iss", '"iss"'), ("wrong_state", '"state"')):
        assert checks[case]["failed"], f"openid-client accepted a callback with {case}"
        assert word in checks[case]["error"].get("cause", {}).get("message", ""), checks[case]

    # The code exchange; openid-client validated the ID token (signature via jwks_uri, iss, aud,
    # azp, exp, iat, nonce) before returning it.
    token = rp.expect("token")
    assert token["token_type"].lower() == "bearer" and token["expires_in"] > 0
    assert token["has_access_token"] and token["has_refresh_token"], token
    claims = token["claims"]
    assert claims["iss"] == provider.url and client_id in ([claims["aud"]] if isinstance(claims["aud"], str)
                                                            else claims["aud"])
    assert claims["nonce"] == authorize["nonce"] and claims["exp"] > time.time()
    assert claims["sub"] and claims["sub"] != national_id and claims["sid"]
    assert claims["acr"] == "urn:idp:acr:sms" and claims["amr"] == ["sms"]

    info = rp.expect("userinfo")["userinfo"]
    assert info["sub"] == claims["sub"] and info["birthdate"] == "1990-06-15" and info["given_name"] == "آزمون"

    refresh = rp.expect("refresh")
    assert refresh["rotated"] and refresh["new_access_token"], refresh
    if refresh["id_token_claims"]:  # an ID token on refresh must name the same person (OIDC Core §12.2)
        assert refresh["id_token_claims"]["sub"] == claims["sub"]
    assert rp.expect("userinfo_after_refresh")["userinfo"]["sub"] == claims["sub"]

    looked = rp.expect("introspection")
    assert looked["access"]["active"] is True and looked["access"]["client_id"] == client_id
    assert looked["access"]["sub"] == claims["sub"]
    assert looked["refresh"]["active"] is True and looked["refresh"]["client_id"] == client_id

    revoked = rp.expect("revocation")
    assert revoked["introspection"] == {"active": False}
    assert revoked["userinfo"]["failed"], "a revoked access token must be refused at userinfo"

    # RP-initiated logout with the URL the library built, followed by the same browser.
    end = rp.expect("end_session")
    assert end["url"], "the provider advertises end_session_endpoint, so the library must build a URL"
    end_query = {k: v[0] for k, v in parse_qs(urlsplit(end["url"]).query).items()}
    assert end["url"].startswith(discovery["end_session_endpoint"] + "?")
    assert end_query["id_token_hint"] == token["id_token"] and end_query["post_logout_redirect_uri"] == bye
    landing = browser.walk_logout(end["url"])
    assert landing.status_code in (302, 303), f"{landing.status_code}: {landing.text[:300]}"
    rp.send(landing=urljoin(landing.url, landing.headers["Location"]))
    back = rp.expect("logged_out")
    assert back["at_post_logout_uri"] and back["state_matches"], back
    after = rp.expect("refresh_after_logout")
    assert after["failed"] and after["error"].get("error") == "invalid_grant", after

    replay = rp.expect("code_replay")
    assert replay["exchange"]["failed"] and replay["exchange"]["error"].get("error") == "invalid_grant", replay
    assert replay["userinfo_after"]["failed"], "the access token of a replayed code must be refused"
    rp.expect("done")
    assert rp.proc.wait(10) == 0

    # The agency's back-channel endpoint got a Logout Token for this session.
    posts = logout_receiver.wait_for(bcl_path)
    assert posts[0]["content_type"].startswith("application/x-www-form-urlencoded")
    logout = verify_logout_token(provider.url, discovery["jwks_uri"], posts[0]["form"]["logout_token"], client_id)
    assert logout["claims"]["sid"] == claims["sid"] and logout["claims"]["sub"] == claims["sub"]
    assert not browser.signed_in(client_id, redirect), "the SSO session must be over"
