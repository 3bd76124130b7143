"""Consent: trusted agencies never ask; other services ask once per scope set (again, with the new
items marked, when they want more); citizens see and withdraw grants on /account/services, and
operators with `idp consents list|revoke`."""
from __future__ import annotations

import json
import re
import secrets
import time

import pytest
import requests

from idp.citizens.national_id import make_national_id

from .helpers import form_fields, idp, redirect_params, verify_id_token

APPROVE = 'name="decision" value="approve"'


def _citizen_id(provider, national_id: str) -> int:
    with provider.app.app_context():
        from idp.citizens.directory import find

        return find(national_id).citizen.id


def _client(provider, client_id: str):
    from idp.platform.database import db
    from idp.protocol.models import Client

    return db.session.execute(db.select(Client).filter_by(client_id=client_id)).scalar_one()


def _allow_national_id(provider, client_id: str) -> None:
    """Let a client have the national_id scope (only agencies the law allows get it)."""
    with provider.app.app_context():
        from idp.platform.database import db

        client = _client(provider, client_id)
        client.client_metadata = {**client.client_metadata, "allow_national_id": True}
        db.session.commit()
        from idp.protocol.clients import clients_changed

        clients_changed()  # what agencies.py does after every change, for every node's client cache


def _audit(provider, event: str) -> list[dict]:
    with provider.app.app_context():
        from idp.platform.audit import latest

        return latest(200, event)


def _sign_in_at(provider, path: str, national_id: str, mobile: str):
    """Open an account page in a new browser, log in by SMS on the way; returns (browser, page)."""
    browser = provider.flow()
    page = browser.follow(browser.get(f"{provider.url}{path}"), "http://never/")
    assert 'name="national_id"' in page.text, "no session: the account page asks for a login first"
    sent = len(provider.outbox.messages(mobile))
    page = browser.follow(browser.submit(page, {"national_id": national_id, "mobile": mobile}), "http://never/")
    code = provider.outbox.last_code(mobile, after=sent)
    page = browser.follow(browser.submit(page, {"otp": code}), "http://never/")
    assert page.status_code == 200 and page.url.split("?")[0].endswith(path), page.url
    return browser, page


# ---- the service -------------------------------------------------------------------------------

def test_trusted_clients_never_need_consent(provider):
    trusted_id, _, _ = provider.add_client(name="Tax office", trusted=True, scope="openid profile phone")
    national_id, _ = provider.add_citizen()
    citizen_id = _citizen_id(provider, national_id)
    with provider.app.app_context():
        from idp.protocol import consent

        client = _client(provider, trusted_id)
        assert not consent.needs_consent(citizen_id, client, "openid profile phone")
        assert not consent.needs_consent(citizen_id, client, "openid", prompt="consent")
        assert consent.granted(citizen_id) == []


def test_untrusted_client_asks_until_a_grant_covers_the_request(provider):
    client_id, _, _ = provider.add_client(name="Bank", scope="openid profile phone national_id", trusted=False)
    _allow_national_id(provider, client_id)
    national_id, _ = provider.add_citizen()
    citizen_id = _citizen_id(provider, national_id)
    with provider.app.app_context():
        from idp.protocol import consent

        client = _client(provider, client_id)
        assert consent.needs_consent(citizen_id, client, "openid"), "even a bare sub is asked for"
        assert consent.needs_consent(citizen_id, client, "openid profile")
        consent.grant(citizen_id, client_id, "openid profile")
        assert not consent.needs_consent(citizen_id, client, "openid profile")
        assert not consent.needs_consent(citizen_id, client, "profile openid")
        assert not consent.needs_consent(citizen_id, client, "openid"), "a narrower request is covered"
        assert not consent.needs_consent(citizen_id, client, "openid profile email"), \
            "scopes the client may not have are not asked about"
        assert consent.needs_consent(citizen_id, client, "openid profile phone"), "a superset asks again"
        assert consent.needs_consent(citizen_id, client, "openid profile", prompt="login consent")

        consent.grant(citizen_id, client_id, "openid phone")
        assert consent.granted_scopes(citizen_id, client_id) == ("openid", "profile", "phone"), "union, in order"
        assert not consent.needs_consent(citizen_id, client, "openid profile phone")
        [grant] = consent.granted(citizen_id)
        assert grant.client_id == client_id and grant.name == "Bank"
        assert grant.scopes == ("openid", "profile", "phone") and grant.granted_at <= grant.updated_at

        assert consent.withdraw(citizen_id, client_id) is True
        assert consent.needs_consent(citizen_id, client, "openid profile"), "withdrawn: it asks again"
        assert consent.withdraw(citizen_id, client_id) is False
        assert consent.granted(citizen_id) == []


def test_grants_are_per_citizen_and_per_client(provider):
    first_id, _, _ = provider.add_client(name="First", scope="openid profile", trusted=False)
    second_id, _, _ = provider.add_client(name="Second", scope="openid profile", trusted=False)
    alice, _ = provider.add_citizen()
    bob, _ = provider.add_citizen()
    alice_id, bob_id = _citizen_id(provider, alice), _citizen_id(provider, bob)
    with provider.app.app_context():
        from idp.protocol import consent

        consent.grant(alice_id, first_id, "openid profile")
        assert consent.needs_consent(alice_id, _client(provider, second_id), "openid profile")
        assert consent.needs_consent(bob_id, _client(provider, first_id), "openid profile")
        assert [g.client_id for g in consent.granted(bob_id)] == []


# ---- the consent page --------------------------------------------------------------------------

def _paused(provider, browser, client_id: str, scope: str, sid: str | None = None, **extra) -> str:
    """A paused authorization request after login, as the pipeline leaves it for the consent page."""
    with provider.app.app_context():
        from idp.platform.store import store
        from idp.protocol import interaction

        paused = interaction.new(client_id, redirect_uri="http://127.0.0.1:9/cb", scope=scope, state="s-1",
                                 code_challenge="x" * 43, ui_locales=extra.get("ui_locales"),
                                 sid=sid or store.session_id(browser.http.cookies.get("idp_sso")))
        store.put_pending(paused.id, paused.as_record(), ttl=600)
        rid = paused.id
        cookie = interaction.FLOW_COOKIES[0]
    browser.http.cookies.set(cookie, f"{int(time.time() * 1000)}.{rid}", domain="127.0.0.1", path="/")
    return rid


def _interaction(provider, rid: str) -> dict:
    with provider.app.app_context():
        from idp.platform.store import store

        return store.get_pending(rid)


def test_consent_page_lists_claims_then_approval_is_remembered(provider):
    client_id, _, _ = provider.add_client(name="Bank", name_fa="بانک ملت", scope="openid profile phone national_id",
                                          trusted=False)
    _allow_national_id(provider, client_id)
    national_id, mobile = provider.add_citizen()
    citizen_id = _citizen_id(provider, national_id)
    browser, _ = _sign_in_at(provider, "/account/services", national_id, mobile)

    rid = _paused(provider, browser, client_id, "openid profile phone")
    page = browser.get(f"{provider.url}/consent?r={rid}")
    assert page.status_code == 200, page.text[:300]
    assert APPROVE in page.text and 'name="decision" value="deny"' in page.text
    assert 'name="csrf_token"' in page.text and "<script" not in page.text and "style=" not in page.text
    assert "بانک ملت" in page.text and 'dir="rtl"' in page.text
    for claim in ("شناسه‌ای از شما", "نام، نام خانوادگی و تاریخ تولد شما", "شماره‌ی همراه شما"):
        assert claim in page.text, claim
    assert "کد ملی شما" not in page.text, "only what was asked is listed"
    assert "(تازه)" not in page.text, "nothing is new the first time"
    english = browser.get(f"{provider.url}/consent?r={rid}&lang=en")
    assert "Bank" in english.text and "Your mobile number" in english.text
    assert "Your given name, family name and date of birth" in english.text

    done = browser.submit(page, {"decision": "approve"})
    assert done.status_code == 303 and done.headers["Location"].endswith(f"/authorize/resume?r={rid}")
    assert _interaction(provider, rid)["consent"] == "granted"
    with provider.app.app_context():
        from idp.protocol import consent

        assert consent.granted_scopes(citizen_id, client_id) == ("openid", "profile", "phone")
        assert not consent.needs_consent(citizen_id, _client(provider, client_id), "openid phone")
    granted = [e for e in _audit(provider, "consent_granted") if e["client_id"] == client_id]
    assert granted and granted[-1]["details"]["scope"] == "openid profile phone"
    assert national_id not in json.dumps(granted)

    # Asking for more lists everything requested and marks only what is new.
    more = _paused(provider, browser, client_id, "openid profile phone national_id", ui_locales="en")
    page = browser.get(f"{provider.url}/consent?r={more}")
    assert "Your national ID" in page.text and "now asks for more than you allowed before" in page.text
    assert page.text.count("(new)") == 1
    assert re.search(r"Your national ID\s*<strong[^>]*>\(new\)", page.text)


def test_denying_records_no_grant(provider):
    client_id, _, _ = provider.add_client(name="Shop", scope="openid profile", trusted=False)
    national_id, mobile = provider.add_citizen()
    browser, _ = _sign_in_at(provider, "/account/services", national_id, mobile)
    rid = _paused(provider, browser, client_id, "openid profile")
    page = browser.get(f"{provider.url}/consent?r={rid}")
    done = browser.submit(page, {"decision": "deny"})
    assert done.status_code == 303 and "/authorize/resume?r=" in done.headers["Location"]
    assert _interaction(provider, rid)["consent"] == "denied"
    with provider.app.app_context():
        from idp.protocol import consent

        assert consent.granted_scopes(_citizen_id(provider, national_id), client_id) == ()
    assert any(e["client_id"] == client_id for e in _audit(provider, "consent_denied"))

    bad = browser.submit(browser.get(f"{provider.url}/consent?r={rid}"), {"decision": "maybe"})
    assert bad.status_code == 400
    assert _interaction(provider, rid)["consent"] == "denied"


def test_consent_page_belongs_to_the_session_and_browser_that_logged_in(provider):
    client_id, _, _ = provider.add_client(scope="openid profile", trusted=False)
    national_id, mobile = provider.add_citizen()
    browser, _ = _sign_in_at(provider, "/account/services", national_id, mobile)
    foreign = _paused(provider, browser, client_id, "openid profile", sid="someone-elses-session")
    page = browser.get(f"{provider.url}/consent?r={foreign}")
    assert page.status_code == 400 and "interaction_expired" in page.text and APPROVE not in page.text

    rid = _paused(provider, browser, client_id, "openid profile")
    stranger = provider.flow()  # no flow cookie, no session
    assert stranger.get(f"{provider.url}/consent?r={rid}").status_code == 400
    fields = form_fields(browser.get(f"{provider.url}/consent?r={rid}").text)
    forged = stranger.http.post(f"{provider.url}/consent?r={rid}", data={**fields, "decision": "approve"},
                                allow_redirects=False, timeout=10)
    assert forged.status_code == 400
    no_csrf = browser.http.post(f"{provider.url}/consent?r={rid}", data={"decision": "approve"},
                                allow_redirects=False, timeout=10)
    assert no_csrf.status_code == 400 and _interaction(provider, rid)["consent"] is None
    assert browser.get(f"{provider.url}/consent?r=unknown").status_code == 400


# ---- connected services ------------------------------------------------------------------------

def test_connected_services_lists_and_withdraws(provider):
    bank_id, _, _ = provider.add_client(name="Bank", name_fa="بانک ملت", scope="openid profile phone", trusted=False)
    shop_id, _, _ = provider.add_client(name="Bookshop", scope="openid profile", trusted=False)
    national_id, mobile = provider.add_citizen()
    citizen_id = _citizen_id(provider, national_id)
    with provider.app.app_context():
        from idp.protocol import consent

        consent.grant(citizen_id, bank_id, "openid phone")
        consent.grant(citizen_id, shop_id, "openid profile")

    browser, page = _sign_in_at(provider, "/account/services", national_id, mobile)
    assert "بانک ملت" in page.text and "Bookshop" in page.text
    assert "شماره‌ی همراه شما" in page.text and "نام، نام خانوادگی و تاریخ تولد شما" in page.text
    assert page.text.count('name="client_id"') == 2 and "<script" not in page.text
    assert re.search(r"اجازه از [۰-۹]+ \S+ [۰-۹]{4}", page.text), "the date is shown in the Jalali calendar"
    english = browser.get(f"{provider.url}/account/services?lang=en")
    assert "Bank" in english.text and "Allowed since" in english.text

    csrf = form_fields(page.text)["csrf_token"]
    done = browser.http.post(f"{provider.url}/account/services/withdraw", data={"csrf_token": csrf,
                             "client_id": bank_id}, allow_redirects=False, timeout=10)
    assert done.status_code == 303 and done.headers["Location"].endswith("/account/services?withdrawn=1")
    after = browser.get(f"{provider.url}/account/services?withdrawn=1")
    assert "بانک ملت" not in after.text and "Bookshop" in after.text and 'role="status"' in after.text
    with provider.app.app_context():
        from idp.protocol import consent

        assert consent.needs_consent(citizen_id, _client(provider, bank_id), "openid phone")
        assert [g.client_id for g in consent.granted(citizen_id)] == [shop_id]
    assert any(e["client_id"] == bank_id and e["details"].get("via") == "account"
               for e in _audit(provider, "consent_withdrawn"))

    no_csrf = browser.http.post(f"{provider.url}/account/services/withdraw", data={"client_id": shop_id},
                                allow_redirects=False, timeout=10)
    assert no_csrf.status_code == 400
    account = browser.get(f"{provider.url}/account")
    assert 'href="/account/services"' in account.text


def test_connected_services_needs_a_session(provider):
    r = requests.get(f"{provider.url}/account/services", allow_redirects=False, timeout=10)
    assert r.status_code == 303 and "/login?r=" in r.headers["Location"]
    national_id, mobile = provider.add_citizen()
    _, page = _sign_in_at(provider, "/account/services", national_id, mobile)
    assert "هنوز به هیچ سامانه‌ای اجازه نداده‌اید" in page.text


# ---- command line ------------------------------------------------------------------------------

def test_cli_lists_and_revokes(provider):
    client_id, _, _ = provider.add_client(name="Bank", name_fa="بانک ملت", scope="openid profile phone", trusted=False)
    national_id, _ = provider.add_citizen()
    citizen_id = _citizen_id(provider, national_id)
    with provider.app.app_context():
        from idp.protocol import consent

        consent.grant(citizen_id, client_id, "openid profile")

    out = idp(provider, "consents", "list", "--national-id", national_id, "--json")
    assert out.returncode == 0, out.stderr
    [row] = json.loads(out.stdout)
    assert row["client_id"] == client_id and row["name_fa"] == "بانک ملت" and row["scope"] == "openid profile"
    text = idp(provider, "consents", "list", "--national-id", national_id)
    assert text.returncode == 0 and client_id in text.stdout and "openid profile" in text.stdout

    stranger = make_national_id(f"{secrets.randbelow(10**9):09d}")
    for args, why in (((national_id, "no-such-client"), "no client"),
                      ((stranger, client_id), "no citizen"),
                      (("12345", client_id), "not a valid national ID")):
        bad = idp(provider, "consents", "revoke", "--national-id", args[0], "--client", args[1])
        assert bad.returncode != 0 and why in bad.stderr, (args, bad.stderr)
        assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr

    done = idp(provider, "consents", "revoke", "--national-id", national_id, "--client", client_id, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"client_id": client_id, "withdrawn": True}
    with provider.app.app_context():
        from idp.protocol import consent

        assert consent.granted(citizen_id) == []
    again = idp(provider, "consents", "revoke", "--national-id", national_id, "--client", client_id)
    assert again.returncode != 0 and "no consent" in again.stderr
    empty = idp(provider, "consents", "list", "--national-id", national_id, "--json")
    assert empty.returncode == 0 and json.loads(empty.stdout) == []
    assert any(e["client_id"] == client_id and e["details"].get("via") == "cli"
               for e in _audit(provider, "consent_withdrawn"))


# ---- through /authorize ------------------------------------------------------------------------

def test_trusted_clients_get_a_code_without_a_consent_page(provider):
    client_id, _, redirect = provider.add_client(name="Tax office", trusted=True, scope="openid profile phone")
    national_id, mobile = provider.add_citizen()
    result = provider.flow().login(client_id, redirect, national_id, mobile, scope="openid profile phone")
    assert result["code"] and result["iss"] == provider.url


def _login_to_consent(provider, browser, client_id, redirect, national_id, mobile, **extra):
    page = browser.start(client_id, redirect, **extra)
    assert 'name="national_id"' in page.text, page.text[:300]
    sent = len(provider.outbox.messages(mobile))
    page = browser.follow(browser.submit(page, {"national_id": national_id, "mobile": mobile}), redirect)
    code = provider.outbox.last_code(mobile, after=sent)
    return browser.follow(browser.submit(page, {"otp": code}), redirect)


def test_authorize_asks_consent_for_untrusted_clients(provider):
    client_id, secret, redirect = provider.add_client(name="Bank", scope="openid profile phone", trusted=False)
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()

    page = _login_to_consent(provider, browser, client_id, redirect, national_id, mobile, scope="openid profile")
    assert page.status_code == 200 and APPROVE in page.text, "an untrusted client asks first"
    result = redirect_params(browser.follow(browser.submit(page, {"decision": "approve"}), redirect), redirect)
    assert result["code"] and result["iss"] == provider.url
    token = browser.exchange(client_id, secret, redirect, result["code"])
    assert token.status_code == 200, token.text

    again = browser.start(client_id, redirect, scope="openid profile")
    assert again.is_redirect, "consent is remembered: single sign-on answers at once"
    assert redirect_params(again, redirect)["code"]

    more = browser.start(client_id, redirect, scope="openid profile phone", ui_locales="en")
    assert more.status_code == 200 and APPROVE in more.text, "a wider request asks again"
    assert more.text.count("(new)") == 1 and "Your mobile number" in more.text
    result = redirect_params(browser.follow(browser.submit(more, {"decision": "approve"}), redirect), redirect)
    assert result["code"]

    silent = browser.start(client_id, redirect, scope="openid profile phone national_id", prompt="none")
    assert redirect_params(silent, redirect)["code"], "national_id is not allowed for this client: nothing new"

    other = provider.flow()
    national_id2, mobile2 = provider.add_citizen()
    page = _login_to_consent(provider, other, client_id, redirect, national_id2, mobile2, state="deny-me")
    denied = redirect_params(other.follow(other.submit(page, {"decision": "deny"}), redirect), redirect)
    assert denied["error"] == "access_denied" and denied["iss"] == provider.url and denied["state"] == "deny-me"
    assert "code" not in denied
    with provider.app.app_context():
        from idp.protocol import consent

        assert consent.granted(_citizen_id(provider, national_id2)) == []


# ---- what the page says is what the service gets ---------------------------------------------

#: Per scope set: the page's list (Persian, English), then the userinfo claims the service gets
#: with it. The ID token carries no personal claim whatever the scopes (only sub and sid).
ID_FA, ID_EN = "شناسه‌ای از شما که فقط برای این سامانه ساخته می‌شود", "An identifier for you, made for this service only"
PROFILE_FA, PROFILE_EN = "نام، نام خانوادگی و تاریخ تولد شما", "Your given name, family name and date of birth"
WHAT_IS_SHARED = {
    "openid": ([ID_FA], [ID_EN], {"sub"}),
    "openid age": ([ID_FA, "اینکه ۱۸ سال یا بیشتر دارید یا نه (نه تاریخ تولدتان)"],
                   [ID_EN, "Whether you are 18 or older (not your date of birth)"], {"sub", "age_over_18"}),
    # profile gives the date of birth, so the age line does not promise to keep it back
    "openid profile age": ([ID_FA, PROFILE_FA, "اینکه ۱۸ سال یا بیشتر دارید یا نه"],
                           [ID_EN, PROFILE_EN, "Whether you are 18 or older"],
                           {"sub", "given_name", "family_name", "name", "birthdate", "locale", "age_over_18"}),
    "openid phone": ([ID_FA, "شماره‌ی همراه شما"], [ID_EN, "Your mobile number"],
                     {"sub", "phone_number", "phone_number_verified"}),
    "openid national_id": ([ID_FA, "کد ملی شما"], [ID_EN, "Your national ID"], {"sub", "national_id"}),
}
PERSONAL = {"given_name", "family_name", "name", "birthdate", "phone_number", "national_id", "age_over_18"}


def _listed(page) -> list[str]:
    """The items of the consent page's list, as text."""
    box = re.search(r'<ul class="claims"[^>]*>(.*?)</ul>', page.text, re.S).group(1)
    return [re.sub(r"<[^>]+>", "", item).strip() for item in re.findall(r"<li>(.*?)</li>", box, re.S)]


@pytest.mark.parametrize("scope", list(WHAT_IS_SHARED))
def test_the_consent_page_lists_exactly_what_the_service_receives(provider, scope):
    fa, en, claims = WHAT_IS_SHARED[scope]
    client_id, secret, redirect = provider.add_client(name="Bank", name_fa="بانک ملت", trusted=False,
                                                      scope="openid profile phone national_id age")
    _allow_national_id(provider, client_id)
    national_id, mobile = provider.add_citizen(birth_date="1990-05-01")
    browser = provider.flow()
    page = _login_to_consent(provider, browser, client_id, redirect, national_id, mobile, scope=scope)
    assert APPROVE in page.text and _listed(page) == fa
    assert "<h1>به <bdi>بانک ملت</bdi> اجازه می‌دهید اطلاعات شما را ببیند؟</h1>" in page.text
    english = browser.get(page.url + "&lang=en")
    assert _listed(english) == en
    assert "<h1>Allow <bdi>Bank</bdi> to see your information?</h1>" in english.text

    result = redirect_params(browser.follow(browser.submit(english, {"decision": "approve"}), redirect), redirect)
    token = browser.exchange(client_id, secret, redirect, result["code"]).json()
    info = requests.get(f"{provider.url}/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"},
                        timeout=10).json()
    assert set(info) == claims, info
    assert not PERSONAL & set(verify_id_token(provider.url, token["id_token"])["claims"])
    if "age" in scope:
        assert info["age_over_18"] is True
    if "national_id" in scope:
        assert info["national_id"] == national_id


def test_an_identifier_shared_by_public_subject_services_is_called_so(provider):
    client_id, _, _ = provider.add_client(name="Registry", scope="openid", trusted=False, subject_type="public")
    national_id, mobile = provider.add_citizen()
    browser, _ = _sign_in_at(provider, "/account/services", national_id, mobile)
    rid = _paused(provider, browser, client_id, "openid", ui_locales="en")
    assert _listed(browser.get(f"{provider.url}/consent?r={rid}")) == [
        "An identifier for you, the same one other services may receive"]


# ---- who is signed in, and "Not you?" ----------------------------------------------------------

def test_the_consent_page_says_who_is_signed_in_and_not_you_signs_in_someone_else(provider):
    from idp.citizens.national_id import mask_national_id
    from idp.platform.digits import persian_digits
    from idp.protocol import sessions

    client_id, secret, redirect = provider.add_client(name="Bank", scope="openid profile", trusted=False)
    first_id, first_mobile = provider.add_citizen()
    second_id, second_mobile = provider.add_citizen()
    browser = provider.flow()
    page = _login_to_consent(provider, browser, client_id, redirect, first_id, first_mobile, state="keep-me")
    rid = re.search(r"/consent\?r=([\w-]+)", page.url).group(1)
    masked = persian_digits(mask_national_id(first_id))
    assert re.search(r'<p class="signed-in"[^>]*>(.*?)</p>', page.text, re.S).group(1) == (
        f'شما با نام <bdi>آزمون شهروند</bdi> و کد ملی <bdi dir="ltr">{masked}</bdi> وارد شده‌اید.')
    assert first_id not in page.text and persian_digits(first_id) not in page.text
    # "Not you?" is a button of the page's last form: the first form is still the answer (DESIGN §5).
    assert re.search(r'<button type="submit" form="not-me-form" class="link" id="not-me">شما نیستید؟', page.text)
    assert re.search(r'<form[^>]*action="/consent\?r=', page.text).start() < page.text.index('id="not-me-form"')
    first_cookie = browser.http.cookies.get("idp_sso")

    csrf = form_fields(page.text)["csrf_token"]
    forged = browser.http.post(f"{provider.url}/consent/not-me?r={rid}", allow_redirects=False, timeout=10)
    assert forged.status_code == 400
    stranger = provider.flow()
    assert stranger.http.post(f"{provider.url}/consent/not-me?r={rid}", data={"csrf_token": csrf},
                              allow_redirects=False, timeout=10).status_code == 400

    out = browser.http.post(f"{provider.url}/consent/not-me?r={rid}", data={"csrf_token": csrf},
                            allow_redirects=False, timeout=10)
    assert out.status_code == 303 and out.headers["Location"] == f"/login?r={rid}", out.text[:300]
    assert "idp_sso=;" in out.headers.get("Set-Cookie", "").replace('""', "")
    with provider.app.app_context():
        from idp.platform.audit import latest
        from idp.platform.store import store

        assert sessions.Session.from_record(store.get_session(store.session_id(first_cookie))) is None
        assert latest(1, "logout")[0]["details"]["reason"] == "not_me"

    # The same request, from its first page: the other person signs in and answers for themselves.
    login = browser.get(f"{provider.url}{out.headers['Location']}")
    assert login.status_code == 200 and 'name="national_id"' in login.text and "Bank" in login.text
    sent = len(provider.outbox.messages(second_mobile))
    code_page = browser.follow(browser.submit(login, {"national_id": second_id, "mobile": second_mobile}), redirect)
    code = provider.outbox.last_code(second_mobile, after=sent)
    page = browser.follow(browser.submit(code_page, {"otp": code}), redirect)
    assert APPROVE in page.text and page.url.endswith(f"/consent?r={rid}")
    signed_in_as = re.search(r'<p class="signed-in"[^>]*>(.*?)</p>', page.text, re.S).group(1)
    assert f'<bdi dir="ltr">{persian_digits(mask_national_id(second_id))}</bdi>' in signed_in_as
    result = redirect_params(browser.follow(browser.submit(page, {"decision": "approve"}), redirect), redirect)
    assert result["state"] == "keep-me"
    token = browser.exchange(client_id, secret, redirect, result["code"]).json()
    info = requests.get(f"{provider.url}/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"},
                        timeout=10).json()
    with provider.app.app_context():
        from idp.citizens import directory
        from idp.protocol import subjects

        second = directory.profile(_citizen_id(provider, second_id))
        assert info["sub"] == subjects.subject_for(second, _client(provider, client_id))
        from idp.protocol import consent

        first_grants = consent.granted(_citizen_id(provider, first_id))
        second_grants = consent.granted(second.id)
    assert first_grants == [] and [g.client_id for g in second_grants] == [client_id]
