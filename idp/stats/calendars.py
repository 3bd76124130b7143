"""Days, months and calendars of the figures: the configured time zone, local days as UTC
ranges, Gregorian and Jalali months, labels, date parsing, the adult cut-off, and StatsError
(every stats module raises it; it lives here, in the lowest of them).

May import: idp.platform, idp.citizens.
"""
from __future__ import annotations

import datetime as dt
import zoneinfo

import jdatetime
from babel.dates import get_month_names

from ..citizens.counting import local_date
from ..platform.database import utcnow
from ..platform.dates import jalali_ymd, parse_ymd
from ..platform.digits import persian_digits
from ..platform.settings import settings

GREGORIAN, JALALI = "g", "j"
CALENDARS = {"gregorian": GREGORIAN, "jalali": JALALI}
#: A day is closed for ``idp stats rollup`` (without --day) this long after local midnight, so
#: that logins committing across midnight are in.
CLOSE_GRACE = dt.timedelta(minutes=10)
#: Gregorian month names in Persian (ژانویه ... دسامبر), from the Unicode CLDR through Babel: a
#: day of the month, then as a month's title.
_GREGORIAN_FA = get_month_names("wide", context="format", locale="fa")
_GREGORIAN_FA_TITLE = get_month_names("wide", context="stand-alone", locale="fa")


class StatsError(Exception):
    """A request the figures cannot answer (a day not closed, a bad range); one line."""


def zone() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(settings.stats.timezone)


def today() -> dt.date:
    """Today in the configured time zone."""
    return local_date(utcnow())


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a local day, as UTC instants (days end at local midnight)."""
    tz = zone()
    start = dt.datetime.combine(day, dt.time(0), tzinfo=tz).astimezone(dt.timezone.utc)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=tz).astimezone(dt.timezone.utc)
    return start, end


def days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def month_start(day: dt.date, cal: str) -> dt.date:
    """The (Gregorian) date on which the month containing ``day`` begins, in a calendar."""
    if cal == JALALI:
        j = jdatetime.date.fromgregorian(date=day)
        return jdatetime.date(j.year, j.month, 1).togregorian()
    return day.replace(day=1)


def next_month(start: dt.date, cal: str) -> dt.date:
    """The first day of the month after the one beginning on ``start``."""
    if cal == JALALI:
        j = jdatetime.date.fromgregorian(date=start)
        y, m = (j.year + 1, 1) if j.month == 12 else (j.year, j.month + 1)
        return jdatetime.date(y, m, 1).togregorian()
    return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def month_key(start: dt.date, cal: str) -> str:
    if cal == JALALI:
        j = jdatetime.date.fromgregorian(date=start)
        return f"{j.year:04d}-{j.month:02d}"
    return f"{start.year:04d}-{start.month:02d}"


def day_labels(day: dt.date, cal: str) -> tuple[str, str]:
    """(label, Persian label) of a day: 1405-09-07 / ۷ آذر ۱۴۰۵, or 2026-11-28 / ۲۸ نوامبر ۲۰۲۶.
    The Persian label is Persian in both calendars (month names and digits)."""
    if cal == JALALI:
        j = jdatetime.date.fromgregorian(date=day)
        return (jalali_ymd(day), persian_digits(f"{j.day} {jdatetime.date.j_months_fa[j.month - 1]} {j.year}"))
    return day.isoformat(), persian_digits(f"{day.day} {_GREGORIAN_FA[day.month]} {day.year}")


def month_labels(start: dt.date, cal: str) -> tuple[str, str]:
    """(label, Persian label) of a month: Azar 1405 / آذر ۱۴۰۵, or November 2026 / نوامبر ۲۰۲۶."""
    if cal == JALALI:
        j = jdatetime.date.fromgregorian(date=start)
        return (f"{jdatetime.date.j_months_en[j.month - 1]} {j.year}",
                persian_digits(f"{jdatetime.date.j_months_fa[j.month - 1]} {j.year}"))
    return (start.strftime("%B %Y"),
            persian_digits(f"{_GREGORIAN_FA_TITLE[start.month]} {start.year}"))


def parse_day(text: str) -> dt.date:
    """YYYY-MM-DD, Gregorian, or Jalali when the year is before 1700 (1405-09-07); Persian digits too
    (the registry's birth dates follow the same rule: idp.platform.dates)."""
    try:
        return parse_ymd(text)[0]
    except ValueError:
        raise StatsError(f"not a date: {text!r} (YYYY-MM-DD, Gregorian or Jalali)") from None


def adult_cutoff(today: dt.date, age: int) -> dt.date:
    """The latest birth date of someone who is ``age`` or older on ``today``."""
    try:
        return today.replace(year=today.year - age)
    except ValueError:  # 29 February in a year that has none
        return today.replace(year=today.year - age, day=28)


def closed_through(now: dt.datetime | None = None) -> dt.date:
    """The last day that is closed for the rollup (local midnight plus a grace has passed)."""
    now = now or utcnow()
    return local_date(now - CLOSE_GRACE) - dt.timedelta(days=1)
