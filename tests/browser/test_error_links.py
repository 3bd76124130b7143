"""Every link on every error page stays on the provider, whatever path the page was asked at.

The language link was once the request's path plus ``?lang=``: for ``GET /%5Cevil.example/x``
the 404 page linked to ``/\\evil.example/x?lang=en``, which Chromium follows to
``http://evil.example/x``. Here Chromium itself resolves each link (``a.href``, ``form.action``)
of each error page a person can meet, asked at paths made of backslashes, tabs and slashes,
plain and percent-encoded, and each must have the provider's own origin.
"""
from __future__ import annotations

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
