"""More than one node: `idp serve` instances sharing one PostgreSQL, one Redis, one keys directory
and one secret, as they run behind a load balancer.

Real deployments have one issuer (the proxy's https URL). Here the issuer is node A's loopback
URL; node B is reached on its own port with the same ``Host`` header a proxy would pass on, so
every node answers for the same issuer. The browser's cookie jar is shared between the nodes
(cookies do not depend on the port), as it is behind a proxy.

The :class:`Deployment` and :class:`Node` helpers here also run the fault and race tests
(tests/test_faults.py, tests/test_races.py) and the soak (bench/soak.py).
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from .helpers import FlowClient, Outbox, free_port, redirect_params, run_idp, verify_id_token

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("IDP_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")

#: Every request of these tests comes from 127.0.0.1 and many logins are of one citizen: the
#: limits are tested on their own (tests/test_limits.py).
GENEROUS_LIMITS = {"IDP_LIMITS_STARTS_PER_IP": "1000000/60", "IDP_LIMITS_CODE_CHECKS_PER_IP": "1000000/60",
                   "IDP_LIMITS_PAUSED_REQUESTS_PER_IP": "1000000/60",
                   "IDP_LIMITS_CODES_PER_NATIONAL_ID": "1000000/900",
                   "IDP_LIMITS_CODES_PER_NATIONAL_ID_DAILY": "1000000/86400",
                   "IDP_LIMITS_CODES_PER_MOBILE": "1000000/86400"}


def create_database(admin_url: str = PG_ADMIN_URL) -> str:
    """A new empty PostgreSQL database; returns its URL (psycopg.Error when the server is down)."""
    import psycopg

    name = f"idp_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{admin_url.rsplit('/', 1)[0]}/{name}"


def drop_database(url: str, admin_url: str = PG_ADMIN_URL) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.Error:
        pass


def children(pid: int) -> list[int]:
    """The live child processes of a process (idp serve's workers), from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Node:
    """One `idp serve` process (a granian master and its workers) of a deployment."""

    def __init__(self, deployment: "Deployment", port: int, log: Path, proc: subprocess.Popen):
        self.deployment, self.port, self.log, self.proc = deployment, port, log, proc
        self.url = f"http://127.0.0.1:{port}"
        self.outbox = deployment.outbox

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the node answers and has forked all its workers."""
        deadline = time.monotonic() + timeout
        expected = int(self.deployment.env["IDP_SERVER_WORKERS"]) or 2 * os.cpu_count()  # 0: two per core
        while True:
            try:
                if requests.get(f"{self.url}/healthz", timeout=3).status_code == 200 \
                        and len(self.workers()) == expected:
                    return
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"idp serve on {self.port} did not start:\n{self.log_text()[-3000:]}")
            time.sleep(0.2)  # polling a separate `idp serve` process until it listens

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def workers(self) -> list[int]:
        return children(self.proc.pid)

    def session(self) -> requests.Session:
        """An HTTP session that reaches this node as the proxy would: with the issuer's Host."""
        http = requests.Session()
        http.headers["Host"] = self.deployment.issuer_host
        return http

    def flow(self) -> FlowClient:
        """A browser on this node (the Host header is the issuer's, as behind a proxy)."""
        browser = FlowClient(self)
        browser.http.headers["Host"] = self.deployment.issuer_host
        return browser

    def tracebacks(self) -> list[str]:
        """Python tracebacks in the node's log (an unexpected error; a fault must not cause one)."""
        text = self.log_text()
        return [text[max(0, i - 200):i + 1500] for i in _find_all(text, "Traceback (most recent call last)")]

    def terminate(self) -> None:
        """Ask the node to stop (SIGTERM to the master and its workers)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        self.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _find_all(text: str, needle: str) -> list[int]:
    found, at = [], text.find(needle)
    while at >= 0:
        found.append(at)
        at = text.find(needle, at + 1)
    return found


def assert_no_tracebacks(dep: "Deployment") -> None:
    for node in dep.nodes:
        found = node.tracebacks()
        assert not found, f"node {node.port} logged {len(found)} traceback(s); the first:\n{found[0]}"


class Deployment:
    """A provider deployment: one database, one store (its own key prefix), one keys directory,
    one secret, one SMS outbox, one issuer; any number of `idp serve` nodes.

    ``app`` is an in-process instance of the same configuration, for registering clients and
    citizens and for looking at the database, as an operator's `idp` commands would.
    """

    def __init__(self, tmp: Path, database_url: str, store_url: str, workers: int = 2, threads: int = 4,
                 **env_extra: str):
        from idp import create_app
        from idp.platform import keys
        from idp.platform.database import upgrade_database
        from idp.platform.settings import load_settings

        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.issuer_port = free_port()
        self.issuer = f"http://127.0.0.1:{self.issuer_port}"
        self.issuer_host = urlsplit(self.issuer).netloc
        self.prefix = f"idptest:{uuid.uuid4().hex[:8]}:"
        self.store_url = store_url
        self.outbox = Outbox(self.tmp / "outbox.jsonl")
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.tmp),
                    "PYTHONUNBUFFERED": "1",
                    "IDP_SERVER_SECRET_KEY": secrets.token_urlsafe(48), "IDP_SERVER_ISSUER": self.issuer,
                    "IDP_SERVER_WORKERS": str(workers), "IDP_SERVER_THREADS": str(threads),
                    "IDP_DATABASE_URL": database_url, "IDP_DATABASE_POOL_SIZE": "4",
                    "IDP_STORE_URL": store_url, "IDP_STORE_PREFIX": self.prefix,
                    "IDP_KEYS_DIR": str(self.tmp / "keys"), "IDP_SMS_BACKEND": "file",
                    "IDP_SMS_OUTBOX": str(self.outbox.path), **GENEROUS_LIMITS, **env_extra}
        self.settings = load_settings(None, env=self.env)
        keys.ensure(self.settings.keys.dir)
        self.app = create_app(self.settings)
        upgrade_database(self.app)
        self.nodes: list[Node] = []

    # ---- nodes ----------------------------------------------------------------------------
    def start_node(self, port: int | None = None, wait: bool = True) -> Node:
        """Start `idp serve`; the first node listens on the issuer's port."""
        port = port or (self.issuer_port if not self.nodes else free_port())
        log = self.tmp / f"serve-{port}.log"
        env = {**self.env, "IDP_SERVER_BIND": f"127.0.0.1:{port}"}
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "idp.cli", "serve"], env=env, cwd=ROOT, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        node = Node(self, port, log, proc)
        self.nodes.append(node)
        if wait:
            node.wait_ready()
        return node

    def cli(self, *args: str, timeout: int = 60) -> subprocess.CompletedProcess:
        """An operator's `idp` command against this deployment."""
        return run_idp(self.env, *args, timeout=timeout)

    def stop(self) -> None:
        for node in self.nodes:  # all at once: each takes a few seconds to stop gracefully
            node.terminate()
        for node in self.nodes:
            node.stop()
        with self.app.app_context():
            from idp.platform.database import db

            db.session.remove()
            db.engine.dispose()

    def forget_store_keys(self) -> None:
        """Delete this deployment's keys from a shared Redis (its prefix only; never a FLUSH)."""
        import redis

        try:
            r = redis.Redis.from_url(self.store_url, socket_timeout=3, socket_connect_timeout=3)
            batch = []
            for key in r.scan_iter(match=self.prefix + "*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    r.delete(*batch)
                    batch = []
            if batch:
                r.delete(*batch)
        except redis.RedisError:
            pass

    # ---- data -------------------------------------------------------------------------------
    def add_client(self, **kwargs):
        """Register a client; returns (client_id, secret, redirect_uri)."""
        from idp.protocol.agencies import register_client

        redirect = kwargs.pop("redirect_uri", f"http://127.0.0.1:9/{uuid.uuid4().hex[:6]}/cb")
        kwargs.setdefault("trusted", True)
        kwargs.setdefault("post_logout_redirect_uris", [redirect.rsplit("/", 1)[0] + "/"])
        with self.app.app_context():
            client, secret = register_client(kwargs.pop("name", "Test agency"), [redirect], **kwargs)
            return client.client_id, secret, redirect

    def add_citizen(self, birth_date: str = "1980-01-01"):
        """Register a citizen with a random valid national ID; returns (national_id, mobile)."""
        from idp.citizens.national_id import make_national_id
        from idp.citizens.records import add_citizen

        national_id = make_national_id(f"{secrets.randbelow(10**9):09d}")
        mobile = f"+98912{secrets.randbelow(10**7):07d}"
        with self.app.app_context():
            add_citizen(national_id=national_id, mobile=mobile, birth_date=birth_date, given_name="آزمون",
                        family_name="شهروند")
        return national_id, mobile

    def query(self, sql: str, **params):
        """Rows of a read-only SQL query on the deployment's database."""
        from idp.platform.database import db

        with self.app.app_context():
            try:
                return db.session.execute(db.text(sql), params).all()
            finally:
                db.session.remove()


def token_request(url: str, client: tuple[str, str, str], http: requests.Session | None = None,
                  **data) -> requests.Response:
    """POST /token with client_secret_basic."""
    client_id, secret, _ = client
    return (http or requests).post(f"{url}/token", data=data, auth=(client_id, secret), timeout=15)


def login_for_code(node: Node, client, national_id: str, mobile: str, **extra) -> tuple[FlowClient, dict]:
    """A whole login on one node; returns the browser and the authorization response parameters."""
    browser = node.flow()
    return browser, browser.login(client[0], client[2], national_id, mobile, **extra)


def exchange(node: Node, client, browser: FlowClient, code: str) -> requests.Response:
    return token_request(node.url, client, node.session(), grant_type="authorization_code", code=code,
                         redirect_uri=client[2], code_verifier=browser.last_verifier)


# ---- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory, fresh_database, redis_url):
    dep = Deployment(tmp_path_factory.mktemp("multinode"), fresh_database, redis_url, workers=2, threads=4)
    try:
        dep.start_node(wait=False)
        dep.start_node(wait=False)
        for node in dep.nodes:
            node.wait_ready()
        yield dep
    finally:
        dep.stop()
        dep.forget_store_keys()


@pytest.fixture(autouse=True)
def _no_tracebacks(two_nodes):
    yield
    assert_no_tracebacks(two_nodes)


def _on(node: Node, url: str) -> str:
    """The same URL, sent to another node (a proxy choosing a different backend)."""
    parts = urlsplit(url)
    return parts._replace(netloc=f"127.0.0.1:{node.port}").geturl()


# ---- the tests ------------------------------------------------------------------------------------

def test_every_node_speaks_for_the_one_issuer(two_nodes):
    a, b = two_nodes.nodes
    assert b.port != a.port and a.url == two_nodes.issuer
    for node in (a, b):
        meta = node.session().get(f"{node.url}/.well-known/openid-configuration", timeout=10).json()
        assert meta["issuer"] == two_nodes.issuer and meta["token_endpoint"] == f"{two_nodes.issuer}/token"
    assert a.session().get(f"{a.url}/jwks", timeout=10).json() == b.session().get(f"{b.url}/jwks", timeout=10).json()


def test_login_started_on_one_node_finishes_on_the_other(two_nodes):
    a, b = two_nodes.nodes
    client = two_nodes.add_client()
    national_id, mobile = two_nodes.add_citizen()
    browser = a.flow()
    page = browser.start(client[0], client[2])  # authorize and the identify form: node A
    assert page.status_code == 200 and 'name="national_id"' in page.text
    sent = len(a.outbox.messages(mobile))
    answer = browser.submit(page, {"national_id": national_id, "mobile": mobile})  # challenge opened on A
    assert answer.status_code == 303
    code_page = browser.get(_on(b, f"{a.url}{answer.headers['Location']}"))  # the code page from B
    assert code_page.status_code == 200 and 'name="otp"' in code_page.text, code_page.text[:300]
    otp = a.outbox.last_code(mobile, after=sent)
    done = browser.follow(browser.submit(code_page, {"otp": otp}), client[2])  # verified by B, resumed on B
    params = redirect_params(done, client[2])
    assert params["iss"] == two_nodes.issuer
    token = exchange(a, client, browser, params["code"])  # and the code redeemed at A
    assert token.status_code == 200, token.text
    claims = verify_id_token(b.url, token.json()["id_token"])["claims"]
    assert claims["iss"] == two_nodes.issuer
    # The single sign-on session is the same on both nodes: a second agency asks no code on either.
    other = two_nodes.add_client()
    for node in (a, b):
        browser.provider = node
        sso = browser.start(other[0], other[2])
        assert "code" in redirect_params(sso, other[2])


def test_a_code_issued_by_one_node_is_redeemed_at_the_other_once(two_nodes):
    a, b = two_nodes.nodes
    client = two_nodes.add_client()
    national_id, mobile = two_nodes.add_citizen()
    browser, params = login_for_code(a, client, national_id, mobile)
    token = exchange(b, client, browser, params["code"])
    assert token.status_code == 200, token.text
    body = token.json()
    assert verify_id_token(a.url, body["id_token"])["claims"]["iss"] == two_nodes.issuer
    userinfo = a.session().get(f"{a.url}/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"},
                               timeout=10)
    assert userinfo.status_code == 200 and userinfo.json()["sub"]
    again = exchange(a, client, browser, params["code"])  # a replay at the node that issued it
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_a_logout_on_one_node_ends_the_session_on_both(two_nodes):
    a, b = two_nodes.nodes
    client = two_nodes.add_client(scope="openid profile offline_access")
    national_id, mobile = two_nodes.add_citizen()
    browser, params = login_for_code(a, client, national_id, mobile, scope="openid profile offline_access")
    tokens = exchange(a, client, browser, params["code"]).json()
    sso_cookie = browser.http.cookies.get("idp_sso")
    assert sso_cookie
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert b.session().get(f"{b.url}/userinfo", headers=bearer, timeout=10).status_code == 200

    done = browser.get(f"{a.url}/logout?" + requests.compat.urlencode(
        {"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": f"{client[2].rsplit('/', 1)[0]}/"}))
    assert done.status_code == 303, done.text[:300]

    for node in (a, b):
        # The same session cookie, replayed to each node, finds no session: the login form.
        stale = node.flow()
        stale.http.cookies.set("idp_sso", sso_cookie, domain="127.0.0.1", path="/")
        page = stale.start(client[0], client[2])
        assert page.status_code == 200 and 'name="national_id"' in page.text, page.status_code
        # The access tokens of the session are refused, and its refresh tokens revoked.
        refused = node.session().get(f"{node.url}/userinfo", headers=bearer, timeout=10)
        assert refused.status_code == 401
        again = token_request(node.url, client, node.session(), grant_type="refresh_token",
                              refresh_token=tokens["refresh_token"])
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_a_key_rotated_on_one_node_is_used_by_both(two_nodes):
    from joserfc import jws

    a, b = two_nodes.nodes
    client = two_nodes.add_client()
    national_id, mobile = two_nodes.add_citizen()
    before = {k["kid"] for k in a.session().get(f"{a.url}/jwks", timeout=10).json()["keys"]}

    out = two_nodes.cli("keys", "rotate", "--force", "--json")  # an operator, on node A's host
    assert out.returncode == 0, out.stderr
    import json

    promoted = {row["alg"]: row["kid"] for row in json.loads(out.stdout) if row["action"] == "promoted"}
    assert set(promoted) == {"RS256", "ES256"} and not set(promoted.values()) & before

    from idp.platform.keys import RELOAD_SECONDS

    time.sleep(RELOAD_SECONDS + 0.5)  # real time: every worker of every node (separate processes) looks again by then
    for node in (a, b):
        published = {k["kid"] for k in node.session().get(f"{node.url}/jwks", timeout=10).json()["keys"]}
        assert set(promoted.values()) <= published and before <= published, "old keys stay published (retired)"
    for issuing in (a, b, a, b):  # several tokens from each node: each worker signs with the new keys
        browser, params = login_for_code(issuing, client, national_id, mobile)
        body = exchange(issuing, client, browser, params["code"]).json()
        assert jws.extract_compact(body["id_token"].encode()).protected["kid"] == promoted["RS256"]
        assert jws.extract_compact(body["access_token"].encode()).protected["kid"] == promoted["ES256"]
        other = b if issuing is a else a
        verify_id_token(other.url, body["id_token"])
        info = other.session().get(f"{other.url}/userinfo", timeout=10,
                                   headers={"Authorization": f"Bearer {body['access_token']}"})
        assert info.status_code == 200, info.text


def test_a_client_disabled_by_an_operator_is_refused_at_once_by_every_worker(two_nodes):
    """Each worker keeps clients in memory and follows the clients version by a subscription
    (no GET per request): `idp clients disable`, run in a process of its own, reaches every
    worker of both nodes before the operator's next request, and `enable` does too."""
    client = two_nodes.add_client(scope="openid offline_access")

    def statuses() -> set[int]:
        # fresh connections, so that the workers of each node all take some
        return {requests.post(f"{node.url}/introspect", data={"token": "x.y.z"}, auth=client[:2],
                              timeout=10).status_code for node in two_nodes.nodes for _ in range(8)}

    assert statuses() == {200}  # every worker now holds the client
    out = two_nodes.cli("clients", "disable", client[0])
    assert out.returncode == 0, out.stderr
    assert statuses() == {401}
    out = two_nodes.cli("clients", "enable", client[0])
    assert out.returncode == 0, out.stderr
    assert statuses() == {200}
