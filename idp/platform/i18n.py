"""The language of pages: Persian first (right to left), English too.

The choice comes from ``?lang=``, then the ``idp_lang`` cookie, then ``ui_locales`` of the
authorization request, then the configured default. Messages are looked up by key.
"""
from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import jdatetime
from flask import g, request
from markupsafe import Markup, escape

from .digits import persian_digits
from .settings import settings

LANGS = ("fa", "en")
LANG_COOKIE = "idp_lang"

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
    "page.cooloff.heading": {"fa": "کمی صبر کنید", "en": "Please wait a little"},
    "page.cooloff.body": {"fa": "چند بار کد نادرست وارد شد. برای امنیت شما، {wait} دیگر دوباره امتحان کنید.",
                          "en": "Several wrong codes were entered. For your safety, try again in {wait}."},
    "page.rate_limited.heading": {"fa": "درخواست‌ها زیاد است", "en": "Too many attempts"},
    "page.rate_limited.body": {"fa": "برای امنیت شما، {wait} دیگر دوباره امتحان کنید.",
                               "en": "For your safety, please try again in {wait}."},
    "otp.resend": {"fa": "ارسال دوباره‌ی کد", "en": "Send the code again"},
    "otp.resend_wait": {"fa": "ارسال دوباره تا {seconds} ثانیه‌ی دیگر ممکن است.",
                        "en": "You can ask for a new code in {seconds} seconds."},
    "otp.resent": {"fa": "کد تازه فرستاده شد.", "en": "A new code was sent."},
    "account.title": {"fa": "حساب درگاه ملی", "en": "Your national sign-in account"},
    "account.authenticator": {"fa": "برنامه‌ی احراز هویت", "en": "Authenticator app"},
    "account.authenticator_on": {"fa": "برنامه‌ی احراز هویت شما فعال است و می‌توانید به جای پیامک از کد آن استفاده کنید.",
                                 "en": "Your authenticator app is set up: you can use its code instead of an SMS."},
    "account.authenticator_off": {"fa": "با یک برنامه‌ی احراز هویت (مثل Google Authenticator) بدون انتظار برای پیامک وارد شوید.",
                                  "en": "Sign in with an authenticator app (such as Google Authenticator) "
                                        "without waiting for an SMS."},
    "account.authenticator_setup": {"fa": "راه‌اندازی برنامه‌ی احراز هویت", "en": "Set up an authenticator app"},
    "account.authenticator_replace": {"fa": "جایگزینی برنامه‌ی احراز هویت", "en": "Replace the authenticator app"},
    "account.authenticator_replacing": {"fa": "با تأیید برنامه‌ی تازه، برنامه‌ی قبلی دیگر کار نمی‌کند.",
                                        "en": "Once the new app is confirmed, the old one stops working."},
    "account.step_scan": {"fa": "در برنامه، گزینه‌ی افزودن حساب را بزنید و این کد QR را اسکن کنید.",
                          "en": "In the app, choose to add an account and scan this QR code."},
    "account.step_confirm": {"fa": "کد ۶ رقمی‌ای را که برنامه نشان می‌دهد وارد کنید.",
                             "en": "Enter the 6-digit code the app shows."},
    "account.qr_alt": {"fa": "کد QR برای افزودن حساب به برنامه‌ی احراز هویت",
                       "en": "QR code that adds this account to an authenticator app"},
    "account.manual": {"fa": "نمی‌توانید اسکن کنید؟ این کلید را در برنامه وارد کنید:",
                       "en": "Can't scan? Type this key into the app:"},
    "account.confirm": {"fa": "تأیید", "en": "Confirm"},
    "account.enrolled_now": {"fa": "برنامه‌ی احراز هویت فعال شد.", "en": "Your authenticator app is set up."},
    "error.totp_enrol": {"fa": "کد درست نیست. کد تازه‌ای را که برنامه نشان می‌دهد وارد کنید.",
                         "en": "That code is not right. Enter the current code the app shows."},
    "identify.use_app": {"fa": "ورود با برنامه‌ی احراز هویت", "en": "Use my authenticator app"},
    "otp.app_heading": {"fa": "کد برنامه‌ی احراز هویت را وارد کنید", "en": "Enter your authenticator app's code"},
    "otp.app_lead": {"fa": "اگر برای این حساب برنامه‌ی احراز هویت راه انداخته‌اید، کد ۶ رقمی آن را وارد کنید.",
                     "en": "If you set up an authenticator app for this account, enter its 6-digit code."},
    "otp.use_sms": {"fa": "به جای آن کد پیامک شود", "en": "Text me a code instead"},
    "consent.heading": {"fa": "اجازه به {client}", "en": "Allow {client} to see your information?"},
    "consent.lead": {"fa": "{client} برای ورود شما این اطلاعات را از درگاه ملی می‌خواهد:",
                     "en": "To sign you in, {client} asks the national sign-in for:"},
    "consent.more_than_before": {"fa": "این سامانه بیش از آنچه پیش‌تر اجازه داده‌اید می‌خواهد. موارد تازه علامت خورده‌اند.",
                                 "en": "This service now asks for more than you allowed before. New items are marked."},
    "consent.new": {"fa": "(تازه)", "en": "(new)"},
    "consent.claim.openid": {"fa": "شناسه‌ای از شما که فقط برای این سامانه ساخته می‌شود",
                             "en": "An identifier for you, made for this service only"},
    "consent.claim.profile": {"fa": "نام، نام خانوادگی و تاریخ تولد شما",
                              "en": "Your given name, family name and date of birth"},
    "consent.claim.phone": {"fa": "شماره همراه شما", "en": "Your mobile number"},
    "consent.claim.national_id": {"fa": "کد ملی شما", "en": "Your national ID"},
    "consent.claim.age": {"fa": "اینکه {age} سال یا بیشتر دارید یا نه (نه تاریخ تولدتان)",
                          "en": "Whether you are {age} or older (not your date of birth)"},
    "consent.approve": {"fa": "اجازه می‌دهم", "en": "Allow"},
    "consent.deny": {"fa": "اجازه نمی‌دهم", "en": "Don't allow"},
    "consent.withdraw_later": {"fa": "این اجازه را هر وقت بخواهید در «سامانه‌های متصل» حساب خود پس بگیرید.",
                               "en": "You can withdraw this at any time under “My connected services” in your account."},
    "services.title": {"fa": "سامانه‌های متصل", "en": "My connected services"},
    "services.lead": {"fa": "این سامانه‌ها با اجازه‌ی شما این اطلاعات را از درگاه ملی می‌گیرند. اگر اجازه را پس بگیرید، "
                            "دفعه‌ی بعد دوباره از شما پرسیده می‌شود.",
                      "en": "These services receive this information from the national sign-in with your permission. "
                            "If you withdraw it, you will be asked again next time."},
    "services.none": {"fa": "هنوز به هیچ سامانه‌ای اجازه نداده‌اید.", "en": "You have not allowed any service yet."},
    "services.granted_on": {"fa": "اجازه از {date}", "en": "Allowed since {date}"},
    "services.withdraw": {"fa": "پس گرفتن اجازه", "en": "Withdraw permission"},
    "services.withdrawn": {"fa": "اجازه پس گرفته شد.", "en": "Permission withdrawn."},
    "services.back": {"fa": "بازگشت به حساب", "en": "Back to your account"},
    "services.link_lead": {"fa": "ببینید به کدام سامانه‌ها چه اطلاعاتی داده‌اید، و اجازه را پس بگیرید.",
                           "en": "See which services receive what information, and withdraw permission."},
    "logout.confirm.heading": {"fa": "خروج از درگاه ملی", "en": "Sign out of the national sign-in"},
    "logout.confirm.from_client": {"fa": "{client} خواسته است که از درگاه ملی خارج شوید.",
                                   "en": "{client} asked to sign you out of the national sign-in."},
    "logout.confirm.lead": {"fa": "آیا می‌خواهید خارج شوید؟ پس از خروج، برای استفاده از سامانه‌های دولتی باید دوباره وارد شوید.",
                            "en": "Do you want to sign out? Afterwards you will need to sign in again to use "
                                  "government services."},
    "logout.confirm.button": {"fa": "خروج", "en": "Sign out"},
    "logout.stay": {"fa": "خارج نمی‌شوم", "en": "Stay signed in"},
    "logout.done.heading": {"fa": "از درگاه ملی خارج شدید", "en": "You are signed out"},
    "logout.done.body": {"fa": "از درگاه ملی خارج شدید. به سامانه‌هایی که با آن وارد شده بودید هم خبر می‌دهیم تا شما را خارج کنند.",
                         "en": "You have signed out of the national sign-in. The services you signed in to "
                               "with it are being told to sign you out too."},
    "logout.done.shared_device": {"fa": "اگر این دستگاه مشترک است، مرورگر را ببندید.",
                                  "en": "If this is a shared device, close the browser."},
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
    "switch_lang.label": {"fa": "Read this page in English", "en": "این صفحه را به فارسی بخوانید"},
    "otp.expired_hint": {"fa": "این کد منقضی شد. کد تازه بخواهید یا دوباره شروع کنید.",
                         "en": "This code has expired. Ask for a new one or start again."},
    "otp.never_share": {"fa": "این کد را به هیچ‌کس ندهید؛ هیچ کارمندی آن را از شما نمی‌خواهد.",
                         "en": "Never give this code to anyone; no official will ever ask you for it."},
    "page.try_again": {"fa": "تلاش دوباره", "en": "Try again"},
    "page.home": {"fa": "صفحه‌ی نخست درگاه", "en": "The sign-in home page"},
    "otp.resend_ready": {"fa": "اکنون می‌توانید کد تازه بخواهید.", "en": "You can now ask for a new code."},
    "error_prefix": {"fa": "خطا", "en": "Error"},
    "time.a_moment": {"fa": "چند لحظه", "en": "a moment"},
    "otp.app_expires": {"fa": "این صفحه تا {seconds} ثانیه دیگر منتظر کد است.",
                        "en": "This page waits {seconds} more seconds for the code."},
    "otp.app_expired_hint": {"fa": "زمان این صفحه تمام شد. دوباره شروع کنید.",
                             "en": "This page has expired. Please start again."},
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
    return persian_digits(text) if current_lang() == "fa" else text


def duration(seconds: int) -> str:
    """A wait in words: minutes when it is a minute or more, else seconds.

    A no-break space keeps the number with its unit when the sentence wraps on a narrow phone.
    """
    seconds = max(1, int(seconds))
    if seconds >= 60:
        minutes = -(-seconds // 60)
        return digits(minutes) + ("\u00a0دقیقه" if current_lang() == "fa" else
                                  ("\u00a0minute" if minutes == 1 else "\u00a0minutes"))
    return digits(seconds) + ("\u00a0ثانیه" if current_lang() == "fa" else
                              ("\u00a0second" if seconds == 1 else "\u00a0seconds"))


def t(key: str, **values: object) -> str:
    """The message for a key in the page's language, with values (digits localized) filled in.

    A value that is already ``Markup`` (such as ``ltr(mobile)``) is put in as it is, and then
    the whole message is Markup with everything else escaped.
    """
    lang = current_lang()
    text = MESSAGES[key][lang]
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
_EN_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
              "October", "November", "December")


def jdate(value: date | datetime | str | None) -> str:
    """A date as a person reads it: Jalali with Persian month names in fa, Gregorian in en.

    ``2024-06-15`` is ``۲۶ خرداد ۱۴۰۳`` in Persian and ``15 June 2024`` in English. Accepts a
    date, a datetime (aware ones are first put in Iran's time) or an ISO 8601 string.
    """
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value) if "T" in value or " " in value else date.fromisoformat(value)
    if isinstance(value, datetime):
        value = (value.astimezone(IRAN) if value.tzinfo else value).date()
    if current_lang() == "fa":
        j = jdatetime.date.fromgregorian(date=value)
        return digits(f"{j.day} {jdatetime.date.j_months_fa[j.month - 1]} {j.year}")
    return f"{value.day} {_EN_MONTHS[value.month - 1]} {value.year}"


def init_app(app) -> None:
    """Expose t(), digits() and the language to templates; remember an explicit choice."""
    app.jinja_env.globals.update(t=t, digits=digits, current_lang=current_lang, duration=duration, ltr=ltr,
                                 isolate=isolate)
    app.jinja_env.filters["jdate"] = jdate
    app.jinja_env.filters["combine_lang"] = lambda args, lang: {**args, "lang": lang}

    @app.after_request
    def remember_lang(response):
        lang = request.args.get("lang")
        if lang in LANGS:
            response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="Lax",
                                secure=app.extensions["idp.settings"].is_https, httponly=True)
        return response
