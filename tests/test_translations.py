"""The gettext catalogues of the page text (idp/translations): complete, compiled, and saying what the
pages said before they existed.

tests/data/page_text_before_gettext.json is the MESSAGES dict that idp/platform/i18n.py held until the
text moved to .po files: every message must still read exactly so, in both languages.
"""
from __future__ import annotations

import json
import re
import string
from pathlib import Path
from types import SimpleNamespace

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from flask import Flask, g

from idp.platform import i18n

ROOT = Path(__file__).resolve().parent.parent
BEFORE = json.loads((ROOT / "tests" / "data" / "page_text_before_gettext.json").read_text(encoding="utf-8"))
#: Messages reworded on purpose since the move to gettext, each (key, language) with why; every other
#: message still reads as it did.
REWORDED = {
    ("consent.heading", "fa"): "the same question as the English title",
    ("account.title", "fa"): "the same as the English title",
    ("otp.app_expires", "fa"): "the countdown reads «ثانیه‌ی دیگر» everywhere",
    ("otp.expires", "fa"): "the countdown reads «ثانیه‌ی دیگر» everywhere",
    ("page.cooloff.body", "fa"): "the wait reads «ثانیه‌ی دیگر» as the countdown does",
    ("page.rate_limited.body", "fa"): "the wait reads «ثانیه‌ی دیگر» as the countdown does",
    ("error.mobile", "fa"): "«شماره‌ی همراه»: the ezafe after a silent «ه», as everywhere else",
    ("consent.claim.phone", "fa"): "«شماره‌ی همراه»",
    ("identify.lead", "fa"): "«شماره‌ی همراه»",
    ("mobile", "fa"): "«شماره‌ی همراه»",
    ("page.unknown_client.heading", "fa"): "«سامانه‌ی»: the ezafe after a silent «ه»",
}


def _po(lang: str):
    with open(i18n.TRANSLATIONS / lang / "LC_MESSAGES" / "messages.po", "rb") as f:
        return read_po(f, locale=lang)


def _mo(lang: str):
    with open(i18n.TRANSLATIONS / lang / "LC_MESSAGES" / "messages.mo", "rb") as f:
        return read_mo(f)


def _texts(catalog) -> dict:
    """msgid -> msgstr of a catalogue's messages (plural ones as tuples), header aside."""
    def plain(value):
        return tuple(value) if isinstance(value, (list, tuple)) else value

    return {plain(m.id): plain(m.string) for m in catalog if m.id and not m.fuzzy}


@pytest.fixture
def app():
    app = Flask(__name__)
    app.extensions["idp.settings"] = SimpleNamespace(is_https=False, server=SimpleNamespace(default_locale="fa"))
    i18n.init_app(app)
    return app


@pytest.mark.parametrize("lang", i18n.LANGS)
def test_every_message_reads_as_before_gettext(app, lang):
    for key, texts in BEFORE.items():
        if (key, lang) in REWORDED:
            continue
        fields = {f for _, f, _, _ in string.Formatter().parse(texts[lang]) if f}
        values = {f: f"<{f}>" for f in fields}
        with app.test_request_context(f"/?lang={lang}"):
            assert i18n.t(key) == texts[lang], key
            if values:
                assert i18n.t(key, **values) == texts[lang].format(**values), key


@pytest.mark.parametrize("lang", i18n.LANGS)
def test_the_committed_mo_files_are_compiled_from_the_po_files(lang):
    """Run `pybabel compile -d idp/translations` (see the README) and commit the .mo when this fails."""
    po, mo = _po(lang), _mo(lang)
    assert _texts(mo) == _texts(po), f"idp/translations/{lang}/LC_MESSAGES/messages.mo is stale"
    assert mo.plural_forms == po.plural_forms


def test_the_catalogues_hold_exactly_the_messages_the_code_uses():
    """What `pybabel extract -F babel.cfg idp` finds is what the catalogues translate: a new t("key") needs
    a translation, and a key no code uses any more would only be marked obsolete by `pybabel update`."""
    with open(ROOT / "babel.cfg", encoding="utf-8") as f:
        method_map, options_map = parse_mapping_cfg(f)
    used = {msg[0] if isinstance(msg, tuple) else msg
            for _, _, msg, _, _ in extract_from_dir(str(ROOT / "idp"), method_map, options_map)}
    for lang in i18n.LANGS:
        translated = {m.id[0] if isinstance(m.id, tuple) else m.id for m in _po(lang) if m.id}
        assert translated == used, lang


def test_every_message_is_translated_in_both_languages_with_the_same_fields():
    fa, en = _texts(_po("fa")), _texts(_po("en"))
    assert fa.keys() == en.keys()
    assert set(BEFORE) <= {key if isinstance(key, str) else key[0] for key in fa}
    for key in fa:
        assert all(fa[key]) and all(en[key]), key
        fields = [{f for text in ([c[key]] if isinstance(c[key], str) else c[key])
                   for _, f, _, _ in string.Formatter().parse(text) if f} for c in (fa, en)]
        assert fields[0] == fields[1], key
    assert not any(m.fuzzy for lang in i18n.LANGS for m in _po(lang) if m.id)


def test_flask_babel_follows_the_language_choice(app):
    from flask_babel import get_locale

    with app.test_request_context("/"):
        assert str(get_locale()) == "fa" and i18n.t("verify") == "ورود"
    with app.test_request_context("/?lang=en"):
        assert str(get_locale()) == "en" and i18n.t("verify") == "Sign in"
    with app.test_request_context("/", headers={"Cookie": f"{i18n.LANG_COOKIE}=en"}):
        assert i18n.t("verify") == "Sign in"
    # ui_locales decides after the page has already looked up a message in the default language.
    with app.test_request_context("/"):
        assert i18n.t("verify") == "ورود"
        i18n.use_ui_locales("en-GB fa")
        assert str(get_locale()) == "en" and i18n.t("verify") == "Sign in" and g.lang == "en"
    # ... but not over an explicit choice.
    with app.test_request_context("/?lang=fa"):
        i18n.use_ui_locales("en")
        assert i18n.t("verify") == "ورود"


def test_persian_digits_follow_babels_locale_data(app):
    assert i18n._NATIVE_DIGITS == {"fa"}
    with app.test_request_context("/?lang=fa"):
        assert i18n.t("otp.resend_wait", seconds=120) == "ارسال دوباره تا ۱۲۰ ثانیه‌ی دیگر ممکن است."
        assert i18n.duration(1) == "۱\u00a0ثانیه" and i18n.duration(61) == "۲\u00a0دقیقه"
    with app.test_request_context("/?lang=en"):
        assert i18n.t("otp.resend_wait", seconds=120) == "You can ask for a new code in 120 seconds."
        assert i18n.duration(1) == "1\u00a0second" and i18n.duration(60) == "1\u00a0minute"
        assert i18n.duration(61) == "2\u00a0minutes"


# ---- Persian written one way ----------------------------------------------------------------------

#: Arabic letters that look like Persian ones: Arabic yeh (ي U+064A, and alef maksura ى U+0649) and
#: Arabic kaf (ك U+0643). Persian writes ی U+06CC and ک U+06A9.
ARABIC_LOOKALIKES = {"\u064a": "ی", "\u0649": "ی", "\u0643": "ک"}
ZWNJ = "\u200c"
#: The countdown and waits: «ثانیه‌ی دیگر» (and «دقیقه‌ی», «لحظه‌ی»), not with a space, an attached
#: «ی», a hamza «ۀ»/«هٔ», or no ezafe at all.
COUNTDOWN_VARIANTS = re.compile("(ثانیه|دقیقه|لحظه)(?:[ \u00a0]ی|ی|\u0654|ۀ|)[ \u00a0]دیگر|(ثانیۀ|دقیقۀ|لحظۀ) دیگر")
#: The verb prefixes «می»/«نمی» are joined to their verb by a ZWNJ, never by a space.
MI_WITH_SPACE = re.compile("(?<![\\w\u200c])ن?می[ \u00a0]")


def _fa_texts() -> dict[str, str]:
    """Every Persian message, plural forms joined, with {fields} filled as pages fill them."""
    texts = {}
    for key, value in _texts(_po("fa")).items():
        for text in ([value] if isinstance(value, str) else value):
            texts.setdefault(key if isinstance(key, str) else key[0], []).append(text)
    return {key: " | ".join(values) for key, values in texts.items()}


def persian_problems(key: str, text: str) -> list[str]:
    """What is wrong with one Persian message: Arabic look-alike letters, a countdown that does
    not read «ثانیه‌ی دیگر», a «می» prefix written with a space."""
    found = [f"{key}: Arabic {hex(ord(c))} {c!r} (Persian writes {ARABIC_LOOKALIKES[c]})"
             for c in text if c in ARABIC_LOOKALIKES]
    found += [f"{key}: {m.group(0)!r} (write «ثانیه‌ی دیگر»)" for m in COUNTDOWN_VARIANTS.finditer(text)]
    found += [f"{key}: {m.group(0)!r} (write «می‌» with a ZWNJ)" for m in MI_WITH_SPACE.finditer(text)]
    return found


def test_the_persian_catalogue_writes_persian_letters_and_one_countdown(app):
    problems = [p for key, text in _fa_texts().items() for p in persian_problems(key, text)]
    assert not problems, "\n".join(problems)
    # The waits as pages show them (a duration put into {wait}) read the same way.
    with app.test_request_context("/?lang=fa"):
        for key in ("page.cooloff.body", "page.rate_limited.body"):
            for wait in (i18n.duration(30), i18n.duration(300), i18n.t("time.a_moment")):
                text = i18n.t(key, wait=wait)
                assert not persian_problems(key, text), text
                assert re.search(f"(ثانیه|دقیقه|لحظه){ZWNJ}ی دیگر", text), text
        for key in ("otp.expires", "otp.app_expires", "otp.resend_wait"):
            assert f"ثانیه{ZWNJ}ی دیگر" in i18n.t(key, seconds=42), key


@pytest.mark.parametrize("bad, why", [
    ("این کد تا {seconds} ثانیه دیگر معتبر است.", "no ezafe"),
    ("این کد تا {seconds} ثانیه ی دیگر معتبر است.", "a space before ی"),
    ("این کد تا {seconds} ثانیهی دیگر معتبر است.", "ی attached without ZWNJ"),
    ("این کد تا {seconds} ثانیهٔ دیگر معتبر است.", "hamza ezafe"),
    ("این کد تا {seconds} ثانیه\u200cي دیگر معتبر است.", "Arabic yeh"),
    ("کد را وارد كنید.", "Arabic kaf"),
    ("اجازه را پس بگيريد.", "Arabic yeh"),
    ("اکنون می توانید کد تازه بخواهید.", "می with a space"),
])
def test_the_persian_check_catches_each_variant(bad, why):
    """The check above, shown to catch what it is for."""
    assert persian_problems("sample", bad), why
    assert not persian_problems("sample", "این کد تا {seconds} ثانیه\u200cی دیگر معتبر است. اکنون می\u200cتوانید.")
