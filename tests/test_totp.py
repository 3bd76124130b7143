"""Authenticator apps: enrol after an SMS login (QR + key), log in with the app's code instead
of an SMS, each code accepted once, one step of drift, secret encrypted, acr/amr tell which."""
from __future__ import annotations

import re
import time

import pyotp
import requests

from .helpers import form_fields, redirect_params, verify_id_token


def _enrol(provider, national_id, mobile):
    """Log in with SMS through the account pages and enrol an app; returns (browser, secret, step used)."""
    browser = provider.flow()
    page = browser.follow(browser.get(f"{provider.url}/account/authenticator"), "http://never/")
    assert 'name="national_id"' in page.text, "no session: the account page asks for an SMS login first"
    sent = len(provider.outbox.messages(mobile))
    page = browser.follow(browser.submit(page, {"national_id": national_id, "mobile": mobile}), "http://never/")
    code = provider.outbox.last_code(mobile, after=sent)
    page = browser.follow(browser.submit(page, {"otp": code}), "http://never/")
    assert page.status_code == 200 and page.url.endswith("/account/authenticator"), page.url
    assert 'src="data:image/svg+xml' in page.text, "a QR code is shown"
    secret = re.search(r'<code dir="ltr">([A-Z2-7 ]+)</code>', page.text).group(1).replace(" ", "")
    totp = pyotp.TOTP(secret)
    empty = browser.submit(page, {"otp": ""})
    assert empty.status_code == 400 and "لطفاً کد ۶ رقمی را وارد کنید." in empty.text, "empty is asked for"
    wrong = browser.submit(page, {"otp": f"{(int(totp.now()) + 1) % 10**6:06d}"})
    assert wrong.status_code == 400
    now = time.time()
    done = browser.submit(wrong, {"otp": totp.at(now)})
    assert done.status_code == 303 and "enrolled=1" in done.headers["Location"]
    return browser, secret, int(now // 30)


def _app_login(provider, client, national_id, mobile, code_for):
    client_id, secret, redirect = client
    browser = provider.flow()
    page = browser.start(client_id, redirect)
    sent = len(provider.outbox.messages(mobile))
    page = browser.follow(browser.submit(page, {"national_id": national_id, "mobile": mobile, "method": "totp"}),
                          redirect)
    assert 'name="otp"' in page.text
    answer = browser.submit(page, {"otp": code_for})
    provider.outbox.settle(0.2)
    assert len(provider.outbox.messages(mobile)) == sent, "no SMS for an app login"
    return browser, page, answer


def test_enrol_then_log_in_with_the_app(provider):
    client = provider.add_client()
    national_id, mobile = provider.add_citizen()
    _, secret, step = _enrol(provider, national_id, mobile)
    with provider.app.app_context():
        from idp.citizens import authenticators
        from idp.citizens.directory import find

        stored = authenticators.secret(find(national_id).citizen.id)
        assert stored and secret not in stored, "the secret is encrypted at rest"

    totp = pyotp.TOTP(secret)
    # The enrolment code's step is used up; the next step (one step of drift) is accepted once.
    replay_browser, _, replay = _app_login(provider, client, national_id, mobile, totp.at(step * 30 + 1))
    assert replay.status_code == 400, "a code is accepted once only"
    browser, _, answer = _app_login(provider, client, national_id, mobile, totp.at((step + 1) * 30 + 1))
    result = redirect_params(browser.follow(answer, client[2]), client[2])
    token = browser.exchange(client[0], client[1], client[2], result["code"])
    claims = verify_id_token(provider.url, token.json()["id_token"])["claims"]
    assert claims["acr"] == "urn:idp:acr:totp" and claims["amr"] == ["otp"]
    again_browser, _, again = _app_login(provider, client, national_id, mobile, totp.at((step + 1) * 30 + 1))
    assert again.status_code == 400, "the same app code cannot be used twice"


def test_no_app_means_no_code_works_and_sms_is_offered(provider):
    client = provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser, page, answer = _app_login(provider, client, national_id, mobile, "123456")
    assert answer.status_code == 400
    # Someone without an app is not asked "no code arrived?" (that is for a texted code).
    assert "کد نرسید" not in page.text and "کد نرسید" not in answer.text and "دوباره شروع کنید" in page.text
    fields = form_fields(answer.text)
    switch = browser.http.post(f"{provider.url}/login/resend?{page.url.split('?')[1]}",
                               data={"csrf_token": fields["csrf_token"]}, allow_redirects=False, timeout=10)
    assert switch.status_code == 303, "switching to SMS is immediate"
    code = provider.outbox.last_code(mobile)
    page = browser.follow(switch, client[2])
    done = browser.follow(browser.submit(page, {"otp": code}), client[2])
    assert redirect_params(done, client[2])["code"]


def test_app_and_sms_pages_look_the_same_for_strangers(provider):
    client = provider.add_client()
    national_id, mobile = provider.add_citizen()
    _enrol(provider, national_id, mobile)
    other, _ = provider.add_citizen()
    pages = []
    for nid in (national_id, other):
        browser = provider.flow()
        page = browser.start(client[0], client[2])
        page = browser.follow(browser.submit(page, {"national_id": nid, "mobile": mobile, "method": "totp"}),
                              client[2])
        # the countdown may cross a second between the two pages: its figure is not compared
        pages.append(re.sub(r"r=[A-Za-z0-9_\-]+|csrf_token[^>]*|seconds=\"\d+\">[^<]*", "", page.text))
    assert pages[0] == pages[1], "whether a citizen has an app is not shown"


def test_enrolment_needs_a_fresh_sms_login(provider):
    client = provider.add_client()
    national_id, mobile = provider.add_citizen()
    _, secret, step = _enrol(provider, national_id, mobile)
    browser, _, answer = _app_login(provider, client, national_id, mobile,
                                    pyotp.TOTP(secret).at((step + 1) * 30 + 1))
    assert answer.status_code == 303
    browser.follow(answer, client[2])
    page = browser.follow(browser.get(f"{provider.url}/account/authenticator"), "http://never/")
    assert 'name="national_id"' in page.text, "an app session cannot replace the app: SMS first"


def test_account_page_needs_a_session(provider):
    """Without a session /account sends the browser to the login, and back to /account after it;
    the page itself is only served to the signed-in citizen."""
    national_id, mobile = provider.add_citizen()
    r = requests.get(f"{provider.url}/account", allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["Location"].startswith("/login?r="), r.headers.get("Location")
    browser = provider.flow()
    page = browser.follow(browser.get(f"{provider.url}/account"), "http://never/")
    assert page.status_code == 200 and 'name="national_id"' in page.text, page.text[:300]
    sent = len(provider.outbox.messages(mobile))
    page = browser.follow(browser.submit(page, {"national_id": national_id, "mobile": mobile}), "http://never/")
    page = browser.follow(browser.submit(page, {"otp": provider.outbox.last_code(mobile, after=sent)}),
                          "http://never/")
    assert page.status_code == 200 and page.url == f"{provider.url}/account", (page.status_code, page.url)
    assert 'name="national_id"' not in page.text and 'name="otp"' not in page.text
    assert 'href="/account/authenticator"' in page.text, page.text[:500]


def test_a_wrong_app_code_costs_the_same_work_with_or_without_an_app(provider, monkeypatch):
    """Someone who knows a national ID + mobile pair must not learn from the time of a wrong app
    code whether that citizen has an app: both answers read a citizen row, decrypt a secret and
    compute the codes of three steps (timing over HTTP is too coarse for a half-millisecond
    difference, so the work itself is counted)."""
    from sqlalchemy import event

    import idp.login.totp
    from idp.platform.database import db

    client = provider.add_client()
    with_app, mobile = provider.add_citizen()
    _enrol(provider, with_app, mobile)
    without_app, other_mobile = provider.add_citizen()

    statements, steps, decrypts = [], [], []
    real_step, real_fernet = idp.login.totp._matching_step, idp.login.totp._fernet

    def counting_step(secret, code, at=None):
        steps.append(code)
        return real_step(secret, code, at)

    def counting_fernet():
        fernet = real_fernet()
        decrypt = fernet.decrypt
        fernet.decrypt = lambda token, *a: decrypts.append(1) or decrypt(token, *a)
        return fernet

    def on_sql(conn, cursor, statement, *args):
        if "citizens" in statement:
            statements.append(" ".join(statement.split()[:4]))

    with provider.app.app_context():
        engine = db.engine
    monkeypatch.setattr(idp.login.totp, "_matching_step", counting_step)
    monkeypatch.setattr(idp.login.totp, "_fernet", counting_fernet)
    work = {}
    for name, nid, mob in (("app", with_app, mobile), ("no app", without_app, other_mobile)):
        browser = provider.flow()
        page = browser.start(client[0], client[2])
        page = browser.follow(browser.submit(page, {"national_id": nid, "mobile": mob, "method": "totp"}), client[2])
        statements.clear(), steps.clear(), decrypts.clear()
        event.listen(engine, "before_cursor_execute", on_sql)
        try:
            answer = browser.submit(page, {"otp": "000000"})  # wrong but for a 3-in-a-million chance
        finally:
            event.remove(engine, "before_cursor_execute", on_sql)
        assert answer.status_code == 400
        work[name] = (list(statements), len(steps), len(decrypts))
    assert work["app"] == work["no app"], work
    assert work["app"][1] == 1 and work["app"][2] == 1 and any("SELECT" in s for s in work["app"][0]), work
