"""The account pages and the first page's second choice, in headless Chromium on a phone: the
authenticator-app button reads as a link, not as a second main button; the account page says
who is signed in, and its two buttons sign out on this device, or on every device of the citizen.
"""
from __future__ import annotations

import json

from ..helpers import mobile_e164
from .test_accessibility import axe_violations
from .test_login_pages import open_login

#: The computed styles compared between the main button and the authenticator-app button.
STYLE = """el => { const s = getComputedStyle(el), box = el.getBoundingClientRect();
  return {background: s.backgroundColor, border: s.borderTopColor, decoration: s.textDecorationLine,
          weight: Number(s.fontWeight), width: box.width, height: box.height}; }"""


def _sign_in(page, agency, provider, national_id: str, mobile: str) -> None:
    """The demo agency's login by SMS, back to the agency."""
    open_login(page, agency, provider)
    page.fill("#national_id", national_id)
    page.fill("#mobile", mobile)
    sent = len(provider.outbox.messages(mobile_e164(mobile)))  # a second login's code, not the first's
    page.click("button.primary")
    page.fill("#otp", provider.outbox.last_code(mobile_e164(mobile), after=sent))
    page.click("form:first-of-type button[type=submit]")
    page.wait_for_url(agency.url + "/")


def _sign_in_to_account(page, provider, national_id: str, mobile: str) -> None:
    """Open the account page, signing in by SMS on the way."""
    page.goto(provider.url + "/account")
    page.fill("#national_id", national_id)
    page.fill("#mobile", mobile)
    sent = len(provider.outbox.messages(mobile_e164(mobile)))
    page.click("button.primary")
    page.fill("#otp", provider.outbox.last_code(mobile_e164(mobile), after=sent))
    page.click("form:first-of-type button[type=submit]")
    page.wait_for_selector("#signed-in")


def _signed_in(page, provider) -> bool:
    """Whether the browser's account page opens (True) or asks for a login first (False)."""
    page.goto(provider.url + "/account")
    return page.locator("#signed-in").count() == 1 and page.locator("input[name=national_id]").count() == 0


def test_the_authenticator_app_button_is_a_secondary_link_style_button(phone, provider, agency, shots):
    page = phone.page
    open_login(page, agency, provider)
    primary = page.locator("button.primary")
    app = page.locator("button[name=method][value=totp]")
    main, second = primary.evaluate(STYLE), app.evaluate(STYLE)
    shots(page, "identify")
    assert main["background"] == "rgb(11, 92, 171)" and main["decoration"] == "none"
    assert second["background"] == "rgba(0, 0, 0, 0)", second  # no fill: it reads as a link
    assert second["border"] == "rgba(0, 0, 0, 0)" and "underline" in second["decoration"], second
    assert second["weight"] < main["weight"] and second["width"] < main["width"]
    assert second["height"] >= 48, "still a 48px target"
    # Enter in a field still asks for the text message (the first button, DESIGN §5).
    national_id, mobile = provider.add_citizen()
    page.fill("#national_id", national_id)
    page.fill("#mobile", mobile)
    page.press("#mobile", "Enter")
    page.wait_for_selector("input[name=otp]")
    assert page.locator("#resend").count() == 1, "an SMS code page"

    # The app's page does not ask "no code arrived?" of someone who may have no app.
    open_login(page, agency, provider)
    page.fill("#national_id", national_id)
    page.fill("#mobile", mobile)
    page.click("button[name=method][value=totp]")
    page.wait_for_selector("input[name=otp]")
    assert page.inner_text(".secondary-link") == "دوباره شروع کنید"
    assert "نرسید" not in page.inner_text("main")


def test_the_account_page_signs_out_here_or_everywhere(new_context, provider, agency, axe_script, shots):
    national_id, mobile = provider.add_citizen()
    phone = new_context(bypass_csp=True).new_page()  # bypass_csp: for the axe run only
    laptop = new_context().new_page()
    _sign_in(phone, agency, provider, national_id, mobile)
    _sign_in(laptop, agency, provider, national_id, mobile)
    bystander = new_context().new_page()
    other_id, other_mobile = provider.add_citizen()
    _sign_in(bystander, agency, provider, other_id, other_mobile)

    # The home page leads to the account, which says who is signed in (masked).
    phone.goto(provider.url + "/")
    phone.click("a[href='/account']")
    phone.wait_for_selector("#signed-in")
    who = phone.inner_text("#signed-in")
    assert "آزمون شهروند" in who and who.count("*") == 7 and national_id not in who
    problems = {"account": axe_violations(phone, axe_script, "fa-account-sign-out")}
    shots(phone, "account")
    assert phone.locator("#sign-out").is_visible() and phone.locator("#sign-out-everywhere").is_visible()

    # Sign out here: the phone only.
    phone.click("#sign-out")
    phone.wait_for_selector("h1")
    assert phone.inner_text("h1") == "از درگاه ملی خارج شدید"
    shots(phone, "signed-out")
    assert not _signed_in(phone, provider) and _signed_in(laptop, provider)

    # Sign out everywhere from the laptop: every session of the citizen ends (a new one on the
    # phone too), the bystander's does not.
    _sign_in_to_account(phone, provider, national_id, mobile)
    assert _signed_in(phone, provider)
    laptop.goto(provider.url + "/account?lang=en")
    assert "Sign out on all devices" in laptop.inner_text("#sign-out-everywhere")
    laptop.click("#sign-out-everywhere")
    laptop.wait_for_selector("h1")
    assert "on all your devices" in laptop.inner_text("main")
    assert not _signed_in(laptop, provider) and not _signed_in(phone, provider)
    assert _signed_in(bystander, provider), "another citizen stays signed in"

    problems["signed-out"] = axe_violations(phone, axe_script, "fa-account-login-again")
    assert not {k: v for k, v in problems.items() if v}, json.dumps(problems, ensure_ascii=False, indent=1)


def test_the_consent_page_says_who_is_signed_in_and_not_you_goes_back_to_the_login(new_context, provider, axe_script,
                                                                                  shots):
    from ..helpers import FlowClient

    client_id, _, redirect = provider.add_client(name="Bank", name_fa="بانک ملت", trusted=False,
                                                 scope="openid profile age")
    national_id, mobile = provider.add_citizen()
    page = new_context(bypass_csp=True).new_page()  # bypass_csp: for the axe run only
    page.goto(FlowClient(provider).authorize_url(client_id, redirect, scope="openid profile age"))
    page.fill("#national_id", national_id)
    page.fill("#mobile", mobile)
    page.click("button.primary")
    page.fill("#otp", provider.outbox.last_code(mobile_e164(mobile)))
    page.click("form:first-of-type button[type=submit]")
    page.wait_for_selector("button[name=decision][value=approve]")
    assert page.inner_text("h1") == "به بانک ملت اجازه می‌دهید اطلاعات شما را ببیند؟"
    assert [item.strip() for item in page.locator("ul.claims li").all_inner_texts()] == [
        "شناسه‌ای از شما که فقط برای این سامانه ساخته می‌شود", "نام، نام خانوادگی و تاریخ تولد شما",
        "اینکه ۱۸ سال یا بیشتر دارید یا نه"]
    assert "آزمون شهروند" in page.inner_text("#signed-in")
    problems = {"consent": axe_violations(page, axe_script, "fa-consent")}
    shots(page, "consent")
    assert page.locator("#not-me").evaluate("el => getComputedStyle(el).backgroundColor") == "rgba(0, 0, 0, 0)"

    page.click("#not-me")
    page.wait_for_selector("input[name=national_id]")
    assert "/login?r=" in page.url and page.inner_text("h1") == "ورود به بانک ملت"
    assert page.context.cookies() and not [c for c in page.context.cookies() if c["name"] == "idp_sso"]
    assert not {k: v for k, v in problems.items() if v}, json.dumps(problems, ensure_ascii=False, indent=1)
