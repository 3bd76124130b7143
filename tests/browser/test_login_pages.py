"""The login as a citizen sees it, in headless Chromium on a phone-sized screen.

From the demo agency's "log in" button, through the national ID + mobile form and the code
form (a wrong code first, then the right one from the SMS outbox), back to the agency's page
with the citizen's name: in Persian (the default, right to left, Persian digits) and in English
(switched on the page and remembered). Also: the same login with JavaScript off, the resend
countdown, every error page, and a 360px-wide screen. Each step is saved as a screenshot under
test-artifacts/browser/.
"""
from __future__ import annotations

import re

import pytest

from ..helpers import mobile_e164

PERSIAN_DIGITS = "۰۱۲۳۴۵۶۷۸۹"


def persian(text: str) -> str:
    return text.translate(str.maketrans("0123456789", PERSIAN_DIGITS))


def wrong(code: str) -> str:
    """A code that is surely not ``code``."""
    return f"{(int(code) + 1) % 10**6:06d}"


def open_login(page, agency, provider):
    """The agency's home page, then its login button, which leads to the provider's first form."""
    page.goto(agency.url + "/")
    page.click("a.button[href*='login']")
    page.wait_for_selector("input[name=national_id]")
    assert page.url.startswith(provider.url + "/authorize?"), page.url  # the first page, answered in place


def expect_agency_page(page, agency):
    """The agency's page, logged in, greeting the citizen by name."""
    page.wait_for_url(agency.url + "/")
    assert "آزمون شهروند، خوش آمدید" in page.inner_text("h2")


def test_persian_login_from_the_agency_with_a_wrong_code_first(phone, provider, agency, shots):
    page = phone.page
    national_id, mobile = provider.add_citizen()
    to = mobile_e164(mobile)
    local = "0" + to[3:]

    page.goto(agency.url + "/")
    shots(page, "agency")
    open_login(page, agency, provider)
    assert page.get_attribute("html", "lang") == "fa" and page.get_attribute("html", "dir") == "rtl"
    assert "وزارت آموزش و پرورش" in page.inner_text("h1")
    assert page.inner_text("#national_id-hint") == "۱۰ رقم"
    assert page.evaluate("document.activeElement.id") == "national_id"
    shots(page, "identify")
    docs_shot(page, "login-fa")

    # Digits typed in Persian are the same digits (DESIGN §5).
    page.fill("#national_id", persian(national_id))
    page.fill("#mobile", persian(local))
    shots(page, "identify-filled")
    page.click("button.primary")
    page.wait_for_selector("input[name=otp]")
    assert page.get_attribute("#otp", "autocomplete") == "one-time-code"
    assert page.get_attribute("#otp", "inputmode") == "numeric"
    masked = page.locator("p.lead bdi[dir=ltr]")
    assert masked.inner_text() == persian(local[:4]) + "***" + persian(local[-4:])
    assert re.search(f"[{PERSIAN_DIGITS}]+", page.inner_text("#otp-expiry")), "seconds left shown in Persian digits"
    assert not re.search("[0-9]", page.inner_text("main")), "no Latin digit on a Persian page"
    shots(page, "code")

    code = provider.outbox.last_code(to)
    page.fill("#otp", wrong(code))
    page.click("form:first-of-type button[type=submit]")
    page.wait_for_selector("#otp-error")
    error = page.locator("#otp-error")
    assert error.get_attribute("role") == "alert"
    assert "کد درست نیست" in error.inner_text() and "۴" in error.inner_text()
    assert page.get_attribute("#otp", "aria-invalid") == "true"
    assert "otp-error" in page.get_attribute("#otp", "aria-describedby").split()
    assert page.evaluate("document.activeElement.id") == "otp"
    assert page.title().startswith("خطا")
    shots(page, "code-wrong")

    page.fill("#otp", persian(code))
    page.click("form:first-of-type button[type=submit]")
    expect_agency_page(page, agency)
    shots(page, "agency-logged-in")


def test_english_chosen_on_the_page_is_remembered_through_the_login(phone, provider, agency, shots):
    page = phone.page
    national_id, mobile = provider.add_citizen()
    to = mobile_e164(mobile)

    open_login(page, agency, provider)
    assert page.get_attribute("html", "lang") == "fa"
    switch = page.locator("header a.lang")
    assert switch.inner_text() == "English" and switch.get_attribute("lang") == "en"
    switch.click()
    page.wait_for_function("document.documentElement.lang === 'en'")
    assert page.get_attribute("html", "dir") == "ltr"
    assert page.inner_text("h1").startswith("Sign in to")
    assert page.locator("header a.lang").inner_text() == "فارسی"
    shots(page, "identify-en")
    docs_shot(page, "login-en")

    # A wrong national ID first: the error is tied to its field.
    page.fill("#national_id", "1234567890")
    page.fill("#mobile", "0" + to[3:])
    page.click("button.primary")
    page.wait_for_selector("#national_id-error")
    assert page.get_attribute("#national_id", "aria-invalid") == "true"
    assert page.get_attribute("#mobile", "aria-invalid") is None
    assert page.evaluate("document.activeElement.id") == "national_id"
    assert page.input_value("#mobile") == "0" + to[3:]
    shots(page, "identify-en-error")

    page.fill("#national_id", national_id)
    page.click("button.primary")
    page.wait_for_selector("input[name=otp]")
    # The choice was remembered (idp_lang cookie): this page's URL has no ?lang=.
    assert "lang=" not in page.url
    assert page.get_attribute("html", "lang") == "en"
    assert page.locator("p.lead bdi[dir=ltr]").inner_text() == "0" + to[3:6] + "***" + to[-4:]
    shots(page, "code-en")

    code = provider.outbox.last_code(to)
    page.fill("#otp", wrong(code))
    page.click("form:first-of-type button[type=submit]")
    page.wait_for_selector("#otp-error")
    assert "That code is not right" in page.inner_text("#otp-error")
    shots(page, "code-en-wrong")

    page.fill("#otp", code)
    page.click("form:first-of-type button[type=submit]")
    expect_agency_page(page, agency)
    shots(page, "agency-logged-in")
    assert any(c["name"] == "idp_lang" and c["value"] == "en" for c in page.context.cookies(provider.url))


def test_the_login_works_without_javascript(new_context, provider, agency, shots):
    page = new_context(java_script_enabled=False).new_page()
    national_id, mobile = provider.add_citizen()
    to = mobile_e164(mobile)

    open_login(page, agency, provider)
    page.fill("#national_id", national_id)
    page.fill("#mobile", "0" + to[3:])
    page.click("button.primary")
    page.wait_for_selector("input[name=otp]")
    if page.locator("#resend").count():
        assert page.locator("#resend").is_enabled(), "without JavaScript the resend button is simply enabled"
    shots(page, "code-nojs")
    page.fill("#otp", provider.outbox.last_code(to))
    page.click("form:first-of-type button[type=submit]")
    expect_agency_page(page, agency)


def test_resend_button_waits_for_its_countdown(phone, provider, shots):
    page = phone.page
    page.clock.install()
    page.goto(provider.url + "/_preview/otp?seconds=100&resend_in=45")
    resend = page.locator("#resend")
    assert resend.is_disabled()
    assert page.inner_text("#resend-wait .countdown") == "۴۵"
    shots(page, "counting")
    page.clock.run_for(10_000)
    assert page.inner_text("#resend-wait .countdown") == "۳۵"
    assert resend.is_disabled()
    page.clock.run_for(36_000)
    assert resend.is_enabled()
    assert page.locator("#resend-wait").is_hidden()
    assert page.inner_text("[role=status][data-announce]") == "اکنون می‌توانید کد تازه بخواهید."
    assert page.inner_text("#otp-expiry .countdown") == "۵۴"
    shots(page, "resend-enabled")
    page.clock.run_for(60_000)
    assert page.inner_text("#otp-expiry") == "این کد منقضی شد. کد تازه بخواهید یا دوباره شروع کنید."
    shots(page, "expired")


def test_the_page_after_a_resend_says_so(phone, provider, shots):
    page = phone.page
    page.goto(provider.url + "/_preview/otp?seconds=120&resend_in=60&resent=1&lang=en")
    assert page.inner_text("p.notice[role=status]") == "A new code was sent."
    assert page.inner_text("#resend-wait") == "You can ask for a new code in 60 seconds."
    assert page.get_attribute("#resend-wait", "role") is None
    shots(page, "resent-en")


def test_a_resend_refused_for_the_wait_says_so_at_the_button(phone, provider, shots):
    page = phone.page
    page.goto(provider.url + "/_preview/otp?seconds=100&resend_in=30&resend_error=1")
    wait = page.locator("#resend-wait")
    assert wait.get_attribute("role") == "alert" and "error" in wait.get_attribute("class")
    assert page.get_attribute("#resend", "aria-describedby") == "resend-wait"
    assert page.get_attribute("#otp", "aria-invalid") is None, "the code field did nothing wrong"
    shots(page, "resend-refused")


ERROR_PAGES = [
    # (preview path or real path, key, text expected in fa, in en)
    ("/_preview/error/expired?restart=1", "expired", "کد منقضی شده است", "The code has expired"),
    ("/_preview/error/locked?restart=1", "locked", "تعداد تلاش‌ها زیاد شد", "Too many wrong codes"),
    ("/_preview/error/cooloff?wait=300&restart=1", "cooloff", "۵\u00a0دقیقه", "5\u00a0minutes"),
    ("/_preview/error/rate_limited?wait=40", "rate_limited", "۴۰\u00a0ثانیه", "40\u00a0seconds"),
    ("/_preview/error/sms_failed?restart=1", "sms_failed", "تلاش دوباره", "Try again"),
    ("/authorize?client_id=nobody&response_type=code", "unknown_client", "سامانه‌ی ناشناخته", "Unknown service"),
    ("/_preview/error/client_disabled", "client_disabled", "سامانه موقتاً در دسترس نیست",
     "Service temporarily unavailable"),
    ("/login?r=bogus", "interaction", "این صفحه دیگر معتبر نیست", "This page is no longer valid"),
    ("/_preview/error/unavailable", "unavailable", "موقتاً در دسترس نیست", "Temporarily unavailable"),
    ("/_preview/error/csrf", "csrf", "فرم منقضی شده است", "The form has expired"),
    ("/no/such/page", "not_found", "صفحه پیدا نشد", "Page not found"),
]


@pytest.mark.parametrize("lang", ["fa", "en"])
def test_error_pages_are_clear(phone, provider, shots, lang):
    page = phone.page
    for path, key, text_fa, text_en in ERROR_PAGES:
        url = provider.url + path + ("&" if "?" in path else "?") + f"lang={lang}"
        page.goto(url)
        assert page.get_attribute("html", "lang") == lang
        body = page.inner_text("main")
        assert (text_fa if lang == "fa" else text_en) in body, (key, body)
        assert page.title().startswith(page.inner_text("h1")), key
        if lang == "fa":
            assert not re.search("[0-9]", body), f"{key}: Latin digits on a Persian page"
        shots(page, key)
    # The SMS failure offers a retry.
    page.goto(provider.url + f"/_preview/error/sms_failed?restart=1&lang={lang}")
    assert page.locator("a.button").get_attribute("href") == "/"


def test_a_form_without_its_csrf_token_gets_the_csrf_page(phone, provider, agency, shots):
    page = phone.page
    open_login(page, agency, provider)
    page.evaluate("document.querySelector('input[name=csrf_token]').remove()")
    page.fill("#national_id", "0012345679")
    page.fill("#mobile", "09121234567")
    page.click("button.primary")
    page.wait_for_selector("h1")
    assert page.inner_text("h1") == "فرم منقضی شده است"
    assert "csrf_failed" in page.inner_text(".code-ref")
    shots(page, "csrf")


def test_pages_fit_a_360px_phone_with_large_targets(new_context, provider, agency, shots):
    page = new_context(viewport={"width": 360, "height": 740}).new_page()
    national_id, mobile = provider.add_citizen()
    open_login(page, agency, provider)
    for lang in ("fa", "en"):
        page.goto(re.sub(r"&lang=\w+", "", page.url) + f"&lang={lang}")
        check_fits(page)
        # The national ID field takes the focus (autofocus, applied by the browser after load:
        # wait for it rather than race it on a busy machine), and Shift+Tab goes from it back to
        # the language switch.
        page.wait_for_function("document.activeElement && document.activeElement.id === 'national_id'",
                               timeout=5000)
        page.keyboard.press("Shift+Tab")
        assert page.evaluate("document.activeElement.className") == "lang"
        shots(page, f"identify-360-{lang}")
    page.fill("#national_id", national_id)
    page.fill("#mobile", mobile)
    page.click("button.primary")
    page.wait_for_selector("input[name=otp]")
    check_fits(page)
    page.focus("#otp")
    ring = page.evaluate("getComputedStyle(document.activeElement).outlineWidth")
    assert ring == "3px", ring
    shots(page, "code-360")
    for path in ("/login?r=bogus", "/_preview/error/cooloff?wait=900&restart=1"):
        page.goto(provider.url + path)
        check_fits(page)
        shots(page, path.split("?")[0].strip("/").replace("/", "-"))


def check_fits(page) -> None:
    """No sideways scrolling, and every button and input shown at least 44px tall (WCAG 2.5.5); one
    not shown yet (the "try again" of a limit page, until the wait is over) is no target."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"{page.url}: {width}px wide"
    small = page.evaluate("""[...document.querySelectorAll('button, a.button, input:not([type=hidden])')]
        .filter(e => e.getClientRects().length > 0 && e.getBoundingClientRect().height < 44).map(e => e.outerHTML.slice(0, 80))""")
    assert not small, small


def docs_shot(page, name: str) -> None:
    """The README's picture of a page (docs/login-*.png is copied from here): down to the form's end."""
    from .conftest import ARTIFACTS

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    box = page.locator("main").bounding_box()
    clip = {"x": 0, "y": 0, "width": page.viewport_size["width"], "height": box["y"] + box["height"] + 16}
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), clip=clip)


def test_the_pages_also_sit_well_on_a_desktop_screen(new_context, provider, agency, shots):
    page = new_context(viewport={"width": 1280, "height": 800}, device_scale_factor=1, is_mobile=False,
                       has_touch=False).new_page()
    open_login(page, agency, provider)
    check_fits(page)
    card = page.locator("main").bounding_box()
    assert card["width"] <= 520 and abs(card["x"] * 2 + card["width"] - 1280) < 4, f"the form is centred: {card}"
    shots(page, "identify-desktop")
