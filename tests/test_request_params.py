"""Authorization request parameters: prompt, max_age, acr_values, id_token_hint, login_hint,
ui_locales, and single-valued OIDC parameters."""
from __future__ import annotations

from .helpers import Clock, redirect_params, verify_id_token


def _logged_in(provider, **client_kw):
    client = provider.add_client(**client_kw)
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    result = browser.login(client[0], client[2], national_id, mobile)
    token = browser.exchange(client[0], client[1], client[2], result["code"]).json()
    return client, browser, (national_id, mobile), token


def test_prompt_none_without_session_is_login_required(provider):
    client_id, _, redirect = provider.add_client()
    browser = provider.flow()
    params = redirect_params(browser.get(browser.authorize_url(client_id, redirect, prompt="none", state="s1")),
                             redirect)
    assert params["error"] == "login_required" and params["state"] == "s1" and params["iss"] == provider.url


def test_prompt_none_with_session_answers_at_once(provider):
    client, browser, _, _ = _logged_in(provider)
    params = redirect_params(browser.get(browser.authorize_url(client[0], client[2], prompt="none")), client[2])
    assert params["code"]


def test_prompt_login_forces_a_new_login_and_a_new_auth_time(provider, monkeypatch):
    import idp.protocol.sessions

    clock = Clock(monkeypatch, idp.protocol.sessions)  # where a session's auth_time is read
    client, browser, (nid, mobile), first = _logged_in(provider)
    first_auth = verify_id_token(provider.url, first["id_token"])["claims"]["auth_time"]
    clock.advance(1.1)
    page = browser.start(client[0], client[2], prompt="login")
    assert page.status_code == 200 and 'name="national_id"' in page.text
    result = browser.login(client[0], client[2], nid, mobile, prompt="login")
    token = browser.exchange(client[0], client[1], client[2], result["code"]).json()
    assert verify_id_token(provider.url, token["id_token"])["claims"]["auth_time"] > first_auth


def test_max_age(provider, monkeypatch):
    import idp.protocol.authorize

    clock = Clock(monkeypatch, idp.protocol.authorize)  # where max_age is compared with the clock
    client, browser, _, _ = _logged_in(provider)
    assert browser.start(client[0], client[2], max_age="3600").is_redirect
    clock.advance(1.1)
    page = browser.start(client[0], client[2], max_age="0")
    assert page.status_code == 200 and 'name="national_id"' in page.text
    bad = redirect_params(browser.get(browser.authorize_url(client[0], client[2], max_age="soon")), client[2])
    assert bad["error"] == "invalid_request"


def test_acr_values_asking_for_the_app_needs_an_app_login(provider):
    client, browser, _, _ = _logged_in(provider)
    assert browser.start(client[0], client[2], acr_values="urn:idp:acr:sms").is_redirect
    page = browser.start(client[0], client[2], acr_values="urn:idp:acr:totp")
    assert page.status_code == 200 and 'name="national_id"' in page.text
    params = redirect_params(browser.get(browser.authorize_url(client[0], client[2], acr_values="urn:idp:acr:totp",
                                                               prompt="none")), client[2])
    assert params["error"] == "login_required"


def test_id_token_hint(provider):
    client, browser, _, token = _logged_in(provider)
    ok = browser.get(browser.authorize_url(client[0], client[2], prompt="none", id_token_hint=token["id_token"]))
    assert redirect_params(ok, client[2])["code"]
    # Someone else's hint: the agency expects another person.
    other_client, other_browser, _, other_token = _logged_in(provider)
    mismatch = browser.get(browser.authorize_url(client[0], client[2], prompt="none",
                                                 id_token_hint=other_token["id_token"]))
    assert redirect_params(mismatch, client[2])["error"] == "login_required"
    forged = token["id_token"][:-4] + ("AAAA" if not token["id_token"].endswith("AAAA") else "BBBB")
    bad = browser.get(browser.authorize_url(client[0], client[2], id_token_hint=forged))
    assert redirect_params(bad, client[2])["error"] == "invalid_request"
    access_as_hint = browser.get(browser.authorize_url(client[0], client[2], id_token_hint=token["access_token"]))
    assert redirect_params(access_as_hint, client[2])["error"] == "invalid_request"


def test_login_hint_prefills_the_national_id(provider):
    client_id, _, redirect = provider.add_client()
    national_id, _ = provider.add_citizen()
    page = provider.flow().start(client_id, redirect, login_hint=national_id)
    persian = national_id.translate(str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹"))
    assert f'value="{national_id}"' in page.text or f'value="{persian}"' in page.text
    page = provider.flow().start(client_id, redirect, login_hint="<script>")
    assert "<script>" not in page.text


def test_ui_locales_chooses_english(provider):
    client_id, _, redirect = provider.add_client()
    page = provider.flow().start(client_id, redirect, ui_locales="en-US fa")
    assert 'lang="en"' in page.text and 'dir="ltr"' in page.text
    page = provider.flow().start(client_id, redirect)
    assert 'lang="fa"' in page.text and 'dir="rtl"' in page.text


def test_duplicated_oidc_parameters_are_refused(provider):
    client_id, _, redirect = provider.add_client()
    browser = provider.flow()
    url = browser.authorize_url(client_id, redirect) + "&nonce=second&nonce=third"
    assert redirect_params(browser.get(url), redirect)["error"] == "invalid_request"
    url = browser.authorize_url(client_id, redirect, prompt="none") + "&prompt=login"
    assert redirect_params(browser.get(url), redirect)["error"] == "invalid_request"


def test_nonce_replay_is_refused(provider):
    client, browser, _, _ = _logged_in(provider)
    first = redirect_params(browser.get(browser.authorize_url(client[0], client[2], nonce="once-only")), client[2])
    assert first["code"]
    again = redirect_params(browser.get(browser.authorize_url(client[0], client[2], nonce="once-only")), client[2])
    assert again["error"] == "invalid_request"
