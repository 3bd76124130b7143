"""What the page templates print, without a browser: Jalali dates, digits, waits and isolation.

These sit beside the browser tests because they test the same templates' helpers (idp/platform/i18n.py);
the catalogues themselves are tested in tests/test_translations.py.
"""
from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
from flask import Flask, render_template_string

from idp.platform import i18n


@pytest.fixture
def render():
    """Render a template string in a request for ``lang``, with the helpers the pages use."""
    app = Flask(__name__)
    app.extensions["idp.settings"] = type("S", (), {"is_https": False})()
    i18n.init_app(app)

    def render(source: str, lang: str, **context) -> str:
        with app.test_request_context(f"/?lang={lang}"):
            return render_template_string(source, **context)

    return render


@pytest.mark.parametrize("value, fa, en", [
    (date(2024, 6, 15), "۲۶ خرداد ۱۴۰۳", "15 June 2024"),
    (date(2025, 3, 21), "۱ فروردین ۱۴۰۴", "21 March 2025"),
    ("1984-06-15", "۲۵ خرداد ۱۳۶۳", "15 June 1984"),
    # 22:00 UTC on 19 March is already 20 March, Nowruz, in Tehran (UTC+3:30).
    (datetime(2024, 3, 19, 22, 0, tzinfo=timezone.utc), "۱ فروردین ۱۴۰۳", "20 March 2024"),
    (None, "", ""),
])
def test_jdate_is_jalali_in_persian_and_gregorian_in_english(render, value, fa, en):
    assert render("{{ d | jdate }}", "fa", d=value) == fa
    assert render("{{ d | jdate }}", "en", d=value) == en


def test_values_in_messages_get_persian_digits_and_stay_escaped(render):
    html = render("{{ t('otp.lead', mobile=ltr(m)) }}", "fa", m="0912***4567<b>")
    assert '<bdi dir="ltr">۰۹۱۲***۴۵۶۷&lt;b&gt;</bdi>' in html
    html = render("{{ t('identify.heading', client=isolate(c)) }}", "en", c="Tax & <Customs>")
    assert html == "Sign in to <bdi>Tax &amp; &lt;Customs&gt;</bdi>"
    assert render("{{ t('error.otp_invalid', remaining=4) }}", "fa").count("۴") == 1


def test_waits_are_words_in_the_page_language(render):
    assert render("{{ duration(300) }}", "fa") == "۵\u00a0دقیقه"
    assert render("{{ duration(40) }}", "en") == "40\u00a0seconds"
