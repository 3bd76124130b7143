"""What the tests share: a browser-like HTTP client that walks the login, readers for the SMS
outbox, a scripted SMS gateway, loopback servers (agencies, logout receivers), the `idp` command
runner and a controllable clock."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from html import unescape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import requests
from joserfc import jwt
from joserfc.jwk import KeySet

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64(data: bytes | dict) -> str:
    """base64url without padding (JOSE); a dict is its compact JSON first."""
    if isinstance(data, dict):
        data = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pkce_pair() -> tuple[str, str]:
    """A code_verifier and its S256 code_challenge (RFC 7636 §4.1-4.2)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class Outbox:
    """The file SMS backend's JSON-lines outbox."""

    def __init__(self, path: Path):
        self.path = path

    def messages(self, to: str | None = None) -> list[dict]:
        if not self.path.exists():
            return []
        rows = [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [r for r in rows if to is None or r["to"] == to]

    def last_code(self, to: str, after: int = 0, timeout: float = 5.0) -> str:
        """The newest code sent to a number, waiting for the sender thread (more than ``after`` messages)."""
        found = wait_until(lambda: len(self.messages(to)) > after, timeout)
        assert found, f"no SMS was sent to {to}"
        return self.messages(to)[-1]["code"]

    def settle(self, seconds: float = 0.3) -> None:
        """Give queued messages time to land before asserting that none was sent."""
        time.sleep(seconds)  # real time: the SMS sender is the provider's own background thread; nothing to wait on


def form_fields(html: str) -> dict[str, str]:
    """The hidden inputs of the page's form (CSRF token and the like), to be sent back unchanged."""
    fields = {}
    for tag in re.findall(r"<input[^>]*>", html):
        if 'type="hidden"' in tag:
            name = re.search(r'name="([^"]+)"', tag).group(1)
            value = re.search(r'value="([^"]*)"', tag)
            fields[name] = unescape(value.group(1)) if value else ""
    return fields


def csrf_token(html: str) -> str:
    """The CSRF token of the page's form."""
    return form_fields(html)["csrf_token"]


def form_action(html: str, base: str) -> str:
    action = re.search(r'<form[^>]*action="([^"]*)"', html).group(1)
    return urljoin(base, unescape(action))


class FlowClient:
    """One browser: a cookie jar that walks authorize -> login -> code -> redirect."""

    def __init__(self, provider):
        self.provider = provider
        self.http = requests.Session()
        self.last_verifier: str | None = None

    def authorize_url(self, client_id: str, redirect_uri: str, scope: str = "openid profile", **extra) -> str:
        verifier, challenge = pkce_pair()
        self.last_verifier = verifier
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
                  "scope": scope, "state": secrets.token_urlsafe(8), "nonce": secrets.token_urlsafe(8),
                  "code_challenge": challenge, "code_challenge_method": "S256"}
        params.update(extra)
        params = {k: v for k, v in params.items() if v is not None}
        return f"{self.provider.url}/authorize?{urlencode(params)}"

    def get(self, url: str, **kw) -> requests.Response:
        return self.http.get(url, allow_redirects=False, timeout=10, **kw)

    def follow(self, response: requests.Response, stop_prefix: str) -> requests.Response:
        """Follow redirects on the provider until one points at stop_prefix (the client)."""
        hops = 0
        while response.is_redirect:
            location = urljoin(response.url, response.headers["Location"])
            if location.startswith(stop_prefix):
                return response
            response = self.get(location)
            hops += 1
            assert hops < 10, "redirect loop"
        return response

    def submit(self, page: requests.Response, data: dict[str, str]) -> requests.Response:
        fields = form_fields(page.text)
        fields.update(data)
        return self.http.post(form_action(page.text, page.url), data=fields, allow_redirects=False, timeout=10)

    def start(self, client_id: str, redirect_uri: str, **extra) -> requests.Response:
        """Send the authorization request and follow to the first page (or to the client)."""
        return self.follow(self.get(self.authorize_url(client_id, redirect_uri, **extra)), redirect_uri)

    def login(self, client_id: str, redirect_uri: str, national_id: str, mobile: str, **extra) -> dict:
        """The whole login; returns the authorization response parameters at the redirect URI."""
        page = self.start(client_id, redirect_uri, **extra)
        assert page.status_code == 200 and 'name="national_id"' in page.text, page.text[:500]
        sent_before = len(self.provider.outbox.messages(mobile_e164(mobile)))
        page = self.follow(self.submit(page, {"national_id": national_id, "mobile": mobile}), redirect_uri)
        assert 'name="otp"' in page.text, page.text[:500]
        code = self.provider.outbox.last_code(mobile_e164(mobile), after=sent_before)
        final = self.follow(self.submit(page, {"otp": code}), redirect_uri)
        return redirect_params(final, redirect_uri)

    def exchange(self, client_id: str, secret: str | None, redirect_uri: str, code: str,
                 verifier: str | None = None, **extra) -> requests.Response:
        """The token request (client_secret_basic, or `none` for a public client)."""
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": verifier or self.last_verifier}
        data.update(extra)
        data = {k: v for k, v in data.items() if v is not None}
        auth = (client_id, secret) if secret else None
        if not secret:
            data["client_id"] = client_id
        return requests.post(f"{self.provider.url}/token", data=data, auth=auth, timeout=10)


def login_url(page: requests.Response) -> str:
    """The address of a first login page's own flow (``/login?r=...``): /authorize answers with
    the page itself, whose form posts back to that address."""
    return form_action(page.text, page.url)


def shows_login(r) -> bool:
    """/authorize answered with the first login page of a new flow (its form posts to /login?r=)."""
    text = r.text if hasattr(r, "text") else r.get_data(as_text=True)
    return r.status_code == 200 and 'name="national_id"' in text and 'action="/login?r=' in text


def identify_page(browser: FlowClient, client_id: str, redirect: str) -> requests.Response:
    """A new authorization request, stopped at the login form (national ID + mobile)."""
    page = browser.start(client_id, redirect)
    assert page.status_code == 200 and 'name="national_id"' in page.text, page.text[:300]
    return page


def code_page(provider, browser: FlowClient, client: tuple, citizen: tuple[str, str],
              wait_for_code: bool = True) -> tuple[requests.Response, str | None]:
    """The one-time code form after the login form, and the code texted for it (None when not
    ``wait_for_code``: a pair that is not registered gets the same page but no SMS)."""
    national_id, mobile = citizen
    page = identify_page(browser, client[0], client[2])
    before = len(provider.outbox.messages(mobile_e164(mobile)))
    answer = browser.submit(page, {"national_id": national_id, "mobile": mobile})
    assert answer.status_code == 303, (answer.status_code, answer.text[:300])
    page = browser.follow(answer, client[2])
    assert 'name="otp"' in page.text, page.text[:300]
    code = provider.outbox.last_code(mobile_e164(mobile), after=before) if wait_for_code else None
    return page, code


def redirect_params(response: requests.Response, redirect_uri: str) -> dict[str, str]:
    """The query parameters of a redirect to the client."""
    assert response.is_redirect, f"expected a redirect, got {response.status_code}: {response.text[:300]}"
    location = response.headers["Location"]
    assert location.startswith(redirect_uri + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def mobile_e164(mobile: str) -> str:
    from idp.citizens.national_id import parse_mobile

    return parse_mobile(mobile)


def verify_id_token(provider_url: str, id_token: str) -> dict:
    """Verify an ID token with the published JWKS, fetched over HTTP as an agency would."""
    jwks = requests.get(f"{provider_url}/jwks", timeout=10).json()
    token = jwt.decode(id_token, KeySet.import_key_set(jwks), algorithms=["RS256", "ES256"])
    return {"header": token.header, "claims": token.claims}


def wait_until(predicate, timeout: float = 5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)  # polling interval; the condition comes from another thread or process
    return False


class Clock:
    """``time.time()`` as some idp modules read it, moved forward by the test instead of sleeping.

    The in-process provider reads the clock through each module's ``time`` name; the modules
    given here see a ``time`` whose ``time()`` is the real one plus ``offset`` (everything else,
    ``monotonic`` and ``sleep`` included, is the real module). Redis TTLs are not affected: expire
    such keys with :func:`end_cooloffs` and the like."""

    def __init__(self, monkeypatch, *modules):
        self.offset = 0.0
        shifted = _ShiftedTime(self)
        for module in modules:
            monkeypatch.setattr(module, "time", shifted)

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def time(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        """For code that takes its clock as an argument (``KeyRing(clock=...)``)."""
        return time.monotonic() + self.offset


class _ShiftedTime:
    def __init__(self, clock: Clock):
        self._clock = clock

    def time(self) -> float:
        return self._clock.time()

    def __getattr__(self, name):
        return getattr(time, name)


def end_cooloffs(provider) -> int:
    """End every cool-off of a provider now, as if their time had passed (they are Redis keys
    with a TTL); returns how many there were."""
    import redis

    client = redis.Redis.from_url(provider.settings.store.url)
    keys = list(client.scan_iter(match=f"{provider.settings.store.prefix}cool:*"))
    return client.delete(*keys) if keys else 0


def run_idp(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`idp ...` in its own process with exactly this environment, from the repository root."""
    return subprocess.run([sys.executable, "-m", "idp.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def idp(provider, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`idp ...` as an operator runs it against a test provider: configured as the provider is
    (its database and its store: a change made here is read by the running provider)."""
    return run_idp(cli_env(provider), *args, timeout=timeout)


def cli_env(provider) -> dict:
    """An operator's environment for `idp` commands against a test provider: every setting as
    an IDP_<SECTION>_<KEY> variable."""
    import os

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    for section, keys in provider.settings.as_dict(reveal_secrets=True).items():
        for key, value in keys.items():
            env[f"IDP_{section.upper()}_{key.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


class LogoutReceiver:
    """An agency's back-channel logout endpoint (OIDC Back-Channel Logout 1.0 §2.5) on a loopback
    port: records every POST and answers with the queued ``statuses``, then 200, each with
    Cache-Control: no-store."""

    def __init__(self, statuses: list[int] | None = None):
        self.posts: list[dict] = []
        self.statuses = list(statuses or [])
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                with receiver.lock:
                    receiver.posts.append({"path": self.path, "content_type": self.headers.get("Content-Type", ""),
                                           "form": {k: v[0] for k, v in parse_qs(body).items()}})
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def posts_to(self, path: str) -> list[dict]:
        with self.lock:
            return [p for p in self.posts if p["path"] == path]

    def tokens_for(self, path: str) -> list[str]:
        return [p["form"]["logout_token"] for p in self.posts_to(path)]

    def wait_for(self, path: str, timeout: float = 15.0) -> list[dict]:
        assert wait_until(lambda: self.posts_to(path), timeout), f"no back-channel logout reached {path}"
        return self.posts_to(path)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class ServedApp:
    """A WSGI app served on a loopback port from a background thread."""

    def __init__(self, app, port: int, host: str = "127.0.0.1"):
        from werkzeug.serving import make_server

        self.app = app
        self.server = make_server(host, port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.thread.join(5)


class LiveAgency(ServedApp):
    """One demo agency web app (clients/agency_web), registered as a client of the provider."""

    def __init__(self, provider, kind: str, name: str, secret: str | None = None):
        """``secret``: what the app is configured with, when not the one registered (a stale one)."""
        from clients.agency_web import create_app as create_agency_web

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id, self.secret, redirect = provider.add_client(
            name=name, redirect_uri=f"{self.url}/callback", post_logout_redirect_uris=[f"{self.url}/"])
        assert redirect == f"{self.url}/callback"
        super().__init__(create_agency_web({
            "AGENCY_ISSUER": provider.url, "AGENCY_CLIENT_ID": self.client_id,
            "AGENCY_CLIENT_SECRET": secret or self.secret, "AGENCY_PORT": str(self.port), "AGENCY_KIND": kind,
            "AGENCY_SECRET_KEY": secrets.token_hex(32),
        }), self.port)


class Gateway(ThreadingHTTPServer):
    """An SMS gateway on 127.0.0.1: replies from a script, records every request."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _GatewayHandler)
        self.script: list[tuple[int, dict | str, float]] = []
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def reply(self, *replies):
        """Queue replies: (status, body) or (status, body, seconds to sleep first); the last one repeats."""
        self.script = [r if len(r) == 3 else (*r, 0.0) for r in replies]

    def handle_error(self, request, client_address):
        pass  # a client that gave up on a slow reply closes the socket; nothing to report


class _GatewayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is visible

    def do_POST(self):  # noqa: N802 - http.server's naming
        self._serve()

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._serve()

    def _serve(self):
        server: Gateway = self.server
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        record = {"method": self.command, "path": url.path, "query": parse_qs(url.query),
                  "headers": dict(self.headers), "body": raw, "port": self.client_address[1]}
        with server.lock:
            server.requests.append(record)
            status, body, delay = server.script[0] if len(server.script) == 1 else server.script.pop(0)
        if delay:
            time.sleep(delay)  # a slow gateway, as the sender's timeout sees it: real time on purpose
        data = (json.dumps(body) if isinstance(body, dict) else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@contextmanager
def running_gateway():
    """A :class:`Gateway` serving from a background thread until the block ends."""
    gateway = Gateway()
    thread = threading.Thread(target=gateway.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield gateway
    finally:
        gateway.shutdown()
        gateway.server_close()
