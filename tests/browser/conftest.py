"""Fixtures of the browser tests: Debian's Chromium driven by Playwright, the provider on SQLite
(with real Redis), a demo agency app, axe-core, and screenshots under test-artifacts/browser/.

Playwright's Python package drives ``/usr/bin/chromium`` through ``executable_path``; it never
downloads a browser of its own (``playwright install`` is not run anywhere). Without Chromium,
Playwright or axe-core a test skips with the reason, except under CI=true, where it fails:
``.ci/browser-deps`` installs all three.
"""
from __future__ import annotations

import os
import re
import secrets
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from .. import conftest as base
from ..conftest import LiveProvider, free_port, make_settings, need

CHROMIUM = Path(os.environ.get("IDP_TEST_CHROMIUM", "/usr/bin/chromium"))
HERE = Path(__file__).resolve().parent
AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = HERE.parents[1] / "test-artifacts" / "browser"
#: Playwright adds --headless and a fresh temporary --user-data-dir itself.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: A small Android phone, the kind most citizens sign in with.
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}


@pytest.fixture(scope="package")
def browser():
    """One headless Chromium for the browser tests (package scope: Playwright's sync API keeps an
    event loop of its own, which must be gone before any other test runs)."""
    if not CHROMIUM.exists():
        need("Chromium", f"{CHROMIUM} is missing; run .ci/browser-deps")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        need("Playwright", f"{exc}; pip install -e '.[test]'")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def axe_script() -> Path:
    """axe-core's browser bundle, from tests/browser/node_modules (npm ci)."""
    if not AXE.exists():
        need("axe-core", f"{AXE} is missing; run .ci/browser-deps (npm ci in tests/browser)")
    return AXE


def add_previews(app) -> None:
    """Test-only routes that show pages a browser cannot easily reach: an error page of any key
    (with a wait or a restart link), the code page with a resend countdown, and (``?_raise=``)
    every error a person can meet, raised at whatever path was asked for.

    They are added to this test's app instance only; the provider itself has no such route.
    """
    import redis
    from flask import render_template, request, url_for
    from flask_wtf.csrf import CSRFError
    from werkzeug.exceptions import BadRequest, MethodNotAllowed

    from idp.platform.errors import (
        ChallengeExpired,
        ChallengeLocked,
        ClientDisabled,
        InteractionGone,
        PageError,
        SmsFailed,
        TooManyRequests,
        UnknownClient,
    )

    def restart() -> str:
        return url_for("login.identify", r="preview")

    raisers = {
        "method_not_allowed": lambda: MethodNotAllowed(valid_methods=["POST"]),
        "bad_request": BadRequest,
        "csrf": lambda: CSRFError("The CSRF token is missing."),
        "interaction": InteractionGone,
        "unknown_client": UnknownClient,
        "client_disabled": ClientDisabled,
        "expired": lambda: ChallengeExpired(restart_url=restart()),
        "locked": lambda: ChallengeLocked(restart_url=restart()),
        "rate_limited": lambda: TooManyRequests(40),
        "cooloff": lambda: TooManyRequests(300, cooloff=True, restart_url=restart()),
        "sms_failed": lambda: SmsFailed(restart_url=restart()),
        "unavailable": lambda: redis.ConnectionError("the store is down"),
        "server_error": lambda: RuntimeError("a bug"),
    }
    app.extensions["idp.test_raisers"] = sorted(raisers)

    @app.before_request
    def preview_raise():
        """``?_raise=<kind>``: that error, handled by the provider's own handlers, at any path
        (a 404 needs no help: any unknown path is one)."""
        kind = request.args.get("_raise")
        if kind in raisers:
            raise raisers[kind]()

    statuses = {"expired": 400, "locked": 429, "cooloff": 429, "rate_limited": 429, "sms_failed": 503,
                "unknown_client": 400, "interaction": 400, "unavailable": 503, "csrf": 400, "not_found": 404,
                "bad_request": 400}

    @app.get("/_preview/error/<key>")
    def preview_error(key):
        error = PageError(restart_url=url_for("home") if request.args.get("restart") else None)
        error.key, error.error, error.status = key, f"preview_{key}", statuses.get(key, 400)
        if request.args.get("wait"):
            error.wait_seconds = int(request.args["wait"])
        raise error

    @app.get("/_preview/otp")
    def preview_otp():
        from idp.platform.i18n import t

        args = request.args
        wait = int(args.get("resend_in", 0))
        return render_template("otp.html", rid="preview", mobile="0912***4567", seconds=int(args.get("seconds", 120)),
                               error=args.get("error"), resend_url=url_for("home"), resend_in=wait,
                               notice=t("otp.resent") if args.get("resent") else None,
                               resend_error=t("otp.resend_wait", seconds=wait) if args.get("resend_error") else None)


@pytest.fixture(scope="module")
def provider(tmp_path_factory, redis_url):
    """The provider over HTTP on loopback: SQLite and real Redis are enough for pages."""
    from idp import create_app
    from idp.platform import keys
    from idp.platform.database import upgrade_database

    tmp = tmp_path_factory.mktemp("browser")
    # Every page comes from 127.0.0.1: the per-IP limits have tests of their own.
    limits = getattr(base, "GENEROUS_IP_LIMITS", {})
    settings = make_settings(tmp, f"sqlite:///{tmp / 'idp.sqlite3'}", redis_url, free_port(), limits=limits)
    keys.ensure(settings.keys.dir)
    app = create_app(settings)
    add_previews(app)
    upgrade_database(app)
    live = LiveProvider(app, settings)
    yield live
    live.stop()
    with app.app_context():
        from idp.platform.database import db

        db.engine.dispose()


class LiveAgency:
    """The demo agency web app (clients/agency_web), a client of the provider, on its own port."""

    def __init__(self, provider, **client_options):
        """``client_options``: more of the client's registration (``accepts_guardians=True``)."""
        from clients.agency_web import create_app as create_agency_web

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id, secret, _ = provider.add_client(
            name="Ministry of Education", name_fa="وزارت آموزش و پرورش", redirect_uri=f"{self.url}/callback",
            **client_options)
        app = create_agency_web({"AGENCY_ISSUER": provider.url, "AGENCY_CLIENT_ID": self.client_id,
                                 "AGENCY_CLIENT_SECRET": secret, "AGENCY_PORT": str(self.port),
                                 "AGENCY_KIND": "report-card", "AGENCY_SECRET_KEY": secrets.token_hex(32)})
        self.server = make_server("127.0.0.1", self.port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.thread.join(5)


@pytest.fixture(scope="module")
def agency(provider):
    live = LiveAgency(provider)
    yield live
    live.stop()


class Shots:
    """Screenshots of one test's steps, numbered in order, under test-artifacts/browser/."""

    def __init__(self, name: str):
        self.prefix = re.sub(r"[^\w.-]+", "-", name).strip("-")
        self.count = 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def __call__(self, page, step: str) -> Path:
        self.count += 1
        path = ARTIFACTS / f"{self.prefix}-{self.count:02d}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def shots(request) -> Shots:
    return Shots(request.node.name)


class Watched:
    """A page whose console errors and uncaught exceptions are kept (a CSP refusal shows there).

    "Failed to load resource" is left out: Chromium logs it for every 4xx document, such as the
    code page answering a wrong code with 400, and the tests check statuses themselves.
    """

    def __init__(self, page):
        self.page = page
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(str(exc)))

    def _console(self, msg) -> None:
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self.problems.append(msg.text)


@pytest.fixture
def phone(browser):
    """A fresh phone-sized browser context (its own cookies) and its page, with the CSP enforced."""
    context = browser.new_context(**PHONE)
    context.set_default_timeout(15_000)
    watched = Watched(context.new_page())
    yield watched
    context.close()
    assert not watched.problems, f"console errors: {watched.problems}"


@pytest.fixture
def new_context(browser):
    """A factory of browser contexts with extra options, closed after the test."""
    contexts = []

    def make(**options):
        context = browser.new_context(**{**PHONE, **options})
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()
