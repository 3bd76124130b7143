"""Every link on every error page stays on the provider, whatever path the page was asked at.

The language link was once the request's path plus ``?lang=``: for ``GET /%5Cevil.example/x``
the 404 page linked to ``/\\evil.example/x?lang=en``, which Chromium follows to
``http://evil.example/x``. Here Chromium itself resolves each link (``a.href``, ``form.action``)
of each error page a person can meet, asked at paths made of backslashes, tabs and slashes,
plain and percent-encoded, and each must have the provider's own origin.
"""
from __future__ import annotations

import secrets
from urllib.parse import urlsplit

import pytest

#: Paths whose text, written into a link, a browser reads as another host.
HOSTILE_PATHS = [
    "/%5Cevil.example/x",
    "/%5C%5Cevil.example",
    "/%5C/evil.example",
    "/%09/evil.example",
    "/%2F%2Fevil.example",
    "/%2F%5Cevil.example/x",
    "//evil.example/x",
    "/\t/evil.example",
    "/x/%2E%2E/%5Cevil.example",
]

#: Every link, form and stylesheet of the page, as the browser resolves it.
RESOLVED_LINKS = """() => [...document.querySelectorAll('a[href], form[action], link[rel=stylesheet]')]
    .map(e => ({tag: e.tagName, text: e.textContent.trim(), url: e.tagName === 'FORM' ? e.action : e.href}))"""


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_every_link_on_every_error_page_stays_on_the_provider(new_context, provider, path):
    page = new_context().new_page()
    kinds = [None, *provider.app.extensions["idp.test_raisers"]]  # None: the real 404
    for lang in ("fa", "en"):
        for kind in kinds:
            query = f"?lang={lang}" + (f"&_raise={kind}" if kind else "")
            response = page.goto(provider.url + path + query)
            assert response.status >= 400, (path, kind, response.status)
            assert page.locator(".code-ref").count() == 1, f"{path} {kind}: not an error page"
            links = page.evaluate(RESOLVED_LINKS)
            assert any(link["text"] in ("English", "فارسی") for link in links), (path, kind, links)
            for link in links:
                assert origin(link["url"]) == provider.url, (path, kind, link)


def _limit_page(page, provider) -> str:
    """A real limit: the same (made-up) pair started once more than codes_per_national_id allows.
    Returns the page's address."""
    from idp.citizens.national_id import make_national_id

    from ..helpers import FlowClient

    client_id, _, redirect = provider.add_client()
    count, _ = provider.settings.limits.codes_per_national_id.split("/")
    stranger = make_national_id(f"7{secrets.randbelow(10**8):08d}")
    for _ in range(int(count) + 1):
        page.goto(FlowClient(provider).authorize_url(client_id, redirect))
        page.fill("#national_id", stranger)
        page.fill("#mobile", "09351234567")
        page.click("button.primary")
        page.wait_for_selector("h1")
    assert page.locator(".code-ref code").inner_text() == "rate_limited"
    return page.url


def test_switching_language_on_a_limit_page_keeps_the_limit_page(new_context, provider, shots):
    """The language link of a page answered to a form (a POST) must not show the form again, nor
    count against the limit: the same page comes back, in the other language, with the wait."""
    page = new_context().new_page()
    _limit_page(page, provider)
    assert page.get_attribute("html", "lang") == "fa"
    assert "۱۵\u00a0دقیقه" in page.inner_text("main.card")
    assert page.locator("main.card a.button:visible, main.card button:visible").count() == 0, "nothing to press yet"
    shots(page, "limit-fa")
    page.click("header a.lang")
    page.wait_for_function("document.documentElement.lang === 'en'")
    assert page.inner_text("h1") == "Too many attempts"
    assert "15\u00a0minutes" in page.inner_text("main.card")
    assert page.locator("#national_id").count() == 0, "not the form again"
    assert page.locator("main.card a.button:visible, main.card button:visible").count() == 0
    shots(page, "limit-en")
    page.click("header a.lang")
    page.wait_for_function("document.documentElement.lang === 'fa'")
    assert page.inner_text("h1") == "درخواست‌ها زیاد است" and page.locator("#national_id").count() == 0
    page.reload()
    assert page.inner_text("h1") == "درخواست‌ها زیاد است", "a reload of the switched page shows it again"


def test_the_try_again_link_of_a_limit_page_appears_when_the_wait_is_over(new_context, provider, shots):
    page = new_context().new_page()
    page.clock.install()
    page.goto(f"{provider.url}/_preview/error/rate_limited?wait=40&restart=1&lang=en")
    assert page.locator("#try-again").is_hidden()
    assert "40\u00a0seconds" in page.inner_text("p.lead")
    page.clock.run_for(30_000)
    assert page.locator("#try-again").is_hidden()
    page.clock.run_for(11_000)
    assert page.locator("#try-again a").is_visible() and page.inner_text("#try-again a") == "Try again"
    assert page.inner_text("p.lead") == "The wait is over: you can try again now."
    assert page.inner_text("[role=status][data-announce]") == "The wait is over: you can try again now."
    shots(page, "wait-over")
