"""Fixtures shared by the agency-side tests: signing keys, a token signer and a real local HTTP server.

Nothing here talks to the identity provider. The "provider" is an
http.server on 127.0.0.1 with an ephemeral port that serves whatever JSON
a test puts in its routes and counts every request, so the tests exercise
the real HTTP path (requests, sockets) without mocks.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey


@dataclass
class Seen:
    """One request as the local server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class LocalServer:
    """A JSON server for tests: ``routes`` maps a path to a dict or to a function of Seen."""

    routes: dict[str, Any] = field(default_factory=dict)
    hits: Counter = field(default_factory=Counter)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    def answer(self, request: Seen) -> tuple[int, Any]:
        """The status and JSON body for a request; 404 for unknown paths."""
        self.hits[request.path] += 1
        self.seen.append(request)
        route = self.routes.get(request.path)
        if route is None:
            return 404, {"error": "not_found"}
        if callable(route):
            return route(request)
        return 200, route


def _handler_for(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to one LocalServer."""

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            """Answer any method from the server's routes."""
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            request = Seen(self.command, parts.path, parse_qs(parts.query),
                           dict(self.headers.items()), self.rfile.read(length))
            status, payload = server.answer(request)
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _serve

        def log_message(self, *args: Any) -> None:
            """Keep test output quiet."""

    return Handler


@pytest.fixture
def local_server():
    """A started LocalServer on 127.0.0.1, port 0; shut down after the test."""
    server = LocalServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(server))
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield server
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@dataclass
class Keys:
    """The provider's signing keys for a test."""

    rsa: RSAKey
    ec: ECKey

    def jwks(self, *extra) -> dict[str, Any]:
        """The public JWKS document, optionally with more keys."""
        return KeySet([self.rsa, self.ec, *extra]).as_dict(private=False)


@pytest.fixture(scope="session")
def keys() -> Keys:
    """An RS256 and an ES256 key, generated once per test session (RSA is slow)."""
    return Keys(
        rsa=RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig", "alg": "RS256"}),
        ec=ECKey.generate_key("P-256", parameters={"kid": "ec-1", "use": "sig", "alg": "ES256"}),
    )


@pytest.fixture
def provider(local_server, keys) -> LocalServer:
    """The local server dressed as an identity provider: discovery and JWKS."""
    local_server.routes["/.well-known/openid-configuration"] = {
        "issuer": local_server.url,
        "jwks_uri": local_server.url + "/jwks",
    }
    local_server.routes["/jwks"] = keys.jwks()
    return local_server


def access_token_claims(issuer: str, **overrides: Any) -> dict[str, Any]:
    """RFC 9068 §2.2 claims for a valid access token; ``None`` overrides remove a claim."""
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": "pairwise-subject-1",
        "aud": "https://api.agency.example",
        "client_id": "agency-web",
        "scope": "openid profile",
        "acr": "urn:ir:idp:otp",
        "amr": ["otp", "sms"],
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


@pytest.fixture
def sign(keys) -> Callable[..., str]:
    """Sign claims as the provider would: ``sign(claims, key=..., **header)``."""

    def sign(claims: dict[str, Any], key=None, **header: Any) -> str:
        """A compact JWS of ``claims``; header values of None are left out."""
        key = key or keys.rsa
        alg = "RS256" if isinstance(key, RSAKey) else "ES256"
        full_header = {"alg": alg, "kid": key.kid, "typ": "at+jwt", **header}
        full_header = {name: value for name, value in full_header.items() if value is not None}
        return jwt.encode(full_header, claims, key, algorithms=[alg], default_type=None)

    return sign
