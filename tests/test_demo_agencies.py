"""The demo agency web app (clients/agency_web) against the real provider, through one browser.

Two agency apps run on their own loopback ports, registered as clients of the live provider.
One ``requests.Session`` plays the browser: cookies are shared by host (127.0.0.1), not by port,
as in a real browser. The citizen logs in at the first agency with national ID, mobile and the
SMS code, sees their verified claims there, then gets into the second agency with no new code
(single sign-on). The access token the first agency received is then accepted by the demo
agency API (clients/agency_api).
"""
from __future__ import annotations

import re
from html import unescape
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from clients.agency_api import create_app as create_agency_api
from clients.agency_web import views as agency_views

from .helpers import LiveAgency, form_action, form_fields, mobile_e164


@pytest.fixture(scope="module")
def agencies(provider):
    first = LiveAgency(provider, "report-card", "Ministry of Education: Student report card service")
    second = LiveAgency(provider, "tax", "National Tax Administration: Tax file service")
    yield first, second
    first.stop()
    second.stop()


@pytest.fixture
def token_responses(monkeypatch):
    """The token responses the agency apps received, keyed by client_id (a spy, not a stub)."""
    seen: dict[str, dict] = {}
    real = agency_views.verified_id_claims

    def spy(token):
        claims = real(token)
        seen[agency_views.settings().client_id] = dict(token)
        return claims

    monkeypatch.setattr(agency_views, "verified_id_claims", spy)
    return seen


def open_page(browser: requests.Session, url: str) -> requests.Response:
    """GET and follow every redirect, across ports, as a browser does."""
    response = browser.get(url, timeout=15)
    assert len(response.history) < 10
    return response


def submit(browser: requests.Session, page: requests.Response, data: dict[str, str]) -> requests.Response:
    """Post the page's form with its hidden inputs (csrf_token) and ``data``, following redirects."""
    fields = form_fields(page.text)
    assert "csrf_token" in fields, "the provider's form should carry a CSRF token"
    fields.update(data)
    return browser.post(form_action(page.text, page.url), data=fields, timeout=15)


def click_login(browser: requests.Session, home: requests.Response) -> requests.Response:
    """Follow the home page's "log in with the national identity provider" link."""
    match = re.search(r'<a class="button" href="([^"]*login[^"]*)"', home.text)
    assert match, f"no login button on {home.url}: {home.text[:500]}"
    return open_page(browser, urljoin(home.url, unescape(match.group(1))))


def visited(response: requests.Response) -> list[str]:
    """Every URL of the redirect chain that led to ``response``, and its own."""
    return [r.url for r in response.history] + [response.url]


def claim_row(page: str, claim: str) -> tuple[str, str]:
    """The (ID token, userinfo) cells of a claim's row in the verified-claims table."""
    match = re.search(rf"<th>{re.escape(claim)}</th>\s*<td>(.*?)</td>\s*<td>(.*?)</td>", page, re.S)
    assert match, f"no row for {claim} in the claims table"
    return unescape(match.group(1).strip()), unescape(match.group(2).strip())


def assert_logged_in(page: requests.Response, agency: LiveAgency, birth_date: str) -> str:
    """The agency's home page with the citizen's verified claims; returns the sub shown."""
    assert page.status_code == 200, page.text[:500]
    assert page.url == agency.url + "/", visited(page)
    assert "ورود با درگاه ملی" not in page.text, "still the logged-out page"
    assert "آزمون شهروند، خوش آمدید" in page.text
    # Personal claims come from userinfo; the ID token carries only sub and sid (OIDC Core §5.4).
    assert claim_row(page.text, "given_name") == ("—", "آزمون")
    assert claim_row(page.text, "family_name") == ("—", "شهروند")
    assert claim_row(page.text, "birthdate") == ("—", birth_date)
    assert claim_row(page.text, "acr")[0] == "urn:idp:acr:sms"
    assert "sms" in claim_row(page.text, "amr")[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", claim_row(page.text, "auth_time")[0])
    sub_id, sub_info = claim_row(page.text, "sub")
    assert sub_id and sub_id != "—" and sub_id == sub_info
    return sub_id


def test_login_at_one_agency_then_single_sign_on_into_the_other(provider, agencies, token_responses):
    first, second = agencies
    national_id, mobile = provider.add_citizen(birth_date="1984-06-15")
    to = mobile_e164(mobile)
    browser = requests.Session()

    # Agency 1: logged out, then its login button leads to the provider's first form.
    home = open_page(browser, first.url + "/")
    assert home.status_code == 200 and "ورود با درگاه ملی" in home.text
    page = click_login(browser, home)
    assert page.status_code == 200, page.text[:500]
    assert page.url.startswith(provider.url + "/"), visited(page)
    assert any(u.startswith(provider.url + "/authorize?") for u in visited(page))
    assert 'name="national_id"' in page.text and 'name="mobile"' in page.text

    page = submit(browser, page, {"national_id": national_id, "mobile": "0" + to[3:]})
    assert page.status_code == 200 and 'name="otp"' in page.text, page.text[:500]
    provider.outbox.last_code(to)  # waits for the sender thread
    sent = provider.outbox.messages(to)
    assert len(sent) == 1

    page = submit(browser, page, {"otp": provider.outbox.last_code(to)})
    chain = visited(page)
    assert any(u.startswith(first.url + "/callback?") for u in chain), chain
    sub_first = assert_logged_in(page, first, "1984-06-15")
    assert first.client_id in token_responses

    # Reloading keeps the agency's own session.
    assert_logged_in(open_page(browser, first.url + "/"), first, "1984-06-15")

    # Agency 2: the provider's SSO session answers at once; no form, no new SMS.
    home = open_page(browser, second.url + "/")
    assert home.status_code == 200 and "ورود با درگاه ملی" in home.text, "agency 2 must start logged out"
    page = click_login(browser, home)
    chain = visited(page)
    at_provider = [urlsplit(u).path for u in chain if u.startswith(provider.url + "/")]
    assert at_provider == ["/authorize"], f"SSO should answer /authorize at once, not show a login page: {chain}"
    assert any(u.startswith(second.url + "/callback?") for u in chain), chain
    sub_second = assert_logged_in(page, second, "1984-06-15")
    provider.outbox.settle()
    assert len(provider.outbox.messages(to)) == len(sent), "single sign-on must not send another code"
    assert second.client_id in token_responses
    # Both agencies share the host 127.0.0.1, hence one pairwise sector and one sub.
    assert sub_second == sub_first

    # Agency 1 is still logged in: agency 2's cookie did not overwrite it.
    assert_logged_in(open_page(browser, first.url + "/"), first, "1984-06-15")

    # The access token agency 1 received is accepted by the agency API.
    access_token = token_responses[first.client_id]["access_token"]
    for env in ({"AGENCY_ISSUER": provider.url, "AGENCY_API_AUDIENCE": first.client_id},):
        api = create_agency_api(env).test_client()
        me = api.get("/api/me", headers={"Authorization": f"Bearer {access_token}"})
        assert me.status_code == 200, (me.status_code, me.headers.get("WWW-Authenticate"), me.get_data(True))
        body = me.get_json()
        assert body["sub"] == sub_first and body["client_id"] == first.client_id
        assert body["acr"] == "urn:idp:acr:sms" and "sms" in body["amr"]
        assert "openid" in body["scope"].split()
    # ...but not by an API that expects another audience, nor with the ID token in its place.
    api = create_agency_api({"AGENCY_ISSUER": provider.url, "AGENCY_API_AUDIENCE": second.client_id}).test_client()
    assert api.get("/api/me", headers={"Authorization": f"Bearer {access_token}"}).status_code == 401
    id_token = token_responses[first.client_id]["id_token"]
    api = create_agency_api({"AGENCY_ISSUER": provider.url, "AGENCY_API_AUDIENCE": first.client_id}).test_client()
    assert api.get("/api/me", headers={"Authorization": f"Bearer {id_token}"}).status_code == 401
    # ...and an API that names no audience does not start (it would take any agency's token)
    with pytest.raises(ValueError, match="AGENCY_API_AUDIENCE is required"):
        create_agency_api({"AGENCY_ISSUER": provider.url})


def test_an_agency_with_a_stale_secret_shows_a_plain_page_after_a_correct_code(provider, caplog):
    """The agency's secret no longer matches (rotated, or an old demo app still running): the
    provider refuses the code exchange with invalid_client, and the citizen, who typed a correct
    code, sees a plain "try again" page, not the OAuth error; the agency's log says why."""
    stale = LiveAgency(provider, "tax", "Tax file with a stale secret", secret="not-the-registered-secret")
    try:
        national_id, mobile = provider.add_citizen()
        to = mobile_e164(mobile)
        browser = requests.Session()
        page = click_login(browser, open_page(browser, stale.url + "/"))
        page = submit(browser, page, {"national_id": national_id, "mobile": "0" + to[3:]})
        assert 'name="otp"' in page.text, page.text[:500]
        page = submit(browser, page, {"otp": provider.outbox.last_code(to)})
    finally:
        stale.stop()
    assert any(u.startswith(stale.url + "/callback?code=") for u in visited(page)), visited(page)
    assert page.status_code == 400
    assert "The sign-in could not be completed. Please try again." in page.text and "ورود کامل نشد" in page.text
    assert 'href="/"' in page.text  # the way back to the agency's login button
    for raw in ("invalid_client", "methods", "client_secret", "Traceback"):
        assert raw not in page.text, raw
    assert "invalid_client" in caplog.text


def test_the_demo_agencies_are_registered_under_the_names_their_pages_use():
    """The provider's pages (consent, errors, services) name an agency as it names itself."""
    from clients.agency_web.agencies import AGENCIES
    from idp.cli.demo import DEMO_AGENCIES

    for _client_id, name, name_fa, kind, _host, _port in DEMO_AGENCIES:
        agency = AGENCIES[kind]
        assert name == f"{agency.name_en}: {agency.service_en}"
        assert name_fa == f"{agency.name_fa}: {agency.service_fa}"
