"""The language of pages: Persian first (right to left), English too.

The choice comes from ``?lang=``, then the ``idp_lang`` cookie, then ``ui_locales`` of the
authorization request, then the configured default; :func:`current_lang` is Flask-Babel's locale
selector.

The page text is in gettext catalogues, ``idp/translations/<lang>/LC_MESSAGES/messages.po``
(compiled to ``messages.mo`` beside it and committed, so a fresh clone needs no build step;
tests/test_translations.py fails when a ``.mo`` says other than its ``.po``), so that translators
work with pybabel, Poedit or Weblate (see the README).

Messages are looked up by **key**: the msgid is a key such as ``identify.heading``, the English
catalogue holds the English text and the Persian one the Persian. Keys rather than English text
as msgids, because: the templates and views did not have to change (``t("identify.heading",
client=...)`` as before); fixing an English typo does not orphan the Persian translation; two
messages that read the same in English today ("National sign-in" as a title and as a heading) can
still read differently in Persian tomorrow; and a message missing from a catalogue shows its key,
which a test catches, rather than silently English text on a Persian page. Values are put in with
``{name}`` (``str.format``), as before; a test checks that both languages have the same fields.

Catalogues are read once per process and language (Flask-Babel caches them); a request costs a
dictionary look-up per message.
"""
from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jdatetime
from babel import Locale
from babel.dates import format_date
from flask import g, request
from flask_babel import Babel, get_translations, refresh
from markupsafe import Markup, escape

from .digits import persian_digits
from .settings import settings

LANGS = ("fa", "en")
LANG_COOKIE = "idp_lang"
#: The catalogues: <lang>/LC_MESSAGES/messages.po and its compiled messages.mo.
TRANSLATIONS = Path(__file__).resolve().parent.parent / "translations"

#: Languages whose numbers are written in Extended Arabic-Indic (Persian) digits, by Babel's locale data
#: (CLDR's default numbering system). Babel formats numbers with a locale's symbols but does not
#: transliterate digits, so the digits themselves come from the one table in digits.py.
_NATIVE_DIGITS = frozenset(lang for lang in LANGS if Locale.parse(lang).default_numbering_system == "arabext")


def N_(key: str) -> str:
    """Marks a message key for ``pybabel extract`` where the key is used elsewhere, built at run time."""
    return key


#: Keys that error.html builds as 'page.' ~ error.key ~ '.heading' / '.body': named here for extraction.
ERROR_PAGE_KEYS = (
    N_("page.expired.heading"), N_("page.expired.body"),
    N_("page.locked.heading"), N_("page.locked.body"),
    N_("page.interaction.heading"), N_("page.interaction.body"),
    N_("page.bad_request.heading"), N_("page.bad_request.body"),
    N_("page.unknown_client.heading"), N_("page.unknown_client.body"),
    N_("page.unavailable.heading"), N_("page.unavailable.body"),
    N_("page.cooloff.heading"), N_("page.cooloff.body"),
    N_("page.rate_limited.heading"), N_("page.rate_limited.body"),
    N_("page.sms_failed.heading"), N_("page.sms_failed.body"),
    N_("page.not_found.heading"), N_("page.not_found.body"),
    N_("page.csrf.heading"), N_("page.csrf.body"),
    N_("page.bad_redirect.heading"), N_("page.bad_redirect.body"),
    N_("page.client_disabled.heading"), N_("page.client_disabled.body"),
)


def current_lang() -> str:
    """The language of this request's pages (Flask-Babel's locale selector)."""
    if "lang" in g:
        return g.lang
    lang = request.args.get("lang") or request.cookies.get(LANG_COOKIE)
    if lang not in LANGS:
        lang = settings.server.default_locale
    g.lang = lang
    return lang


def use_ui_locales(ui_locales: str | None) -> None:
    """Honour an authorization request's ui_locales when the person has not chosen a language."""
    if not ui_locales or request.args.get("lang") or request.cookies.get(LANG_COOKIE):
        return
    for tag in ui_locales.split():
        base = tag.split("-")[0].lower()
        if base in LANGS:
            if g.get("lang") != base:
                g.lang = base
                g.pop("_idp_catalogue", None)
                refresh()  # Flask-Babel may have settled this request's locale already
            return


#: Flask-Babel's catalogue of each language, as it gave it the first time: the files do not change
#: while a process runs, and asking it again per request cost a Babel locale parse each time.
_catalogues: dict[str, Any] = {}


def _catalogue():
    """This request's catalogue: Flask-Babel's (read once per process and language), kept on ``g`` so that
    the many messages of a page cost a dictionary look-up each, not Flask-Babel's locale resolution."""
    try:
        return g._idp_catalogue
    except AttributeError:
        # before Flask-Babel looks: it takes an empty ``g`` for "no request" (and no catalogue)
        lang = current_lang()
        catalogue = _catalogues.get(lang)
        if catalogue is None:
            catalogue = get_translations()
            if catalogue.files:  # a catalogue actually read (not the empty one of a missing file)
                _catalogues[lang] = catalogue
        g._idp_catalogue = catalogue
        return catalogue


def digits(text: object) -> str:
    """Digits in the script of the page's language."""
    text = str(text)
    return persian_digits(text) if current_lang() in _NATIVE_DIGITS else text


def duration(seconds: int) -> str:
    """A wait in words: minutes when it is a minute or more, else seconds.

    A no-break space keeps the number with its unit when the sentence wraps on a narrow phone.
    """
    seconds = max(1, int(seconds))
    if seconds >= 60:
        minutes = -(-seconds // 60)
        return digits(minutes) + "\u00a0" + _catalogue().ngettext("time.minute", "time.minutes", minutes)
    return digits(seconds) + "\u00a0" + _catalogue().ngettext("time.second", "time.seconds", seconds)


def t(key: str, **values: object) -> str:
    """The message for a key in the page's language, with values (digits localized) filled in.

    A value that is already ``Markup`` (such as ``ltr(mobile)``) is put in as it is, and then
    the whole message is Markup with everything else escaped.
    """
    text = _catalogue().gettext(key)
    if not values:
        return text
    if any(isinstance(v, Markup) for v in values.values()):
        return Markup(escape(text)).format(**{k: v if isinstance(v, Markup) else digits(v)
                                              for k, v in values.items()})
    return text.format(**{k: digits(v) for k, v in values.items()})


def ltr(value: object) -> Markup:
    """A left-to-right island (a mobile number, a code) in a right-to-left sentence, digits localized."""
    return Markup('<bdi dir="ltr">{}</bdi>').format(digits(value))


def isolate(value: object) -> Markup:
    """Text of unknown direction (an agency's name) isolated so it cannot reorder its sentence."""
    return Markup("<bdi>{}</bdi>").format(value)


#: Dates are shown in Iran's time when they carry a time zone.
IRAN = ZoneInfo("Asia/Tehran")


def jdate(value: date | datetime | str | None) -> str:
    """A date as a person reads it: Jalali with Persian month names in fa, Gregorian in en.

    ``2024-06-15`` is ``۲۶ خرداد ۱۴۰۳`` in Persian and ``15 June 2024`` in English. Accepts a
    date, a datetime (aware ones are first put in Iran's time) or an ISO 8601 string. The Jalali
    calendar is jdatetime's (Babel has none); the Gregorian date is Babel's.
    """
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value) if "T" in value or " " in value else date.fromisoformat(value)
    if isinstance(value, datetime):
        value = (value.astimezone(IRAN) if value.tzinfo else value).date()
    lang = current_lang()
    if lang == "fa":
        j = jdatetime.date.fromgregorian(date=value)
        return digits(f"{j.day} {jdatetime.date.j_months_fa[j.month - 1]} {j.year}")
    return format_date(value, "d MMMM y", locale=lang)


def init_app(app) -> None:
    """Flask-Babel with our catalogues and language choice; t(), digits() and the language in templates;
    remember an explicit choice."""
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(TRANSLATIONS)
    app.config.setdefault("BABEL_DEFAULT_LOCALE", "fa")
    # Templates call t() (keys, brace fields, Markup-aware); Jinja's {% trans %} is not used.
    Babel(app, locale_selector=current_lang, configure_jinja=False)
    app.jinja_env.globals.update(t=t, digits=digits, current_lang=current_lang, duration=duration, ltr=ltr,
                                 isolate=isolate)
    app.jinja_env.filters["jdate"] = jdate
    app.jinja_env.filters["combine_lang"] = lambda args, lang: {**args, "lang": lang}

    @app.after_request
    def remember_lang(response):
        if b"lang=" not in request.query_string:  # most requests: no query to parse
            return response
        lang = request.args.get("lang")
        if lang in LANGS:
            response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="Lax",
                                secure=app.extensions["idp.settings"].is_https, httponly=True)
        return response
