"""Every error page a person can meet says what happened and offers the next step that works, in
Persian and in English: a link back to the agency's registered home (never to an address the
request named), the provider's home page, the form again, a new code (through the same limits),
or the time to wait without a button that only leads back to the limit. Switching the language
keeps the same page."""
from __future__ import annotations

import re
from html import unescape
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

from idp.citizens.national_id import make_national_id

from .conftest import GENEROUS_IP_LIMITS
from .helpers import Clock, code_page, csrf_token, form_fields, identify_page, login_url, mobile_e164

EVIL = "https://evil.example/cb"

#: What each page says, by language: (heading, a phrase of the body).
TEXT = {
    "unknown_client": {"fa": ("سامانه‌ی ناشناخته", "ثبت نشده است"), "en": ("Unknown service", "not registered")},
    "client_disabled": {"fa": ("سامانه موقتاً در دسترس نیست", "فعلاً از راه درگاه ملی ممکن نیست"),
                        "en": ("Service temporarily unavailable", "switched off for now")},
    "bad_redirect": {"fa": ("نشانی بازگشت ثبت نشده است", "به آن نشانی فرستاده نمی‌شوید"),
                     "en": ("Return address not registered", "you will not be sent there")},
    "interaction": {"fa": ("این صفحه دیگر معتبر نیست", "دوباره وارد شوید"),
                    "en": ("This page is no longer valid", "sign in again")},
    "csrf": {"fa": ("فرم منقضی شده است", "فرم را دوباره باز کنید"),
             "en": ("The form has expired", "open the form again")},
    "expired": {"fa": ("کد منقضی شده است", "کد تازه‌ای بخواهید"), "en": ("The code has expired", "Ask for a new one")},
    "rate_limited": {"fa": ("درخواست‌ها زیاد است", "دیگر دوباره امتحان کنید"),
                     "en": ("Too many attempts", "please try again in")},
}
HOME = {"fa": "صفحه‌ی نخست درگاه", "en": "The sign-in home page"}
BACK_TO = {"fa": "بازگشت به", "en": "Back to"}


def links(html: str) -> list[tuple[str, str]]:
    """(text, address) of every link and form of a page's body, in order (the header's language
    link aside)."""
    body = html.split("</header>", 1)[1]
    found = [(re.sub(r"<[^>]+>", "", m.group(2)).strip(), unescape(m.group(1)))
             for m in re.finditer(r'<a [^>]*href="([^"]*)"[^>]*>(.*?)</a>', body, re.S)]
    found += [("form", unescape(m.group(1))) for m in re.finditer(r'<form [^>]*action="([^"]*)"', body)]
    return found


def lang_link(html: str) -> str:
    return unescape(re.search(r'<a class="lang" href="([^"]*)"', html).group(1))


def unhidden(html: str) -> str:
    """The page without its ``hidden`` elements."""
    return re.sub(r"<(p|span)[^>]*\bhidden\b[^>]*>.*?</\1>", "", html, flags=re.S)


def visible(html: str) -> str:
    """The text a person sees: without hidden elements, without tags."""
    return unescape(re.sub(r"<[^>]+>", " ", unhidden(html)))


def assert_page(r: requests.Response, key: str, lang: str, status: int = 400) -> None:
    assert r.status_code == status, (r.status_code, r.text[:400])
    assert "Location" not in r.headers and "text/html" in r.headers["Content-Type"]
    heading, phrase = TEXT[key][lang]
    assert f"<h1>{heading}</h1>" in r.text, (key, lang, r.text[:800])
    assert phrase in unescape(r.text), (key, lang, phrase)
    assert f'<html lang="{lang}"' in r.text


def assert_never_links_to(r: requests.Response, address: str) -> None:
    """No link, form or text of the page carries the unverified address."""
    host = urlsplit(address).hostname
    assert host not in r.text, f"{address} appears on the page"
    for _, href in links(r.text) + [("lang", lang_link(r.text))]:
        assert host not in urljoin(r.url, href)


def authorize_get(provider, lang: str, **params) -> requests.Response:
    base = {"response_type": "code", "scope": "openid", "code_challenge": "x" * 43, "code_challenge_method": "S256",
            "state": "s1", "lang": lang}
    return requests.get(f"{provider.url}/authorize", params={**base, **params}, allow_redirects=False, timeout=10)


# ---- pages about the service ---------------------------------------------------------------------

@pytest.mark.parametrize("lang", ["fa", "en"])
def test_unknown_service_links_to_the_provider_home_never_to_the_redirect_uri(provider, lang):
    r = authorize_get(provider, lang, client_id="no-such-client", redirect_uri=EVIL)
    assert_page(r, "unknown_client", lang)
    assert_never_links_to(r, EVIL)
    assert links(r.text) == [(HOME[lang], "/")], links(r.text)
    assert "invalid_client" in r.text


@pytest.mark.parametrize("lang", ["fa", "en"])
def test_a_bad_redirect_uri_links_back_to_the_agency_home_it_registered(provider, lang):
    client_id, _, redirect = provider.add_client(name="Tax Office", name_fa="سازمان مالیاتی")
    home = f"{urlsplit(redirect).scheme}://{urlsplit(redirect).netloc}/"
    for uri in (EVIL, redirect + "/extra", None):  # unregistered, a near miss, missing
        r = authorize_get(provider, lang, client_id=client_id, **({"redirect_uri": uri} if uri else {}))
        assert_page(r, "bad_redirect", lang)
        assert_never_links_to(r, EVIL)
        name = "سازمان مالیاتی" if lang == "fa" else "Tax Office"
        assert f"<bdi>{name}</bdi>" in r.text
        assert links(r.text) == [(f"{BACK_TO[lang]} {name}", home)], links(r.text)
        if uri:
            assert uri not in unescape(r.text).replace(unescape(lang_link(r.text)), "")


@pytest.mark.parametrize("lang", ["fa", "en"])
def test_a_disabled_agency_is_unavailable_not_unknown(provider, lang):
    from idp.protocol import agencies

    client_id, _, redirect = provider.add_client(name="Closed Office", name_fa="اداره‌ی بسته")
    with provider.app.app_context():
        agencies.set_enabled(agencies.get_client(client_id), False)
    r = authorize_get(provider, lang, client_id=client_id, redirect_uri=redirect)
    assert_page(r, "client_disabled", lang)
    unknown_heading = TEXT["unknown_client"][lang][0]
    assert unknown_heading not in r.text and TEXT["unknown_client"][lang][1] not in r.text
    assert "Closed Office" not in r.text and "اداره‌ی بسته" not in r.text, "nothing of the agency is shown"
    assert links(r.text) == [(HOME[lang], "/")]
    assert "client_disabled" in r.text


# ---- pages of a login that cannot go on ------------------------------------------------------------

@pytest.mark.parametrize("lang", ["fa", "en"])
def test_an_expired_sign_in_links_back_to_its_agency(provider, monkeypatch, lang):
    client_id, _, redirect = provider.add_client(name="Tax Office", name_fa="سازمان مالیاتی")
    browser = provider.flow()
    page = identify_page(browser, client_id, redirect)
    rid = parse_qs(urlsplit(login_url(page)).query)["r"][0]
    citizen = provider.add_citizen()
    # the login expires while the form is being submitted (between its check and its save)
    from idp.platform.store import store
    from idp.protocol import interaction

    monkeypatch.setattr(interaction, "save", lambda paused: store.delete_pending(paused.id) or False)
    r = browser.http.post(login_url(page) + f"&lang={lang}",
                          data={"csrf_token": csrf_token(page.text), "national_id": citizen[0],
                                "mobile": citizen[1]}, allow_redirects=False, timeout=10)
    monkeypatch.undo()
    assert_page(r, "interaction", lang)
    name = "سازمان مالیاتی" if lang == "fa" else "Tax Office"
    home = f"{urlsplit(redirect).scheme}://{urlsplit(redirect).netloc}/"
    assert links(r.text) == [(f"{BACK_TO[lang]} {name}", home)]
    # once gone, the same login's pages say so, with the provider's home (the agency is forgotten)
    r = browser.get(f"{provider.url}/login?r={rid}&lang={lang}")
    assert_page(r, "interaction", lang)
    assert links(r.text) == [(HOME[lang], "/")]


@pytest.mark.parametrize("lang", ["fa", "en"])
def test_a_form_refused_as_expired_links_to_the_same_form_again(provider, lang):
    client_id, _, redirect = provider.add_client()
    browser = provider.flow()
    page = identify_page(browser, client_id, redirect)
    national_id, mobile = provider.add_citizen()
    r = browser.http.post(login_url(page) + f"&lang={lang}", data={"national_id": national_id, "mobile": mobile},
                          allow_redirects=False, timeout=10)  # no CSRF token: as after a long pause
    assert_page(r, "csrf", lang)
    (text, href), = links(r.text)
    assert text == {"fa": "باز کردن دوباره‌ی فرم", "en": "Open the form again"}[lang]
    assert href == urlsplit(login_url(page)).path + "?" + urlsplit(login_url(page)).query
    again = browser.get(urljoin(provider.url, href))
    assert again.status_code == 200 and 'name="national_id"' in again.text
    answer = browser.submit(again, {"national_id": national_id, "mobile": mobile})
    assert answer.status_code == 303, "the form opened again works"


# ---- the code-expired page offers a new code ----------------------------------------------------------

def _expire_code(clock, provider) -> None:
    clock.advance(provider.settings.login.otp_ttl + 1)


@pytest.mark.parametrize("lang", ["fa", "en"])
def test_an_expired_code_offers_a_new_code_that_completes_the_login(make_provider, monkeypatch, lang):
    import idp.login.codes

    clock = Clock(monkeypatch, idp.login.codes)
    provider = make_provider(limits=GENEROUS_IP_LIMITS)
    client = provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    page, first = code_page(provider, browser, client, (national_id, mobile))
    _expire_code(clock, provider)
    # the code typed too late: the expired page, with a form for a new code and "start again"
    late = browser.submit(page, {"otp": first})
    assert late.status_code == 400 and TEXT["expired"]["fa"][0] in late.text and "/login/resend?r=" in late.text
    expired = browser.get(page.url + f"&lang={lang}")
    assert_page(expired, "expired", lang)
    rid = parse_qs(urlsplit(page.url).query)["r"][0]
    assert links(expired.text) == [({"fa": "شروع دوباره", "en": "Start again"}[lang], f"/login?r={rid}"),
                                   ("form", f"/login/resend?r={rid}")]
    assert re.search(r'<button type="submit" class="primary" id="resend">' +
                     {"fa": "ارسال دوباره‌ی کد", "en": "Send the code again"}[lang] + "</button>", expired.text)
    sent = browser.submit(expired, {})
    assert sent.status_code == 303, sent.text[:300]
    second = provider.outbox.last_code(mobile_e164(mobile), after=1)
    page = browser.follow(sent, client[2])
    assert 'name="otp"' in page.text
    done = browser.follow(browser.submit(page, {"otp": second}), client[2])
    assert done.is_redirect and done.headers["Location"].startswith(client[2])


def test_the_resend_from_an_expired_code_goes_through_the_limits(make_provider, monkeypatch):
    import idp.login.codes

    clock = Clock(monkeypatch, idp.login.codes)
    provider = make_provider(limits={**GENEROUS_IP_LIMITS, "codes_per_national_id": "1/900"})
    client = provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    page, _ = code_page(provider, browser, client, (national_id, mobile))
    _expire_code(clock, provider)
    expired = browser.get(page.url)
    assert expired.status_code == 400 and "/login/resend?r=" in expired.text
    refused = browser.submit(expired, {})
    assert refused.status_code == 429 and "rate_limited" in refused.text
    provider.outbox.settle()
    assert len(provider.outbox.messages(mobile)) == 1, "no code beyond the limit"


def test_expired_code_pages_are_the_same_for_a_stranger(make_provider, monkeypatch):
    import idp.login.codes

    clock = Clock(monkeypatch, idp.login.codes)
    provider = make_provider(limits=GENEROUS_IP_LIMITS)
    client = provider.add_client()
    national_id, mobile = provider.add_citizen()
    pages = {}
    for name, pair in {"owner": (national_id, mobile), "wrong mobile": (national_id, "+98935" + mobile[6:]),
                       "unknown": (make_national_id("918273645"), mobile)}.items():
        browser = provider.flow()
        page, _ = code_page(provider, browser, client, pair, wait_for_code=False)
        pages[name] = (browser, page)
    _expire_code(clock, provider)
    seen = {}
    for name, (browser, page) in pages.items():
        expired = browser.get(page.url)
        sent = browser.submit(expired, {})
        again = browser.follow(sent, client[2])
        seen[name] = [(r.status_code, re.sub(r"r=[A-Za-z0-9_\-]+|csrf_token[^>]*|data-seconds=\"\d+\"[^<]*<|"
                                              r"[۰-۹0-9]{4}\*\*\*[۰-۹0-9]{4}", "", r.text))
                      for r in (expired, sent, again)]
    assert seen["owner"] == seen["wrong mobile"] == seen["unknown"]
    assert [s for s, _ in seen["owner"]] == [400, 303, 200]


# ---- the limit page: the wait, no useless button, and the same page in the other language ------------

def _limited_start(provider, lang: str):
    client_id, _, redirect = provider.add_client()
    stranger = (make_national_id("918273645"), "09351234567")
    browser = provider.flow()
    for _ in range(2):
        page = identify_page(browser, client_id, redirect)
        r = browser.http.post(login_url(page) + f"&lang={lang}",
                              data={**form_fields(page.text), "national_id": stranger[0], "mobile": stranger[1]},
                              allow_redirects=False, timeout=10)
    return browser, r


@pytest.mark.parametrize("lang", ["fa", "en"])
def test_the_limit_page_shows_the_wait_and_no_button_back_to_the_limit(make_provider, lang):
    provider = make_provider(limits={**GENEROUS_IP_LIMITS, "codes_per_national_id": "1/900"})
    _, r = _limited_start(provider, lang)
    assert_page(r, "rate_limited", lang, status=429)
    assert 800 < int(r.headers["Retry-After"]) <= 900
    text = visible(r.text)
    assert {"fa": "۱۵\u00a0دقیقه", "en": "15\u00a0minutes"}[lang] in text, text
    if lang == "fa":
        assert not re.search(r"[0-9]", text.split("کد خطا")[0].split("English")[1]), "Persian digits only"
    # nothing to press before the wait is over: the "try again" link is hidden until then
    assert "<form" not in unhidden(r.text) and 'class="button' not in unhidden(r.text)
    assert "شروع دوباره" not in text and "Start again" not in text and links(unhidden(r.text)) == []
    assert 'id="try-again" hidden' in r.text
    assert re.search(r'<span class="countdown" data-seconds="900" data-reveals="try-again" hidden>', r.text)


@pytest.mark.parametrize("lang", ["fa", "en"])
def test_switching_language_on_the_limit_page_keeps_the_limit_page(make_provider, monkeypatch, lang):
    import idp.platform.errors

    provider = make_provider(limits={**GENEROUS_IP_LIMITS, "codes_per_national_id": "1/900"})
    browser, r = _limited_start(provider, lang)
    other = "en" if lang == "fa" else "fa"
    link = lang_link(r.text)
    assert link.startswith("?") and "shown=1" in link and f"lang={other}" in link
    assert "csrf" not in link and "national_id" not in link, "nothing but the page's own address"
    switched = browser.get(urljoin(r.url, link))
    assert_page(switched, "rate_limited", other, status=429)
    assert {"fa": "۱۵\u00a0دقیقه", "en": "15\u00a0minutes"}[other] in visible(switched.text)
    assert 800 < int(switched.headers["Retry-After"]) <= 900
    # and back: the same page again, not the form
    back = browser.get(urljoin(switched.url, lang_link(switched.text)))
    assert_page(back, "rate_limited", lang, status=429)
    assert 'name="national_id"' not in back.text
    # a page without the flag is the page of the address (the form), and another browser gets nothing
    assert 'name="national_id"' in browser.get(r.url).text
    stranger = provider.flow().get(urljoin(r.url, link))
    assert 'name="national_id"' not in stranger.text and "rate_limited" not in stranger.text
    # once the wait is over, the same link says so and offers to try again
    Clock(monkeypatch, idp.platform.errors).advance(901)
    later = browser.get(urljoin(r.url, link))
    assert later.status_code == 429
    assert {"fa": "اکنون می‌توانید دوباره امتحان کنید", "en": "you can try again now"}[other] in later.text
    rid = parse_qs(urlsplit(r.url).query)["r"][0]
    assert (("تلاش دوباره" if other == "fa" else "Try again"), f"/login?r={rid}") in links(later.text)
    assert 'id="try-again" hidden' not in later.text


@pytest.mark.parametrize("lang", ["fa", "en"])
def test_switching_language_keeps_every_error_page(make_provider, lang):
    """The unknown service, the bad redirect and the form refused as expired, each switched."""
    provider = make_provider(limits=GENEROUS_IP_LIMITS)
    other = "en" if lang == "fa" else "fa"
    client_id, _, redirect = provider.add_client()
    browser = provider.flow()
    page = identify_page(browser, client_id, redirect)
    cases = {
        "unknown_client": lambda: browser.get(
            f"{provider.url}/authorize?client_id=nope&redirect_uri={EVIL}&lang={lang}"),
        "bad_redirect": lambda: browser.get(
            f"{provider.url}/authorize?client_id={client_id}&redirect_uri={EVIL}&lang={lang}"),
        "csrf": lambda: browser.http.post(login_url(page) + f"&lang={lang}", data={"national_id": "1"},
                                          allow_redirects=False, timeout=10),
    }
    for key, show in cases.items():
        r = show()
        assert_page(r, key, lang)
        switched = browser.get(urljoin(r.url, lang_link(r.text)))
        assert_page(switched, key, other)
        assert_never_links_to(switched, EVIL)
        assert [href for _, href in links(switched.text)] == [href for _, href in links(r.text)], key
