"""The citizen's own record in headless Chromium on a 360px phone: reached from the account page,
every section filled (sign-ins, a connected service, an exchange between agencies, two sessions
with this device marked), nothing wider than the screen, no serious axe violation in Persian or
English, and a permission withdrawn from the record page brings the person back to it."""
from __future__ import annotations

import json

import requests

from .test_accessibility import axe_violations
from .test_account_pages import _sign_in

#: The narrowest phone the pages are made for.
SMALL_PHONE = {"viewport": {"width": 360, "height": 740}}
TX = "urn:ietf:params:oauth:grant-type:token-exchange"
AT = "urn:ietf:params:oauth:token-type:access_token"


def _exchange_for(provider, national_id: str, mobile: str) -> None:
    """Agency A signs the citizen in (over HTTP) and exchanges the token for one meant for agency
    B, as an operator's delegation allows: the exchange the record lists."""
    from idp.protocol import delegations

    a = provider.add_client(name="Post office", name_fa="اداره‌ی پست", scope="openid profile",
                            sector="post.gov.example")
    b = provider.add_client(name="Land registry", name_fa="ثبت اسناد", scope="openid profile",
                            sector="land.gov.example")
    with provider.app.app_context():
        delegations.add(a[0], b[0], "openid profile")
    browser = provider.flow()
    code = browser.login(a[0], a[2], national_id, mobile)["code"]
    token = browser.exchange(a[0], a[1], a[2], code).json()["access_token"]
    r = requests.post(f"{provider.url}/token", auth=(a[0], a[1]), timeout=10,
                      data={"grant_type": TX, "subject_token": token, "subject_token_type": AT, "audience": b[0]})
    assert r.status_code == 200, r.text


def _grant(provider, national_id: str) -> None:
    """A service that asks for consent, allowed earlier."""
    from idp.citizens.directory import find
    from idp.protocol import consent

    bank = provider.add_client(name="Bank", name_fa="بانک ملت", scope="openid phone", trusted=False)
    with provider.app.app_context():
        consent.grant(find(national_id).citizen.id, bank[0], "openid phone")


def _wider_than_the_screen(page) -> list[str]:
    """The elements that stick out of the viewport sideways (none, on a page made for phones)."""
    return page.evaluate("""() => {
      const width = document.documentElement.clientWidth, out = [];
      if (document.documentElement.scrollWidth > width) out.push('document ' + document.documentElement.scrollWidth);
      for (const el of document.querySelectorAll('main *')) {
        const box = el.getBoundingClientRect();
        if (box.width && (box.left < -1 || box.right > width + 1)) out.push(el.tagName + '.' + el.className);
      }
      return out; }""")


def test_the_record_page_on_a_small_phone(new_context, provider, agency, axe_script, shots):
    national_id, mobile = provider.add_citizen()
    _exchange_for(provider, national_id, mobile)
    _grant(provider, national_id)
    laptop = new_context().new_page()
    _sign_in(laptop, agency, provider, national_id, mobile)
    page = new_context(bypass_csp=True, **SMALL_PHONE).new_page()  # bypass_csp: for the axe run only
    _sign_in(page, agency, provider, national_id, mobile)

    page.goto(provider.url + "/account")
    page.click("#record-link")
    page.wait_for_selector("#sign-ins")
    assert page.inner_text("h1") == "سوابق من"
    sign_ins = page.locator("#sign-ins > li")
    assert sign_ins.count() == 3  # this phone, the laptop (the demo agency each), then Post office
    assert "وزارت آموزش و پرورش" in sign_ins.nth(0).inner_text() and "کد پیامکی" in sign_ins.nth(0).inner_text()
    assert "اداره‌ی پست" in sign_ins.nth(2).inner_text()
    assert page.locator("#no-place").is_visible() and "مکان" in page.inner_text("#no-place")
    assert "بانک ملت" in page.inner_text("#services")
    exchanges = page.locator("#exchanges > li")
    assert exchanges.count() == 1 and "اداره‌ی پست برای شما ثبت اسناد را فراخواند" in exchanges.inner_text()
    # Three sessions: this phone first and marked, the laptop and the HTTP login at the Post office.
    sessions = page.locator("#sessions > li")
    assert sessions.count() == 3 and page.locator("#sessions > li.this-device").count() == 1
    assert "همین دستگاه" in sessions.nth(0).inner_text()
    assert page.locator("#sessions .badge").is_visible()
    assert page.locator("#sign-out-everywhere").is_visible()
    assert page.locator("#guardian").count() == 0, "no guardian data, no section"
    assert _wider_than_the_screen(page) == []
    problems = {"record-fa": axe_violations(page, axe_script, "fa-account-record")}
    shots(page, "record-fa")

    page.click("a.lang")
    page.wait_for_selector("html[lang=en]")
    assert page.inner_text("h1") == "My record" and "This device" in page.inner_text("#sessions")
    assert "Post office called Land registry" in page.inner_text("#exchanges")
    assert _wider_than_the_screen(page) == []
    problems["record-en"] = axe_violations(page, axe_script, "en-account-record")
    shots(page, "record-en")

    # Withdrawing from the record comes back to it, with the notice read out.
    page.click("#services button[type=submit]")
    page.wait_for_selector("p.notice[role=status]")
    assert page.url.startswith(provider.url + "/account/record") and "Bank" not in page.inner_text("#services")
    problems["record-withdrawn"] = axe_violations(page, axe_script, "en-account-record-withdrawn")
    assert not {k: v for k, v in problems.items() if v}, json.dumps(problems, ensure_ascii=False, indent=1)
