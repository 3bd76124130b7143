"""The language of pages: Persian first (right to left), English too.

The choice comes from ``?lang=``, then the ``idp_lang`` cookie, then ``ui_locales`` of the
authorization request, then the configured default. Messages are looked up by key.
"""
from __future__ import annotations

from flask import g, request

from .extensions import settings

LANGS = ("fa", "en")
LANG_COOKIE = "idp_lang"
_TO_PERSIAN = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")

MESSAGES: dict[str, dict[str, str]] = {
    "title": {"fa": "درگاه ملی ورود", "en": "National sign-in"},
    "identify.heading": {"fa": "ورود به {client}", "en": "Sign in to {client}"},
    "identify.lead": {"fa": "کد ملی و شماره همراهی را که به نام شماست وارد کنید تا کد ورود برایتان پیامک شود.",
                      "en": "Enter your national ID and the mobile number registered to you; "
                            "we will text you a sign-in code."},
    "national_id": {"fa": "کد ملی", "en": "National ID"},
    "national_id.hint": {"fa": "۱۰ رقم", "en": "10 digits"},
    "mobile": {"fa": "شماره همراه", "en": "Mobile number"},
    "mobile.hint": {"fa": "مثل ۰۹۱۲۱۲۳۴۵۶۷", "en": "e.g. 09121234567"},
    "continue": {"fa": "دریافت کد", "en": "Send me a code"},
    "error.national_id": {"fa": "کد ملی درست نیست. ۱۰ رقم آن را دوباره بررسی کنید.",
                          "en": "This national ID is not valid. Check its 10 digits."},
    "error.mobile": {"fa": "شماره همراه درست نیست. مثل ۰۹۱۲۱۲۳۴۵۶۷ بنویسید.",
                     "en": "This mobile number is not valid. Write it like 09121234567."},
    "otp.heading": {"fa": "کد ورود را وارد کنید", "en": "Enter your sign-in code"},
    "otp.lead": {"fa": "اگر این شماره به نام شما ثبت شده باشد، کدی ۶ رقمی به {mobile} پیامک شد.",
                 "en": "If this number is registered to you, a 6-digit code was texted to {mobile}."},
    "otp": {"fa": "کد ۶ رقمی", "en": "6-digit code"},
    "otp.expires": {"fa": "این کد تا {seconds} ثانیه دیگر معتبر است.", "en": "The code is valid for {seconds} more seconds."},
    "verify": {"fa": "ورود", "en": "Sign in"},
    "otp.restart": {"fa": "کد نرسید؟ دوباره شروع کنید", "en": "No code? Start again"},
    "error.otp_invalid": {"fa": "کد درست نیست. {remaining} بار دیگر می‌توانید امتحان کنید.",
                          "en": "That code is not right. You can try {remaining} more times."},
    "error.otp_format": {"fa": "کد ۶ رقم است.", "en": "The code has 6 digits."},
    "page.expired.heading": {"fa": "کد منقضی شده است", "en": "The code has expired"},
    "page.expired.body": {"fa": "این کد دیگر معتبر نیست. دوباره شروع کنید تا کد تازه‌ای بفرستیم.",
                          "en": "This code is no longer valid. Start again and we will send a new one."},
    "page.locked.heading": {"fa": "تعداد تلاش‌ها زیاد شد", "en": "Too many wrong codes"},
    "page.locked.body": {"fa": "برای امنیت شما این کد باطل شد. دوباره شروع کنید تا کد تازه‌ای بفرستیم.",
                         "en": "For your safety this code was cancelled. Start again and we will send a new one."},
    "page.restart": {"fa": "شروع دوباره", "en": "Start again"},
    "page.interaction.heading": {"fa": "این صفحه دیگر معتبر نیست", "en": "This page is no longer valid"},
    "page.interaction.body": {"fa": "زمان ورود تمام شده یا این پیوند در مرورگر دیگری باز شده است. "
                                    "به سامانه‌ای که از آن آمدید برگردید و دوباره وارد شوید.",
                              "en": "The sign-in took too long or this link was opened in another browser. "
                                    "Go back to the service you came from and sign in again."},
    "page.bad_request.heading": {"fa": "درخواست نامعتبر", "en": "Invalid request"},
    "page.bad_request.body": {"fa": "سامانه‌ای که شما را به اینجا فرستاد درخواست نادرستی ساخته است. "
                                    "لطفاً به آن سامانه خبر دهید.",
                              "en": "The service that sent you here made an invalid request. Please tell that service."},
    "page.unknown_client.heading": {"fa": "سامانه ناشناخته", "en": "Unknown service"},
    "page.unknown_client.body": {"fa": "سامانه‌ای که شما را به اینجا فرستاد در درگاه ملی ثبت نشده است.",
                                 "en": "The service that sent you here is not registered with the national sign-in."},
    "page.unavailable.heading": {"fa": "موقتاً در دسترس نیست", "en": "Temporarily unavailable"},
    "page.unavailable.body": {"fa": "درگاه ملی لحظه‌ای در دسترس نیست. چند لحظه بعد دوباره امتحان کنید.",
                              "en": "The national sign-in is briefly unavailable. Please try again in a moment."},
    "page.sms_failed.heading": {"fa": "ارسال پیامک ممکن نشد", "en": "We could not send the text message"},
    "page.sms_failed.body": {"fa": "کد ورود فرستاده نشد. چند لحظه بعد دوباره امتحان کنید.",
                             "en": "The sign-in code was not sent. Please try again in a moment."},
    "page.not_found.heading": {"fa": "صفحه پیدا نشد", "en": "Page not found"},
    "page.not_found.body": {"fa": "این نشانی در درگاه ملی وجود ندارد.", "en": "This address does not exist here."},
    "page.csrf.heading": {"fa": "فرم منقضی شده است", "en": "The form has expired"},
    "page.csrf.body": {"fa": "برای امنیت شما، فرم را دوباره باز کنید و بفرستید.",
                       "en": "For your safety, open the form again and resubmit it."},
    "page.error_code": {"fa": "کد خطا", "en": "Error code"},
    "home.heading": {"fa": "درگاه ملی ورود", "en": "National sign-in"},
    "home.body": {"fa": "برای ورود، از سامانه‌ی دستگاهی که می‌خواهید از آن استفاده کنید دکمه‌ی «ورود با درگاه ملی» را بزنید.",
                  "en": "To sign in, use the “Sign in with the national sign-in” button of the service you want to use."},
    "switch_lang": {"fa": "English", "en": "فارسی"},
}


def current_lang() -> str:
    """The language of this request's pages."""
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
            g.lang = base
            return


def digits(text: object) -> str:
    """Digits in the script of the page's language."""
    text = str(text)
    return text.translate(_TO_PERSIAN) if current_lang() == "fa" else text


def t(key: str, **values: object) -> str:
    """The message for a key in the page's language, with values (digits localized) filled in."""
    lang = current_lang()
    text = MESSAGES[key][lang]
    return text.format(**{k: digits(v) for k, v in values.items()}) if values else text


def init_app(app) -> None:
    """Expose t(), digits() and the language to templates; remember an explicit choice."""
    app.jinja_env.globals.update(t=t, digits=digits, current_lang=current_lang)
    app.jinja_env.filters["combine_lang"] = lambda args, lang: {**args, "lang": lang}

    @app.after_request
    def remember_lang(response):
        lang = request.args.get("lang")
        if lang in LANGS:
            response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="Lax",
                                secure=app.extensions["idp.settings"].is_https, httponly=True)
        return response
