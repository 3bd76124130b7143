"""Bad input at the login and protocol endpoints gets a clear, standard answer, never a 500
and never a redirect to an unvalidated URI."""
from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import requests

from idp.citizens.national_id import make_national_id

from .helpers import identify_page, login_url, pkce_pair, redirect_params, shows_login


def test_wrong_check_digit_is_refused_on_the_form(provider):
    client_id, _, redirect = provider.add_client()
    national_id, mobile = provider.add_citizen()
    wrong = national_id[:9] + str((int(national_id[9]) + 1) % 10)
    browser = provider.flow()
    page = identify_page(browser, client_id, redirect)
    answer = browser.submit(page, {"national_id": wrong, "mobile": mobile})
    assert answer.status_code == 400
    assert 'id="national_id-error"' in answer.text and 'aria-invalid="true"' in answer.text
    assert provider.outbox.messages(mobile) == []


def test_persian_and_arabic_indic_digits_are_accepted(provider):
    client_id, secret, redirect = provider.add_client()
    national_id, mobile = provider.add_citizen()
    persian = national_id.translate(str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹"))
    arabic_mobile = ("0" + mobile[3:]).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    browser = provider.flow()
    result = browser.login(client_id, redirect, persian, arabic_mobile)
    assert browser.exchange(client_id, secret, redirect, result["code"]).status_code == 200


def test_every_mobile_form_is_normalized(provider):
    client_id, _, redirect = provider.add_client()
    national_id, mobile = provider.add_citizen()
    local = mobile[3:]
    for typed in ("0" + local, local, "+98" + local, "0098" + local):
        browser = provider.flow()
        page = identify_page(browser, client_id, redirect)
        before = len(provider.outbox.messages(mobile))
        answer = browser.submit(page, {"national_id": national_id, "mobile": typed})
        assert answer.status_code == 303, typed
        provider.outbox.last_code(mobile, after=before)


def test_unknown_pair_looks_the_same_and_sends_nothing(provider):
    client_id, _, redirect = provider.add_client()
    national_id, mobile = provider.add_citizen()
    other_mobile = "+98935" + mobile[6:]
    stranger = make_national_id("987654321")
    pages = []
    for nid, mob in ((national_id, mobile), (national_id, other_mobile), (stranger, mobile)):
        browser = provider.flow()
        page = identify_page(browser, client_id, redirect)
        answer = browser.submit(page, {"national_id": nid, "mobile": mob})
        assert answer.status_code == 303
        code_page = browser.follow(answer, redirect)
        pages.append(code_page)
    provider.outbox.settle()
    assert len(provider.outbox.messages(mobile)) == 1
    assert provider.outbox.messages(other_mobile) == []
    # The code pages differ only by the request-specific tokens, not by what they say.
    def strip(html: str) -> str:
        html = re.sub(r"[۰-۹0-9]{4}\*\*\*[۰-۹0-9]{4}", "MOBILE", html)
        # countdowns read the clock: the three pages may be a second apart
        html = re.sub(r'data-seconds="\d+"([^>]*)>[۰-۹0-9]+<', r'data-seconds="N"\1>N<', html)
        return "".join(line for line in html.splitlines() if "csrf_token" not in line and "?r=" not in line)

    assert strip(pages[0].text) == strip(pages[1].text) == strip(pages[2].text)


def test_unknown_client_gets_a_page_not_a_redirect(provider):
    verifier, challenge = pkce_pair()
    r = requests.get(f"{provider.url}/authorize", params={
        "response_type": "code", "client_id": "no-such-client", "redirect_uri": "https://evil.example/cb",
        "scope": "openid", "code_challenge": challenge, "code_challenge_method": "S256"},
        allow_redirects=False, timeout=10)
    assert r.status_code == 400 and "Location" not in r.headers
    assert "invalid_client" in r.text and "text/html" in r.headers["Content-Type"]


def test_unregistered_redirect_uri_is_never_followed(provider):
    client_id, _, redirect = provider.add_client()
    for uri in (redirect + "/extra", redirect.replace("127.0.0.1", "localhost"), "https://evil.example/cb",
                redirect + "?x=1", "javascript:alert(1)", "https://ex\u0430mple.com/ä\"\\"):
        browser = provider.flow()
        r = browser.get(browser.authorize_url(client_id, uri))
        assert r.status_code == 400, uri
        assert "Location" not in r.headers, uri


def test_missing_pkce_is_refused_back_to_the_client(provider):
    client_id, _, redirect = provider.add_client()
    browser = provider.flow()
    r = browser.get(browser.authorize_url(client_id, redirect, code_challenge=None, code_challenge_method=None))
    params = redirect_params(r, redirect)
    assert params["error"] == "invalid_request" and params["iss"] == provider.url
    assert "code" not in params


def test_plain_pkce_is_refused(provider):
    client_id, _, redirect = provider.add_client()
    browser = provider.flow()
    verifier = "x" * 50
    r = browser.get(browser.authorize_url(client_id, redirect, code_challenge=verifier,
                                          code_challenge_method="plain"))
    assert redirect_params(r, redirect)["error"] == "invalid_request"
    r = browser.get(browser.authorize_url(client_id, redirect, code_challenge=verifier, code_challenge_method=None))
    assert redirect_params(r, redirect)["error"] == "invalid_request"


def test_wrong_verifier_and_missing_verifier_are_refused(provider):
    client_id, secret, redirect = provider.add_client()
    national_id, mobile = provider.add_citizen()
    for verifier in ("A" * 43, ""):
        browser = provider.flow()
        result = browser.login(client_id, redirect, national_id, mobile)
        data = {"grant_type": "authorization_code", "code": result["code"], "redirect_uri": redirect}
        if verifier:
            data["code_verifier"] = verifier
        r = requests.post(f"{provider.url}/token", data=data, auth=(client_id, secret), timeout=10)
        assert r.status_code == 400 and r.json()["error"] in ("invalid_grant", "invalid_request"), r.text


def test_five_wrong_codes_lock_the_challenge(provider):
    client_id, _, redirect = provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    page = identify_page(browser, client_id, redirect)
    code_page = browser.follow(browser.submit(page, {"national_id": national_id, "mobile": mobile}), redirect)
    right = provider.outbox.last_code(mobile)
    wrong = f"{(int(right) + 1) % 10**6:06d}"
    answers = []
    for _ in range(5):
        answer = browser.submit(code_page, {"otp": wrong})
        answers.append(answer.status_code)
        if answer.status_code == 400:
            code_page = answer
    assert answers[:4] == [400] * 4 and answers[4] == 429
    # The right code no longer works: the challenge is over.
    late = browser.submit(code_page, {"otp": right})
    assert late.status_code == 400 and not late.is_redirect, late.status_code  # locked: the challenge is gone


def test_replayed_code_is_refused_and_revokes_its_token(provider):
    client_id, secret, redirect = provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    result = browser.login(client_id, redirect, national_id, mobile)
    first = browser.exchange(client_id, secret, redirect, result["code"])
    assert first.status_code == 200
    access = first.json()["access_token"]
    replay = browser.exchange(client_id, secret, redirect, result["code"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    info = requests.get(f"{provider.url}/userinfo", headers={"Authorization": f"Bearer {access}"}, timeout=10)
    assert info.status_code == 401 and "invalid_token" in info.headers["WWW-Authenticate"]


def test_code_of_one_client_is_refused_to_another(provider):
    a_id, a_secret, a_redirect = provider.add_client()
    b_id, b_secret, _ = provider.add_client(redirect_uri=a_redirect.replace("/cb", "/b/cb"))
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    result = browser.login(a_id, a_redirect, national_id, mobile)
    r = browser.exchange(b_id, b_secret, a_redirect, result["code"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_token_endpoint_errors_are_rfc6749_json(provider):
    client_id, secret, redirect = provider.add_client()
    cases = [
        ({"grant_type": "password", "username": "x", "password": "y"}, (client_id, secret), "unsupported_grant_type"),
        ({"grant_type": "authorization_code", "code": "nope", "redirect_uri": redirect, "code_verifier": "A" * 43},
         (client_id, "wrong-secret"), "invalid_client"),
        ({"grant_type": "authorization_code", "code": "nope", "redirect_uri": redirect, "code_verifier": "A" * 43},
         (client_id, secret), "invalid_grant"),
        ({"grant_type": "authorization_code", "code": "ä\"\\" * 30, "redirect_uri": redirect,
          "code_verifier": "A" * 43}, (client_id, secret), "invalid_grant"),
    ]
    for data, auth, error in cases:
        r = requests.post(f"{provider.url}/token", data=data, auth=auth, timeout=10)
        # RFC 6749 §5.2: 401 for a client that failed to authenticate (Basic is accepted), else 400
        assert r.status_code == (401 if error == "invalid_client" else 400), (error, r.status_code, r.text)
        assert r.json()["error"] == error
        assert r.headers["Cache-Control"] == "no-store"


def test_login_link_in_another_browser_is_refused(provider):
    client_id, _, redirect = provider.add_client()
    browser = provider.flow()
    page = identify_page(browser, client_id, redirect)
    other = provider.flow()
    r = other.get(login_url(page))
    assert r.status_code == 400 and 'name="national_id"' not in r.text


def test_userinfo_without_or_with_bad_token(provider):
    r = requests.get(f"{provider.url}/userinfo", timeout=10)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    r = requests.get(f"{provider.url}/userinfo", headers={"Authorization": "Bearer abc.def.ghi"}, timeout=10)
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]


def test_forms_need_the_csrf_token(provider):
    client_id, _, redirect = provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    page = identify_page(browser, client_id, redirect)
    r = browser.http.post(login_url(page), data={"national_id": national_id, "mobile": mobile}, allow_redirects=False,
                          timeout=10)
    assert r.status_code == 400 and provider.outbox.messages(mobile) == []


def test_security_headers_on_pages(provider):
    r = requests.get(f"{provider.url}/", timeout=10)
    csp = r.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp and "script-src 'self'" in csp
    assert r.headers["X-Frame-Options"] == "DENY"


def test_hostile_authorize_parameters_never_500(provider):
    """Each hostile parameter gets its own standard answer: an error redirect to the registered
    URI (with the state echoed) when the client can be told, an error page when the parameter
    itself cannot be trusted, and the login otherwise."""
    client_id, _, redirect = provider.add_client()
    browser = provider.flow()
    for extra in ({"response_type": "token"}, {"response_type": "ä\"\\"}):
        url = browser.authorize_url(client_id, redirect, **extra)
        r = browser.get(url)
        params = redirect_params(r, redirect)
        assert r.status_code == 303, (extra, r.status_code)
        assert params["error"] == "unsupported_response_type", (extra, params)
        assert params["state"] == parse_qs(urlsplit(url).query)["state"][0]
    for extra in ({"state": "\x00"}, {"scope": "x" * 5000}):
        r = browser.get(browser.authorize_url(client_id, redirect, **extra))
        assert r.status_code == 400 and not r.is_redirect, (extra, r.status_code, r.headers.get("Location"))
        assert r.headers["Content-Type"].startswith("text/html"), (extra, r.headers["Content-Type"])
    r = browser.get(browser.authorize_url(client_id, redirect, nonce="ü"))
    assert shows_login(r), (r.status_code, r.headers.get("Location"))
