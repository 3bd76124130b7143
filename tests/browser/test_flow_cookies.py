"""A page of another site that opens the provider's /authorize in many popups at once, in Chromium.

Every authorization request the provider pauses is bound to the browser by a cookie. Without a
bound, 170 popups left that many cookies (15 minutes each): the Cookie header passed 8 KiB and
every request of that browser was refused (431) until they expired. The provider keeps at most
``interaction.MAX_FLOWS`` of them, replacing the oldest; after the attack the same browser still
signs in, and two logins in two tabs still both complete.
"""
from __future__ import annotations

import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from idp.protocol import interaction

from ..helpers import mobile_e164, pkce_pair

ATTACKER = "http://attacker.test"
#: As many popups as the attack that once locked a browser out.
POPUPS = 170
#: The provider's cookies after the attack: the flow cookies, idp_session and idp_lang fit in this.
SMALL_COOKIE_HEADER = 1024


def authorize_url(provider, client_id: str, redirect_uri: str, state: str) -> str:
    """A valid authorization request of a registered client."""
    _, challenge = pkce_pair()
    return provider.url + "/authorize?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": "openid",
        "state": state, "code_challenge": challenge, "code_challenge_method": "S256"})


def attacker_page(target: str, count: int) -> str:
    """A page that, at one click, opens ``target`` in ``count`` popups in one go."""
    return f"""<!doctype html><title>Win a prize</title><button id="go">Claim</button><script>
document.getElementById("go").onclick = () => {{
  for (let i = 0; i < {count}; i++) window.open({target!r} + "&n=" + i, "_blank");
}};
</script>"""


@pytest.fixture(scope="module")
def agency_site():
    """Where the tests' clients are sent back: a loopback server that answers every GET (only
    the authorization response's URL matters). A route of the browser context would not do:
    Playwright does not intercept the target of a redirect."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "6")
            self.end_headers()
            self.wfile.write(b"agency")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def add_client(provider, agency_site: str, name: str) -> tuple[str, str]:
    """A registered client sent back to ``agency_site``; (client_id, redirect_uri)."""
    redirect_uri = f"{agency_site}/{secrets.token_hex(3)}/cb"
    client_id, _, _ = provider.add_client(name=name, redirect_uri=redirect_uri)
    return client_id, redirect_uri


def flow_cookies(context, provider) -> list[dict]:
    return [c for c in context.cookies(provider.url) if c["name"].startswith(interaction.FLOW_COOKIE_PREFIX)]


def cookie_header_of_next_request(page, url: str) -> str:
    """The Cookie header Chromium sends with a navigation to ``url``."""
    with page.expect_request(url) as request:
        page.goto(url)
    return request.value.all_headers().get("cookie", "")


def sign_in(page, provider, national_id: str, mobile: str) -> None:
    """On the provider's first form: national ID and mobile, then the code from the SMS outbox."""
    to = mobile_e164(mobile)
    sent = len(provider.outbox.messages(to))
    page.fill("#national_id", national_id)
    page.fill("#mobile", "0" + to[3:])
    page.click("button.primary")
    page.wait_for_selector("input[name=otp]")
    page.fill("#otp", provider.outbox.last_code(to, after=sent))
    page.click("form:first-of-type button[type=submit]")


def test_popups_to_authorize_leave_a_few_flow_cookies_and_the_browser_still_signs_in(
        new_context, provider, agency, agency_site, shots):
    context = new_context()
    client_id, redirect_uri = add_client(provider, agency_site, "Victim agency")
    context.route(ATTACKER + "/**", lambda route: route.fulfill(
        content_type="text/html", body=attacker_page(authorize_url(provider, client_id, redirect_uri, "bomb"), POPUPS)))
    answered = []
    context.on("response", lambda r: answered.append(r.status)
               if r.url.startswith(provider.url + "/authorize?") else None)

    page = context.new_page()
    page.goto(ATTACKER + "/")
    page.click("#go", timeout=120_000)  # Chromium opens 170 windows before the click returns
    deadline = time.monotonic() + 120
    while len(answered) < POPUPS and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    # each popup got the first login page, answered by /authorize itself
    assert len(answered) == POPUPS and set(answered) == {200}, (len(answered), set(answered))
    for popup in context.pages[1:]:
        popup.close()

    cookies = flow_cookies(context, provider)
    assert len(cookies) <= interaction.MAX_FLOWS, f"{len(cookies)} flow cookies after {POPUPS} popups"
    header = cookie_header_of_next_request(page, provider.url + "/")
    assert len(header) <= SMALL_COOKIE_HEADER, f"a Cookie header of {len(header)} bytes"

    # A normal login from the agency, in the same browser.
    national_id, mobile = provider.add_citizen()
    page.goto(agency.url + "/")
    page.click("a.button[href*='login']")
    page.wait_for_selector("input[name=national_id]")
    sign_in(page, provider, national_id, mobile)
    page.wait_for_url(agency.url + "/")
    assert "آزمون شهروند، خوش آمدید" in page.inner_text("h2")
    shots(page, "signed-in-after-the-popups")

    # Two logins at once, in two tabs of the same browser, both complete.
    tabs = [context.new_page(), context.new_page()]
    for n, tab in enumerate(tabs):
        tab.goto(authorize_url(provider, client_id, redirect_uri, f"tab-{n}") + "&prompt=login")
        tab.wait_for_selector("input[name=national_id]")
    for tab in reversed(tabs):
        # A login starts a new Flask session, and with it a new CSRF secret (no session
        # fixation): a form shown before the other tab's login is opened again, which works
        # only while this tab's flow is still bound to the browser.
        tab.reload()
        sign_in(tab, provider, *provider.add_citizen())
        tab.wait_for_url(lambda url: url.startswith(redirect_uri + "?"))
    for n, tab in enumerate(tabs):
        answer = parse_qs(urlsplit(tab.url).query)
        assert answer["state"] == [f"tab-{n}"] and answer.get("code"), tab.url
    assert len(flow_cookies(context, provider)) <= interaction.MAX_FLOWS


def test_one_flow_more_than_the_bound_replaces_the_oldest(new_context, provider, agency_site):
    """Logins started one after another in tabs: the newest MAX_FLOWS stay usable; the oldest
    gets the "no longer valid" page, as an expired one does."""
    context = new_context()
    client_id, redirect_uri = add_client(provider, agency_site, "Tabs agency")
    tabs = []
    for n in range(interaction.MAX_FLOWS + 1):
        tab = context.new_page()
        tab.goto(authorize_url(provider, client_id, redirect_uri, f"tab-{n}"))
        tab.wait_for_selector("input[name=national_id]")
        tabs.append(tab)
    assert len(flow_cookies(context, provider)) == interaction.MAX_FLOWS

    oldest, newest = tabs[0], tabs[-1]
    # the oldest tab's own flow (reloading /authorize would start a new one, as it should)
    oldest.goto(provider.url + oldest.locator("form").first.get_attribute("action"))
    assert oldest.locator("input[name=national_id]").count() == 0
    assert "interaction_expired" in oldest.inner_text(".code-ref")
    sign_in(newest, provider, *provider.add_citizen())
    newest.wait_for_url(lambda url: url.startswith(redirect_uri + "?"))
    assert parse_qs(urlsplit(newest.url).query)["state"] == [f"tab-{interaction.MAX_FLOWS}"]
