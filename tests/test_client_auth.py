"""private_key_jwt (RFC 7523 §2.2, OIDC Core §9): agencies authenticate with a signed assertion,
on SQLite and PostgreSQL, with keys registered inline or fetched from a jwks_uri; and the operator's
client commands (show, rotate-secret, disable, enable) against the provider's own database."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from .helpers import b64, idp, redirect_params, run_idp, verify_id_token

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


# ---- helpers -----------------------------------------------------------------------------------

def new_key(kind: str = "RSA"):
    key = RSAKey.generate_key(2048, private=True) if kind == "RSA" else ECKey.generate_key("P-256", private=True)
    return (RSAKey if kind == "RSA" else ECKey).import_key({**key.as_dict(private=True), "kid": key.thumbprint()})


def public_jwks(*keys) -> dict:
    return {"keys": [{**k.as_dict(private=False), "kid": k.kid, "use": "sig"} for k in keys]}


def claims_for(client_id: str, aud, exp_in: int = 60, **changes) -> dict:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": aud, "jti": secrets.token_urlsafe(16),
              "iat": now, "exp": now + exp_in}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def sign(claims: dict, key, alg: str | None = None) -> str:
    alg = alg or ("RS256" if isinstance(key, RSAKey) else "ES256")
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[alg])


def assertion(provider, client_id: str, key, **changes) -> str:
    return sign(claims_for(client_id, changes.pop("aud", f"{provider.url}/token"), **changes), key)


def token_request(provider, browser, redirect: str, code: str, client_assertion: str | None, auth=None, **extra):
    """POST /token for a code, authenticated by a client assertion (or whatever ``auth``/``extra`` say)."""
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
            "code_verifier": browser.last_verifier}
    if client_assertion is not None:
        data.update(client_assertion_type=ASSERTION_TYPE, client_assertion=client_assertion)
    data.update(extra)
    return requests.post(f"{provider.url}/token", data={k: v for k, v in data.items() if v is not None},
                         auth=auth, timeout=10)


def first_code(provider, browser, client_id: str, redirect: str) -> str:
    """A code for this client: through a login, or at once when the browser has a session."""
    if browser.http.cookies:
        return next_code(browser, client_id, redirect)
    national_id, mobile = provider.add_citizen()
    return browser.login(client_id, redirect, national_id, mobile)["code"]


def next_code(browser, client_id: str, redirect: str) -> str:
    """Another code from the live single sign-on session, without a new login."""
    return redirect_params(browser.start(client_id, redirect), redirect)["code"]


def assert_invalid_client(response: requests.Response) -> None:
    """RFC 6749 §5.2: a failed client assertion (private_key_jwt) is a 400; any other client that
    failed to authenticate is a 401 with a Basic challenge (the endpoint accepts client_secret_basic)."""
    body = response.request.body or ""
    body = body.decode() if isinstance(body, bytes) else body
    assertion = "client_assertion" in parse_qs(body)
    assert response.status_code == (400 if assertion else 401), (assertion, response.status_code, response.text)
    assert ("WWW-Authenticate" in response.headers) == (not assertion), response.headers
    assert response.json()["error"] == "invalid_client", response.text


# ---- the flow ----------------------------------------------------------------------------------

def test_discovery_announces_private_key_jwt(provider):
    doc = requests.get(f"{provider.url}/.well-known/openid-configuration", timeout=10).json()
    assert "private_key_jwt" in doc["token_endpoint_auth_methods_supported"]
    assert set(doc["token_endpoint_auth_signing_alg_values_supported"]) == {"RS256", "ES256"}


def test_code_flow_with_signed_assertion_and_replay_refused(provider):
    key = new_key("RSA")
    client_id, secret, redirect = provider.add_client(trusted=True, auth_method="private_key_jwt",
                                                      jwks=public_jwks(key))
    assert secret is None
    browser = provider.flow()
    code = first_code(provider, browser, client_id, redirect)

    signed = assertion(provider, client_id, key)
    response = token_request(provider, browser, redirect, code, signed)
    assert response.status_code == 200, response.text
    claims = verify_id_token(provider.url, response.json()["id_token"])["claims"]
    assert claims["aud"] in ([client_id], client_id)

    # The same assertion again, even with a fresh code: refused (single use, RFC 7523 §3 item 7).
    code = next_code(browser, client_id, redirect)
    assert_invalid_client(token_request(provider, browser, redirect, code, signed))
    # The code was not consumed by the refused request: a fresh assertion redeems it.
    response = token_request(provider, browser, redirect, code, assertion(provider, client_id, key))
    assert response.status_code == 200, response.text

    # The issuer is an accepted audience too; so is an ES256 key, and client_id may be repeated.
    ec = new_key("EC")
    ec_id, _, ec_redirect = provider.add_client(trusted=True, auth_method="private_key_jwt", jwks=public_jwks(ec))
    code = first_code(provider, browser, ec_id, ec_redirect)
    response = token_request(provider, browser, ec_redirect, code, assertion(provider, ec_id, ec, aud=provider.url),
                             client_id=ec_id)
    assert response.status_code == 200, response.text


def test_bad_assertions_are_invalid_client(provider):
    key, other = new_key("RSA"), new_key("RSA")
    client_id, _, redirect = provider.add_client(trusted=True, auth_method="private_key_jwt", jwks=public_jwks(key))
    browser = provider.flow()
    code = first_code(provider, browser, client_id, redirect)
    aud = f"{provider.url}/token"
    header_none = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims_for(client_id, aud)).encode())
    hs_header = b64(json.dumps({"alg": "HS256", "kid": key.kid}).encode())
    hs_input = f"{hs_header}.{payload}".encode()
    pem = key.as_pem(private=False)
    hs256_with_public_key = f"{hs_header}.{payload}.{b64(hmac.new(pem, hs_input, hashlib.sha256).digest())}"

    bad = {
        "wrong audience": assertion(provider, client_id, key, aud="https://other.example/token"),
        "expired": assertion(provider, client_id, key, exp_in=-120, iat=int(time.time()) - 180),
        "lives too long": assertion(provider, client_id, key, exp_in=3 * 3600),
        "signed by another key": sign(claims_for(client_id, aud), other.__class__.import_key(
            {**other.as_dict(private=True), "kid": key.kid})),
        "unknown kid": assertion(provider, client_id, other),
        "alg none": f"{header_none}.{payload}.",
        "HS256 with the public key": hs256_with_public_key,
        "iss is not sub": assertion(provider, client_id, key, iss="someone-else"),
        "no jti": assertion(provider, client_id, key, jti=None),
        "no exp": sign({k: v for k, v in claims_for(client_id, aud).items() if k != "exp"}, key),
        "unknown client": sign(claims_for("no-such-client", aud), key),
        "garbage": "not.a.jwt",
    }
    for reason, value in bad.items():
        response = token_request(provider, browser, redirect, code, value)
        assert_invalid_client(response)
    # None of that consumed the code.
    response = token_request(provider, browser, redirect, code, assertion(provider, client_id, key))
    assert response.status_code == 200, response.text


def test_methods_do_not_mix(provider):
    """A private_key_jwt client cannot use a secret (or nothing); a secret client cannot use an assertion."""
    key = new_key("RSA")
    client_id, _, redirect = provider.add_client(trusted=True, auth_method="private_key_jwt", jwks=public_jwks(key))
    browser = provider.flow()
    code = first_code(provider, browser, client_id, redirect)
    assert_invalid_client(token_request(provider, browser, redirect, code, None, auth=(client_id, "guess")))
    assert_invalid_client(token_request(provider, browser, redirect, code, None, client_id=client_id,
                                        client_secret="guess"))
    assert_invalid_client(token_request(provider, browser, redirect, code, None, client_id=client_id))

    secret_id, secret, secret_redirect = provider.add_client(trusted=True)
    code = first_code(provider, browser, secret_id, secret_redirect)
    assert_invalid_client(token_request(provider, browser, secret_redirect, code,
                                        assertion(provider, secret_id, key)))
    # ... but its secret still works either way (basic or post).
    response = token_request(provider, browser, secret_redirect, code, None, client_id=secret_id,
                             client_secret=secret)
    assert response.status_code == 200, response.text


# ---- keys at a jwks_uri ------------------------------------------------------------------------

class JWKSServer:
    """A client's JWKS served over HTTP on loopback, counting the fetches."""

    def __init__(self, jwks: dict):
        self.jwks, self.fetches = jwks, 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                owner.fetches += 1
                body = json.dumps(owner.jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/jwk-set+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_jwks_uri_keys_and_one_refetch_on_unknown_kid(provider):
    first, second, stranger = new_key("RSA"), new_key("EC"), new_key("RSA")
    served = JWKSServer(public_jwks(first))
    try:
        client_id, _, redirect = provider.add_client(trusted=True, auth_method="private_key_jwt", jwks_uri=served.url)
        browser = provider.flow()
        code = first_code(provider, browser, client_id, redirect)
        response = token_request(provider, browser, redirect, code, assertion(provider, client_id, first))
        assert response.status_code == 200, response.text
        assert served.fetches == 1

        # Cached: another exchange fetches nothing.
        code = next_code(browser, client_id, redirect)
        response = token_request(provider, browser, redirect, code, assertion(provider, client_id, first))
        assert response.status_code == 200, response.text
        assert served.fetches == 1

        # The client rotates: an unknown kid makes the provider fetch the JWKS once more.
        served.jwks = public_jwks(first, second)
        code = next_code(browser, client_id, redirect)
        response = token_request(provider, browser, redirect, code, assertion(provider, client_id, second))
        assert response.status_code == 200, response.text
        assert served.fetches == 2

        # Forged kids cannot make the provider hammer the client: no new fetch within a minute.
        code = next_code(browser, client_id, redirect)
        assert_invalid_client(token_request(provider, browser, redirect, code,
                                            assertion(provider, client_id, stranger)))
        assert served.fetches == 2
        response = token_request(provider, browser, redirect, code, assertion(provider, client_id, second))
        assert response.status_code == 200, response.text
    finally:
        served.stop()


# ---- the operator's commands -------------------------------------------------------------------

def idp_json(provider, tmp_path, *args: str):
    out = idp(provider, *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def one_line_error(out: subprocess.CompletedProcess, message: str) -> None:
    assert out.returncode != 0, out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_cli_registers_shows_rotates_disables_and_enables(provider, tmp_path):
    key = new_key("EC")
    jwks_file = tmp_path / "agency-jwks.json"
    jwks_file.write_text(json.dumps(public_jwks(key)))
    out = idp(provider, "clients", "add", "--name", "Customs", "--redirect-uri",
              "http://127.0.0.1:9/customs/cb", "--auth-method", "private_key_jwt", "--jwks", str(jwks_file),
              "--backchannel-logout-uri", "https://customs.example.ir/bcl", "--allow-national-id", "--trusted",
              "--sector", "customs.example.ir", "--json")
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    client_id = created["client_id"]
    assert created["client_secret"] is None

    shown = idp_json(provider, tmp_path, "clients", "show", client_id)
    assert shown["token_endpoint_auth_method"] == "private_key_jwt" and shown["has_secret"] is False
    meta = shown["metadata"]
    assert meta["jwks"]["keys"][0]["kid"] == key.kid and "d" not in meta["jwks"]["keys"][0]
    assert meta["backchannel_logout_uri"] == "https://customs.example.ir/bcl"
    assert meta["allow_national_id"] is True and "national_id" in meta["scope"].split()
    assert meta["sector_identifier"] == "customs.example.ir"
    assert "hash" not in json.dumps(shown)
    one_line_error(idp(provider, "clients", "rotate-secret", client_id), "not a secret")

    # The client works; disabled, it is unknown to the token endpoint; enabled, it works again.
    browser = provider.flow()
    redirect = "http://127.0.0.1:9/customs/cb"
    code = first_code(provider, browser, client_id, redirect)
    assert idp(provider, "clients", "disable", client_id).returncode == 0
    assert idp_json(provider, tmp_path, "clients", "show", client_id)["disabled_at"]
    assert_invalid_client(token_request(provider, browser, redirect, code, assertion(provider, client_id, key)))
    assert idp(provider, "clients", "enable", client_id).returncode == 0
    response = token_request(provider, browser, redirect, code, assertion(provider, client_id, key))
    assert response.status_code == 200, response.text

    # A secret client: rotate-secret prints a new secret once; the old one stops working.
    secret_id, old_secret, secret_redirect = provider.add_client(trusted=True)
    out = idp(provider, "clients", "rotate-secret", secret_id, "--json")
    assert out.returncode == 0, out.stderr
    new_secret = json.loads(out.stdout)["client_secret"]
    assert len(new_secret) >= 40 and new_secret != old_secret
    shown = json.dumps(idp_json(provider, tmp_path, "clients", "show", secret_id))
    assert new_secret not in shown and "sha256$" not in shown
    code = first_code(provider, browser, secret_id, secret_redirect)
    assert_invalid_client(browser.exchange(secret_id, old_secret, secret_redirect, code))
    response = browser.exchange(secret_id, new_secret, secret_redirect, code)
    assert response.status_code == 200, response.text

    one_line_error(idp(provider, "clients", "show", "no-such-client"), "no such client")
    one_line_error(idp(provider, "clients", "disable", "no-such-client"), "no such client")


@pytest.mark.parametrize("args,message", [
    (("--auth-method", "private_key_jwt", "--jwks", "{private}"), "private"),
    (("--auth-method", "private_key_jwt", "--jwks-uri", "http://keys.example.ir/jwks"), "plain http"),
    (("--public", "--auth-method", "private_key_jwt"), "--public"),
    (("--redirect-uri", "https://b.example.ir/cb"), "--sector"),
])
def test_cli_registration_errors_are_one_line(tmp_path, args, message):
    """Refused before the database is touched: no provider needed."""
    private = tmp_path / "private.json"
    private.write_text(json.dumps({"keys": [new_key("EC").as_dict(private=True)]}))
    args = tuple(str(private) if a == "{private}" else a for a in args)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "IDP_SERVER_SECRET_KEY": "t" * 48,
           "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.db'}", "IDP_KEYS_DIR": str(tmp_path / "keys")}
    out = run_idp(env, "clients", "add", "--name", "X", "--redirect-uri", "https://a.example.ir/cb", *args)
    one_line_error(out, message)


def test_registration_is_validated(provider, tmp_path):
    """The rules behind `idp clients add` (agencies.register_client), checked in-process."""
    from idp.protocol.agencies import InvalidClientMetadata, register_client

    ec = new_key("EC")
    good = {"name": "X", "redirect_uris": ["https://a.example.ir/cb"]}
    refused = [
        ({"auth_method": "private_key_jwt", "jwks": {"keys": [ec.as_dict(private=True)]}}, "private"),
        ({"auth_method": "private_key_jwt", "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}, "symmetric"),
        ({"auth_method": "private_key_jwt"}, "--jwks-uri or --jwks"),
        ({"auth_method": "private_key_jwt", "jwks": public_jwks(ec), "jwks_uri": "https://k.example.ir/j"}, "one of"),
        ({"auth_method": "private_key_jwt", "jwks_uri": "http://keys.example.ir/jwks"}, "plain http"),
        ({"jwks_uri": "https://keys.example.ir/jwks"}, "private_key_jwt"),
        ({"redirect_uris": ["https://user:pw@a.example.ir/cb"]}, "credentials"),
        ({"redirect_uris": ["ftp://a.example.ir/cb"]}, "https"),
        ({"redirect_uris": ["https://a.example.ir/cb", "https://b.example.ir/cb"]}, "--sector"),
        ({"redirect_uris": ["https://a.example.ir/cb"], "sector": "https://x/y"}, "host name"),
        ({"subject_type": "public", "sector": "a.example.ir"}, "pairwise"),
        ({"backchannel_logout_uri": "https://a.example.ir/bcl#x"}, "fragment"),
        ({"redirect_uris": ["https://a.example.ir/c b"]}, "spaces"),
    ]
    with provider.app.app_context():
        for changes, message in refused:
            with pytest.raises(InvalidClientMetadata, match=message if message != "--sector" else "sector"):
                register_client(**{**good, **changes})
        client, secret = register_client("Tax", ["https://a.tax.example.ir/cb", "https://b.tax.example.ir/cb"],
                                          sector="Tax.Example.IR")
        assert secret and client.client_metadata["sector_identifier"] == "tax.example.ir"
        client, secret = register_client("Pub", ["https://a.example.ir/cb"], subject_type="public",
                                          auth_method="client_secret_post")
        assert secret and client.client_metadata["subject_type"] == "public"
        assert client.token_endpoint_auth_method == "client_secret_post"
        client, secret = register_client("App", ["http://127.0.0.1:7/cb"], public=True)
        assert secret is None and client.token_endpoint_auth_method == "none"
        from idp.protocol.agencies import rotate_secret

        with pytest.raises(InvalidClientMetadata, match="not a secret"):
            rotate_secret(client)
