"""The citizen's account pages: linked from the home page, they say who is signed in, and sign
out on this device or on all of them (every session of that citizen ends, each with its
back-channel logouts, as at any logout; another citizen's sessions go on)."""
from __future__ import annotations

import re

import pytest

from idp.citizens.national_id import mask_national_id
from idp.platform.digits import persian_digits

from .helpers import LogoutReceiver, form_fields, wait_until
from .test_consent import _sign_in_at
from .test_logout import (
    deliveries,
    id_claims,
    login_for_id_token,
    set_backchannel,
    signed_in,
    sso_id_token,
    verify_logout_token,
)

NAME = "آزمون شهروند"  # the name provider.add_citizen registers


@pytest.fixture()
def receiver():
    r = LogoutReceiver()
    yield r
    r.stop()


def _post(browser, page, path: str, with_csrf: bool = True):
    data = {"csrf_token": form_fields(page.text)["csrf_token"]} if with_csrf else {}
    return browser.http.post(f"{browser.provider.url}{path}", data=data, allow_redirects=False, timeout=10)


def _session_ended(provider, cookie: str) -> bool:
    from idp.platform.store import store

    with provider.app.app_context():
        return store.get_session(store.session_id(cookie)) is None


def _logout_audit(provider) -> list[dict]:
    from idp.platform.audit import latest

    with provider.app.app_context():
        return latest(50, "logout")


def test_the_home_page_links_to_the_account(provider):
    browser = provider.flow()
    for lang, words in (("fa", "حساب من"), ("en", "My account")):
        home = browser.get(f"{provider.url}/?lang={lang}")
        assert home.status_code == 200
        link = re.search(r'<a [^>]*href="/account"[^>]*>([^<]*)</a>', home.text)
        assert link and link.group(1) == words, home.text
    account = browser.get(f"{provider.url}/account")
    assert account.status_code == 303 and "/login?r=" in account.headers["Location"], "a login comes first"


def test_the_account_pages_say_who_is_signed_in(provider):
    national_id, mobile = provider.add_citizen()
    masked = mask_national_id(national_id)
    browser, page = _sign_in_at(provider, "/account", national_id, mobile)
    assert national_id not in page.text and persian_digits(national_id) not in page.text, "only masked"
    assert re.search(rf'<p class="signed-in"[^>]*>شما با نام <bdi>{NAME}</bdi> و کد ملی '
                     rf'<bdi dir="ltr">{re.escape(persian_digits(masked))}</bdi> وارد شده‌اید.</p>', page.text), page.text
    assert 'action="/account/logout"' in page.text and 'action="/account/logout/everywhere"' in page.text
    assert page.text.count('name="csrf_token"') == 2 and "خروج در همه‌ی دستگاه‌ها" in page.text

    english = browser.get(f"{provider.url}/account?lang=en")
    assert f'You are signed in as <bdi>{NAME}</bdi>, national ID <bdi dir="ltr">{masked}</bdi>.' in english.text
    assert "Sign out on this device" in english.text and "Sign out on all devices" in english.text
    services = browser.get(f"{provider.url}/account/services?lang=en")
    assert f'<bdi dir="ltr">{masked}</bdi>' in services.text and national_id not in services.text

    # Someone else's account page shows them, not the first citizen.
    other_id, other_mobile = provider.add_citizen()
    _, other_page = _sign_in_at(provider, "/account", other_id, other_mobile)
    assert persian_digits(mask_national_id(other_id)) in other_page.text


def test_sign_out_ends_this_session_only(provider, receiver):
    client_id, secret, redirect = provider.add_client()
    set_backchannel(provider, client_id, receiver.url("/bcl"))
    national_id, mobile = provider.add_citizen()
    other_device = provider.flow()
    other_sid = id_claims(provider, login_for_id_token(provider, other_device, client_id, secret, redirect,
                                                       national_id, mobile))["sid"]
    browser, page = _sign_in_at(provider, "/account", national_id, mobile)
    sid = id_claims(provider, sso_id_token(browser, client_id, secret, redirect))["sid"]
    page = browser.get(f"{provider.url}/account")

    refused = _post(browser, page, "/account/logout", with_csrf=False)
    assert refused.status_code == 400 and signed_in(browser, client_id, redirect), "no CSRF token: nothing ends"

    done = _post(browser, page, "/account/logout")
    assert done.status_code == 200 and "از درگاه ملی خارج شدید" in done.text
    assert "idp_sso=;" in done.headers.get("Set-Cookie", "").replace('""', "")
    assert not signed_in(browser, client_id, redirect)
    assert signed_in(other_device, client_id, redirect), "the citizen's other device stays signed in"
    assert [(r["client_id"], r["sid"]) for r in deliveries(provider, sid=sid)] == [(client_id, sid)]
    assert deliveries(provider, sid=other_sid) == []
    assert receiver.wait_for("/bcl") and verify_logout_token(provider, receiver.tokens_for("/bcl")[0])["claims"]["sid"] == sid
    assert _logout_audit(provider)[-1]["details"]["reason"] == "account"


def test_sign_out_everywhere_ends_every_session_of_the_citizen_and_no_one_elses(provider, receiver):
    client_id, secret, redirect = provider.add_client()
    set_backchannel(provider, client_id, receiver.url("/everywhere"))
    national_id, mobile = provider.add_citizen()
    phone, laptop = provider.flow(), provider.flow()
    sids = {id_claims(provider, login_for_id_token(provider, b, client_id, secret, redirect, national_id, mobile))["sid"]
            for b in (phone, laptop)}
    bystander_id, bystander_mobile = provider.add_citizen()
    bystander = provider.flow()
    bystander_sid = id_claims(provider, login_for_id_token(provider, bystander, client_id, secret, redirect,
                                                           bystander_id, bystander_mobile))["sid"]
    browser, page = _sign_in_at(provider, "/account", national_id, mobile)
    cookie = browser.http.cookies.get("idp_sso")

    refused = _post(browser, page, "/account/logout/everywhere", with_csrf=False)
    assert refused.status_code == 400 and signed_in(phone, client_id, redirect) and not _session_ended(provider, cookie)

    done = _post(browser, page, "/account/logout/everywhere")
    assert done.status_code == 200 and "در همه‌ی دستگاه‌هایتان از درگاه ملی خارج شدید" in done.text, done.text[:500]
    assert "idp_sso=;" in done.headers.get("Set-Cookie", "").replace('""', "")
    assert _session_ended(provider, cookie) and browser.http.cookies.get("idp_sso") is None
    assert not signed_in(phone, client_id, redirect) and not signed_in(laptop, client_id, redirect)
    assert signed_in(bystander, client_id, redirect), "another citizen's session goes on"

    # A back-channel logout for each ended session's agency, none for the bystander's.
    for sid in sids:
        assert [r["client_id"] for r in deliveries(provider, sid=sid)] == [client_id], sid
    assert deliveries(provider, sid=bystander_sid) == []
    assert wait_until(lambda: len(receiver.tokens_for("/everywhere")) == 2, 15)
    assert {verify_logout_token(provider, t)["claims"]["sid"] for t in receiver.tokens_for("/everywhere")} == sids
    event = _logout_audit(provider)[-1]
    assert event["details"]["reason"] == "account_everywhere" and event["details"]["sessions"] == 3
    assert national_id not in str(event)

    # Pressed again from a browser whose session has gone: the same page, nothing more to end.
    again = _post(browser, page, "/account/logout/everywhere")
    assert again.status_code == 200 and len(deliveries(provider, client_id=client_id)) == 2
