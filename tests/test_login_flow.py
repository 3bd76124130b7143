"""The whole path through HTTP: authorize -> login -> OTP from the outbox -> code -> token ->
ID token verified against the JWKS -> userinfo; then single sign-on into a second agency."""
from __future__ import annotations

import time

import requests

from .helpers import redirect_params, verify_id_token


def test_discovery_names_what_is_implemented(provider):
    doc = requests.get(f"{provider.url}/.well-known/openid-configuration", timeout=10).json()
    assert doc["issuer"] == provider.url
    assert doc["response_types_supported"] == ["code"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["authorization_response_iss_parameter_supported"] is True
    assert {"client_secret_basic", "client_secret_post", "none"} <= set(doc["token_endpoint_auth_methods_supported"])
    jwks = requests.get(doc["jwks_uri"], timeout=10).json()
    assert {k["alg"] for k in jwks["keys"]} == {"RS256", "ES256"}
    assert all(k["kid"] and "d" not in k for k in jwks["keys"])


def test_published_documents_answer_alike_on_both_paths(provider):
    """A plain GET of the discovery document and the JWKS is answered before Flask
    (discovery.PublishedDocuments); with a query string the views answer. Same bytes, same
    headers; a HEAD (Flask) has the GET's headers without a body."""
    for path in ("/.well-known/openid-configuration", "/jwks"):
        fast = requests.get(provider.url + path, timeout=10)
        view = requests.get(provider.url + path + "?via=flask", timeout=10)
        head = requests.head(provider.url + path, timeout=10)
        assert fast.status_code == view.status_code == head.status_code == 200, path
        assert fast.content == view.content and fast.json(), path
        keep = lambda r: {k: v for k, v in r.headers.items() if k not in ("Date", "Server", "Connection")}  # noqa: E731
        assert keep(fast) == keep(view) == keep(head), path
        assert fast.headers["Cache-Control"].startswith("public") and fast.headers["X-Frame-Options"] == "DENY"
        assert head.content == b""


def test_full_login_then_tokens_then_userinfo(provider):
    client_id, secret, redirect = provider.add_client(name="Report cards", scope="openid profile phone")
    national_id, mobile = provider.add_citizen(birth_date="1985-03-21")
    browser = provider.flow()
    started = int(time.time())
    result = browser.login(client_id, redirect, national_id, "0" + mobile[3:], scope="openid profile phone", nonce="n-0S6_WzA2Mj",
                           state="af0ifjsldkj")
    assert result["state"] == "af0ifjsldkj"
    assert result["iss"] == provider.url  # RFC 9207

    token = browser.exchange(client_id, secret, redirect, result["code"])
    assert token.status_code == 200, token.text
    assert token.headers["Cache-Control"] == "no-store"
    body = token.json()
    assert body["token_type"].lower() == "bearer" and body["expires_in"] > 0

    id_token = verify_id_token(provider.url, body["id_token"])
    claims, header = id_token["claims"], id_token["header"]
    assert header["alg"] == "RS256" and header["kid"]
    assert claims["iss"] == provider.url
    assert claims["aud"] == [client_id] or claims["aud"] == client_id
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["exp"] > time.time() and abs(claims["iat"] - time.time()) < 60
    assert started - 2 <= claims["auth_time"] <= time.time() + 2
    assert claims["acr"] == "urn:idp:acr:sms" and "sms" in claims["amr"]
    assert national_id not in body["id_token"] and claims["sub"] != national_id
    assert not {"given_name", "family_name", "birthdate", "phone_number"} & set(claims), \
        "personal claims come from userinfo, not the ID token that travels in logout URLs"

    access = verify_id_token(provider.url, body["access_token"])  # same JWKS
    assert access["header"]["typ"] == "at+jwt"
    assert access["claims"]["sub"] == claims["sub"] and access["claims"]["client_id"] == client_id

    info = requests.get(f"{provider.url}/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"},
                        timeout=10)
    assert info.status_code == 200, info.text
    data = info.json()
    assert data["sub"] == claims["sub"]
    assert data["given_name"] == "آزمون" and data["birthdate"] == "1985-03-21"
    assert data["phone_number"] == mobile


def test_second_agency_gets_in_without_a_code(provider):
    first_id, first_secret, first_redirect = provider.add_client(name="Report cards")
    second_id, second_secret, second_redirect = provider.add_client(
        name="Tax", redirect_uri="http://localhost:9/tax/cb")
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    browser.login(first_id, first_redirect, national_id, mobile)
    sent = len(provider.outbox.messages(mobile))

    landing = browser.start(second_id, second_redirect)
    assert landing.is_redirect, "a live session should answer at once, without a login page"
    second = redirect_params(landing, second_redirect)
    provider.outbox.settle()
    assert len(provider.outbox.messages(mobile)) == sent, "no new code for single sign-on"
    token = browser.exchange(second_id, second_secret, second_redirect, second["code"])
    assert token.status_code == 200, token.text
    sub_second = verify_id_token(provider.url, token.json()["id_token"])["claims"]["sub"]
    # Pairwise subjects: the two agencies (different hosts) see different `sub`s for one person.
    browser2 = provider.flow()
    again = browser2.login(first_id, first_redirect, national_id, mobile)
    sub_first = verify_id_token(provider.url, browser2.exchange(first_id, first_secret, first_redirect,
                                                                again["code"]).json()["id_token"])["claims"]["sub"]
    assert sub_first != sub_second


def test_session_cookie_is_rotated_at_login_and_http_only(provider):
    client_id, secret, redirect = provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    browser.http.cookies.set("idp_sso", "attacker-chosen-session-id", domain="127.0.0.1", path="/")
    browser.login(client_id, redirect, national_id, mobile)
    sso = [c for c in browser.http.cookies if c.name == "idp_sso"]
    assert sso and all(c.value != "attacker-chosen-session-id" for c in sso)
    assert any(c.has_nonstandard_attr("HttpOnly") for c in sso)


def test_tokens_never_carry_the_session_cookie(provider):
    """The `sid` agencies see is a public id: holding it must not let anyone set the SSO cookie."""
    client_id, secret, redirect = provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    result = browser.login(client_id, redirect, national_id, mobile)
    body = browser.exchange(client_id, secret, redirect, result["code"]).json()
    cookie = browser.http.cookies.get("idp_sso")
    id_claims = verify_id_token(provider.url, body["id_token"])["claims"]
    at_claims = verify_id_token(provider.url, body["access_token"])["claims"]
    assert id_claims["sid"] and id_claims["sid"] == at_claims["sid"]
    assert cookie not in (id_claims["sid"], at_claims["sid"]) and cookie not in body["id_token"]
    thief = provider.flow()
    thief.http.cookies.set("idp_sso", id_claims["sid"], domain="127.0.0.1", path="/")
    page = thief.start(client_id, redirect)
    assert page.status_code == 200 and 'name="national_id"' in page.text


def test_public_client_uses_pkce_without_secret(provider):
    client_id, secret, redirect = provider.add_client(public=True)
    assert secret is None
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    result = browser.login(client_id, redirect, national_id, mobile)
    token = browser.exchange(client_id, None, redirect, result["code"])
    assert token.status_code == 200, token.text
    assert "id_token" in token.json()


def test_client_secret_post_is_accepted(provider):
    client_id, secret, redirect = provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    result = browser.login(client_id, redirect, national_id, mobile)
    token = requests.post(f"{provider.url}/token", data={
        "grant_type": "authorization_code", "code": result["code"], "redirect_uri": redirect,
        "code_verifier": browser.last_verifier, "client_id": client_id, "client_secret": secret}, timeout=10)
    assert token.status_code == 200, token.text


def test_empty_fields_are_asked_for_not_called_wrong(provider):
    """An empty field gets "please enter ...", a wrong one "not valid"; the form alone decides, so
    a registered national ID and an unknown one get the same page."""
    import re

    from idp.citizens.national_id import make_national_id

    from .helpers import form_fields

    client_id, _, redirect = provider.add_client()
    national_id, mobile = provider.add_citizen()
    unknown = make_national_id("987654321")

    def submit(nid: str, mob: str, lang: str = "fa") -> requests.Response:
        browser = provider.flow()
        page = browser.start(client_id, redirect, ui_locales=lang)
        return browser.submit(page, {"national_id": nid, "mobile": mob})

    def errors(r) -> list[str]:
        return re.findall(r'<p class="error" id="[\w-]+" role="alert">([^<]*)</p>', r.text)

    both = submit("", "  ")
    assert both.status_code == 400
    assert errors(both) == ["لطفاً کد ملی خود را وارد کنید.", "لطفاً شماره‌ی همراه خود را وارد کنید."]
    assert errors(submit("", "", "en")) == ["Please enter your national ID.", "Please enter your mobile number."]
    assert errors(submit("12", "", "en")) == ["This national ID is not valid. Check its 10 digits.",
                                               "Please enter your mobile number."]
    assert errors(submit("", "12", "en")) == ["Please enter your national ID.",
                                              "This mobile number is not valid. Write it like 09121234567."]

    def same(r) -> str:
        return re.sub(r"r=[\w-]+|value=\"[^\"]*\"", "", r.text)

    registered, stranger = submit(national_id, ""), submit(unknown, "")
    assert registered.status_code == stranger.status_code == 400
    assert errors(registered) == ["لطفاً شماره‌ی همراه خود را وارد کنید."]
    assert same(registered) == same(stranger), "the same page whether or not the national ID is registered"
    assert same(submit("", mobile)) == same(submit("", "09120000000"))

    # The code: empty is asked for; the app's page too.
    for kind in ({}, {"method": "totp"}):
        browser = provider.flow()
        page = browser.start(client_id, redirect, ui_locales="en")
        page = browser.follow(browser.submit(page, {"national_id": national_id, "mobile": mobile, **kind}), redirect)
        assert 'name="otp"' in page.text
        empty = browser.submit(page, {"otp": " "})
        assert empty.status_code == 400 and errors(empty) == ["Please enter the 6-digit code."], kind
        assert errors(browser.submit(page, {"otp": "12"})) == ["The code has 6 digits."]
        assert form_fields(empty.text)["csrf_token"]
