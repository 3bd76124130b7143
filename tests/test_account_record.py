"""The citizen's own record (/account/record), over real HTTP: the latest sign-ins (newest first,
when in the configured time zone, which agency, SMS or app, single sign-on or a new login), the
connected services with withdraw, the token exchanges between agencies made with the citizen's
tokens, the live sessions with this device marked and "sign out on all devices"; a note that the
provider keeps no place; and nothing of any other citizen."""
from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from html.parser import HTMLParser

import jdatetime
import requests

from idp.platform.digits import persian_digits

from .helpers import form_fields
from .test_consent import _citizen_id, _sign_in_at
from .test_token_exchange import agency, delegate, exchange
from .test_token_exchange import login as login_at_agency

RECORD = "/account/record"


def _section(page_text: str, heading_id: str) -> str:
    """The HTML of one section of the record page, by the id of its heading."""
    found = re.search(rf'<section aria-labelledby="{heading_id}"[^>]*>(.*?)</section>', page_text, re.S)
    assert found, f"no section {heading_id}"
    return found.group(1)


class _ListItems(HTMLParser):
    """The text of each top-level entry of the list ``<ol id=list_id>`` (nested lists included)."""

    def __init__(self, list_id: str):
        super().__init__()
        self.list_id, self.depth, self.items = list_id, 0, []

    def handle_starttag(self, tag, attrs):
        if self.depth == 0 and tag == "ol" and dict(attrs).get("id") == self.list_id:
            self.depth = 1
        elif self.depth:
            if tag in ("ol", "ul", "li"):
                self.depth += 1
            if tag == "li" and self.depth == 2:
                self.items.append("")

    def handle_endtag(self, tag):
        if self.depth and tag in ("ol", "ul", "li"):
            self.depth -= 1

    def handle_data(self, data):
        if self.depth >= 2:
            self.items[-1] += " " + data


def _items(section: str, list_id: str) -> list[str]:
    """The entries of a list in a section, as text (tags dropped, whitespace folded)."""
    assert f'id="{list_id}"' in section, f"no list {list_id}"
    parser = _ListItems(list_id)
    parser.feed(section)
    return [" ".join(item.split()) for item in parser.items]


def _times(section: str) -> list[dt.datetime]:
    return [dt.datetime.fromisoformat(v) for v in re.findall(r'<time datetime="([^"]+)">', section)]


def _today_jalali() -> str:
    today = dt.datetime.now(zoneinfo.ZoneInfo("Asia/Tehran")).date()
    j = jdatetime.date.fromgregorian(date=today)
    return persian_digits(f"{j.day} {jdatetime.date.j_months_fa[j.month - 1]} {j.year}")


def test_the_record_needs_the_account_login(provider):
    r = requests.get(f"{provider.url}{RECORD}", allow_redirects=False, timeout=10)
    assert r.status_code == 303 and "/login?r=" in r.headers["Location"]
    national_id, mobile = provider.add_citizen()
    browser, page = _sign_in_at(provider, RECORD, national_id, mobile)
    assert page.status_code == 200 and '<h1>سوابق من</h1>' in page.text
    account = browser.get(f"{provider.url}/account")
    assert f'href="{RECORD}"' in account.text, "the account page links to the record"


def test_sign_ins_are_listed_newest_first_with_agency_time_and_method(provider):
    tax = provider.add_client(name="Tax office", name_fa="سازمان امور مالیاتی")
    health = provider.add_client(name="Health insurance", name_fa="بیمه‌ی سلامت")
    national_id, mobile = provider.add_citizen()
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    provider.flow().login(tax[0], tax[2], national_id, mobile)
    browser = provider.flow()
    browser.login(health[0], health[2], national_id, mobile)
    # The account page in the same browser: the session is enough, no new sign-in.
    page = browser.get(f"{provider.url}{RECORD}")
    assert page.status_code == 200, page.text[:300]

    section = _section(page.text, "sign-ins-heading")
    items = _items(section, "sign-ins")
    assert len(items) == 2, items
    assert items[0].startswith("بیمه‌ی سلامت") and "کد پیامکی" in items[0] and "ورود تازه" in items[0], items[0]
    assert items[1].startswith("سازمان امور مالیاتی") and "کد پیامکی" in items[1] and "ورود تازه" in items[1]
    # When: the configured time zone (Tehran), the Jalali date and the time in Persian digits.
    times = _times(section)
    assert times == sorted(times, reverse=True), "newest first"
    for at in times:
        assert at.utcoffset() == dt.timedelta(hours=3, minutes=30), at
        assert before - dt.timedelta(minutes=1) <= at <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=1)
    assert _today_jalali() in section
    assert persian_digits(times[0].strftime("%H:%M")) in items[0] and not re.search(r"[0-9]", items[0])
    # Place: said plainly that none is kept, rather than guessed.
    assert "درگاه ملی نمی‌داند شما کجا بوده‌اید" in section

    english = browser.get(f"{provider.url}{RECORD}?lang=en")
    items = _items(_section(english.text, "sign-ins-heading"), "sign-ins")
    assert items[0].startswith("Health insurance") and "SMS code" in items[0] and "new login" in items[0]
    assert items[1].startswith("Tax office")
    day = times[0].date()  # the Tehran date: the <time> carries the zone's offset
    assert f"{day.day} {day.strftime('%B')} {day.year}" in items[0], items[0]

    # A single sign-on at an agency is listed as such, above the rest.
    again = browser.start(tax[0], tax[2])
    assert again.is_redirect and again.headers["Location"].startswith(tax[2]), "signed in already"
    items = _items(_section(browser.get(f"{provider.url}{RECORD}?lang=fa").text, "sign-ins-heading"), "sign-ins")
    assert len(items) == 3 and items[0].startswith("سازمان امور مالیاتی") and "ورود یکپارچه" in items[0], items
    assert "does not know where you were" in english.text and "IP address" in english.text


def test_connected_services_are_listed_and_withdrawn_from_the_record(provider):
    bank = provider.add_client(name="Bank", name_fa="بانک ملت", scope="openid profile phone", trusted=False)
    national_id, mobile = provider.add_citizen()
    with provider.app.app_context():
        from idp.protocol import consent

        consent.grant(_citizen_id(provider, national_id), bank[0], "openid phone")
    browser, page = _sign_in_at(provider, RECORD, national_id, mobile)
    section = _section(page.text, "services-heading")
    assert "<h3><bdi>بانک ملت</bdi></h3>" in section and "شماره‌ی همراه شما" in section
    assert 'name="back" value="record"' in section
    english = browser.get(f"{provider.url}{RECORD}?lang=en")
    assert "<h3><bdi>Bank</bdi></h3>" in english.text and "Your mobile number" in english.text

    done = browser.http.post(f"{provider.url}/account/services/withdraw",
                             data={**form_fields(section), "client_id": bank[0]}, allow_redirects=False, timeout=10)
    assert done.status_code == 303 and done.headers["Location"].endswith(f"{RECORD}?withdrawn=1")
    after = browser.get(f"{provider.url}{RECORD}?withdrawn=1&lang=fa")
    assert "بانک ملت" not in after.text and 'role="status"' in after.text
    assert "هنوز به هیچ سامانه‌ای اجازه نداده‌اید" in _section(after.text, "services-heading")
    # The services page itself withdraws as before, and comes back to itself.
    assert 'name="back"' not in browser.get(f"{provider.url}/account/services").text


def test_an_exchange_between_agencies_shows_up_for_that_citizen_only(provider):
    a = agency(provider, scope="openid profile phone", name="Post office", name_fa="اداره‌ی پست")
    b = agency(provider, scope="openid profile phone", name="Land registry", name_fa="ثبت اسناد")
    c = agency(provider, scope="openid profile", name="Pension fund", name_fa="صندوق بازنشستگی")
    delegate(provider, a, b, "openid profile")
    token, (national_id, mobile) = login_at_agency(provider, a)
    issued = exchange(provider, a, token["access_token"], b[0])
    assert issued.status_code == 200, issued.text
    # A refused exchange (no delegation to C) is not something done with the citizen's identity.
    refused = exchange(provider, a, token["access_token"], c[0])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_target"
    # Another citizen's exchange at the same pair stays theirs.
    other_token, (other_id, other_mobile) = login_at_agency(provider, a)
    assert exchange(provider, a, other_token["access_token"], b[0]).status_code == 200

    browser, page = _sign_in_at(provider, RECORD, national_id, mobile)
    section = _section(page.text, "exchanges-heading")
    items = _items(section, "exchanges")
    assert len(items) == 1, items
    assert items[0].startswith("اداره‌ی پست برای شما ثبت اسناد را فراخواند"), items[0]
    assert "نام، نام خانوادگی و تاریخ تولد شما" in items[0] and "شماره‌ی همراه" not in items[0]
    assert "صندوق بازنشستگی" not in page.text
    assert _today_jalali() in items[0]
    english = browser.get(f"{provider.url}{RECORD}?lang=en")
    items = _items(_section(english.text, "exchanges-heading"), "exchanges")
    assert items[0].startswith("Post office called Land registry") and "Land registry received:" in items[0]

    # The other citizen sees their own one exchange; a citizen with none sees none.
    _, other_page = _sign_in_at(provider, RECORD, other_id, other_mobile)
    assert len(_items(_section(other_page.text, "exchanges-heading"), "exchanges")) == 1
    third_id, third_mobile = provider.add_citizen()
    _, third_page = _sign_in_at(provider, RECORD, third_id, third_mobile)
    assert 'id="exchanges"' not in third_page.text and "اداره‌ی پست" not in third_page.text
    assert "هیچ سامانه‌ای برای شما سامانه‌ی دیگری را فرانخوانده است" in third_page.text


def test_sessions_are_listed_with_this_device_marked_and_sign_out_everywhere(provider):
    library = provider.add_client(name="National library", name_fa="کتابخانه‌ی ملی")
    national_id, mobile = provider.add_citizen()
    phone = provider.flow()
    phone.login(library[0], library[2], national_id, mobile)
    laptop, page = _sign_in_at(provider, RECORD, national_id, mobile)

    section = _section(page.text, "sessions-heading")
    items = _items(section, "sessions")
    assert len(items) == 2, items
    assert items[0].startswith("همین دستگاه") and "فقط صفحه‌های حساب" in items[0], items[0]
    assert "کتابخانه‌ی ملی" in items[1] and "همین دستگاه" not in items[1] and "روش: کد پیامکی" in items[1]
    assert section.count('aria-current="true"') == 1
    assert 'action="/account/logout/everywhere"' in section and 'id="sign-out-everywhere"' in section

    # From the phone, the phone's own session is the one marked.
    page = phone.follow(phone.get(f"{provider.url}{RECORD}"), "http://never/")
    items = _items(_section(page.text, "sessions-heading"), "sessions")
    assert len(items) == 2 and items[0].startswith("همین دستگاه") and "کتابخانه‌ی ملی" in items[0], items
    english = phone.get(f"{provider.url}{RECORD}?lang=en")
    items = _items(_section(english.text, "sessions-heading"), "sessions")
    assert items[0].startswith("This device") and "Signed in to: National library" in items[0]
    assert "Method: SMS code" in items[0] and "Sign out on all devices" in english.text

    # "Sign out on all devices" from the record page ends both.
    done = laptop.http.post(f"{provider.url}/account/logout/everywhere", data=form_fields(section),
                            allow_redirects=False, timeout=10)
    assert done.status_code == 200
    for browser in (phone, laptop):
        again = browser.get(f"{provider.url}{RECORD}")
        assert again.status_code == 303 and "/login?r=" in again.headers["Location"]


def test_another_citizens_record_never_appears(provider):
    secret_agency = provider.add_client(name="Court of appeal", name_fa="دادگاه تجدیدنظر")
    national_id, mobile = provider.add_citizen()
    provider.flow().login(secret_agency[0], secret_agency[2], national_id, mobile)
    _sign_in_at(provider, RECORD, national_id, mobile)

    other_id, other_mobile = provider.add_citizen()
    browser, page = _sign_in_at(provider, RECORD, other_id, other_mobile)
    for lang_page in (page, browser.get(f"{provider.url}{RECORD}?lang=en")):
        assert "دادگاه تجدیدنظر" not in lang_page.text and "Court of appeal" not in lang_page.text
        assert len(_items(_section(lang_page.text, "sign-ins-heading"), "sign-ins")) == 1
        assert len(_items(_section(lang_page.text, "sessions-heading"), "sessions")) == 1
        assert national_id not in lang_page.text and persian_digits(national_id) not in lang_page.text
        # The guardian's section waits for guardians (issue 15, item 2): not shown without data.
        assert 'id="guardian"' not in lang_page.text
