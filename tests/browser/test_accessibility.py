"""axe-core finds no serious or critical accessibility violation on the login pages (WCAG 2.1 AA).

axe is injected as a script tag, which the pages' Content-Security-Policy (script-src 'self')
would refuse; so these pages are opened in a context that bypasses the CSP, for the axe run
only. Every violation found, of any impact, is written to test-artifacts/browser/axe-*.json.
"""
from __future__ import annotations

import json

import pytest

from ..helpers import mobile_e164
from .conftest import ARTIFACTS
from .test_login_pages import open_login, wrong

BLOCKING = {"serious", "critical"}
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]


def axe_violations(page, axe_script, name: str) -> list[dict]:
    """Run axe on the page; save every violation and return the serious and critical ones."""
    page.add_script_tag(path=str(axe_script))
    result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG_AA)
    assert len(result["passes"]) > 10, "axe checked next to nothing: is this the page?"
    found = [{"id": v["id"], "impact": v["impact"], "help": v["help"],
              "nodes": [n["target"] for n in v["nodes"]]} for v in result["violations"]]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"axe-{name}.json").write_text(json.dumps(found, ensure_ascii=False, indent=2), encoding="utf-8")
    return [v for v in found if v["impact"] in BLOCKING]


@pytest.mark.parametrize("lang", ["fa", "en"])
def test_login_pages_have_no_serious_axe_violations(new_context, provider, agency, axe_script, shots, lang):
    page = new_context(bypass_csp=True).new_page()
    national_id, mobile = provider.add_citizen()
    to = mobile_e164(mobile)
    problems = {}

    open_login(page, agency, provider)
    page.goto(page.url + f"&lang={lang}")
    problems["identify"] = axe_violations(page, axe_script, f"{lang}-identify")

    page.fill("#national_id", "12")
    page.fill("#mobile", "12")
    page.click("button.primary")
    page.wait_for_selector("#mobile-error")
    problems["identify-errors"] = axe_violations(page, axe_script, f"{lang}-identify-errors")
    shots(page, "identify-errors")

    page.fill("#national_id", national_id)
    page.fill("#mobile", mobile)
    page.click("button.primary")
    page.wait_for_selector("input[name=otp]")
    problems["code"] = axe_violations(page, axe_script, f"{lang}-code")

    page.fill("#otp", wrong(provider.outbox.last_code(to)))
    page.click("form:first-of-type button[type=submit]")
    page.wait_for_selector("#otp-error")
    problems["code-wrong"] = axe_violations(page, axe_script, f"{lang}-code-wrong")

    page.goto(f"{provider.url}/login?r=bogus&lang={lang}")
    problems["error-interaction"] = axe_violations(page, axe_script, f"{lang}-error-interaction")

    page.goto(f"{provider.url}/_preview/error/cooloff?wait=300&restart=1&lang={lang}")
    problems["error-cooloff"] = axe_violations(page, axe_script, f"{lang}-error-cooloff")

    page.goto(f"{provider.url}/_preview/otp?seconds=90&resend_in=30&resend_error=1&resent=1&lang={lang}")
    problems["code-resend-refused"] = axe_violations(page, axe_script, f"{lang}-code-resend-refused")

    assert not {k: v for k, v in problems.items() if v}, json.dumps(problems, ensure_ascii=False, indent=1)


def test_the_axe_check_does_catch_violations(new_context, axe_script):
    """The harness itself: a page with known faults is reported, or the test above proves nothing."""
    page = new_context(bypass_csp=True).new_page()
    page.set_content('<html><body><main><h1>Form</h1><img src="data:,">'
                     '<p style="color:#bbb">faint</p><input id="x"><button></button></main></body></html>')
    found = {v["id"] for v in axe_violations(page, axe_script, "self-test")}
    assert {"image-alt", "label", "button-name", "color-contrast"} <= found, found


def test_authenticator_app_set_up_then_used_to_sign_in(new_context, provider, agency, axe_script, shots):
    """Set up an app on the account pages after an SMS login, then sign in with it elsewhere."""
    import time

    import pyotp

    national_id, mobile = provider.add_citizen()
    to = mobile_e164(mobile)
    problems = {}

    page = new_context(bypass_csp=True).new_page()
    open_login(page, agency, provider)
    page.fill("#national_id", national_id)
    page.fill("#mobile", mobile)
    page.click("button.primary")
    page.fill("#otp", provider.outbox.last_code(to))
    page.click("form:first-of-type button[type=submit]")
    page.wait_for_url(agency.url + "/")

    page.goto(provider.url + "/account/authenticator")
    assert page.locator(".qr img").get_attribute("alt"), "the QR code has a text alternative"
    secret = page.inner_text(".secret code").replace(" ", "")
    problems["authenticator"] = axe_violations(page, axe_script, "fa-authenticator")
    shots(page, "authenticator")
    page.fill("#otp", pyotp.TOTP(secret).now())
    page.click("form button[type=submit]")
    page.wait_for_selector("p.notice[role=status]")
    problems["account"] = axe_violations(page, axe_script, "fa-account")
    shots(page, "account-enrolled")

    # Another browser: the app's code instead of a text message.
    page = new_context(bypass_csp=True).new_page()
    open_login(page, agency, provider)
    page.fill("#national_id", national_id)
    page.fill("#mobile", mobile)
    page.click("button[name=method][value=totp]")
    page.wait_for_selector("input[name=otp]")
    assert page.inner_text("h1") == "کد برنامه‌ی احراز هویت را وارد کنید"
    assert page.locator("#resend").count() == 0, "an app's code is not sent again"
    problems["code-app"] = axe_violations(page, axe_script, "fa-code-app")
    shots(page, "code-app")
    # Each step's code is taken once (enrolment used this one); one step of drift is accepted.
    page.fill("#otp", pyotp.TOTP(secret).at(time.time() + 30))
    page.click("form:first-of-type button[type=submit]")
    page.wait_for_url(agency.url + "/")
    assert "آزمون شهروند، خوش آمدید" in page.inner_text("h2")

    assert not {k: v for k, v in problems.items() if v}, json.dumps(problems, ensure_ascii=False, indent=1)
