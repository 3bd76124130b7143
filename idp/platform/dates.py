"""Dates as operators in Iran type them: ``YYYY-MM-DD`` in the Gregorian or the Jalali calendar,
told apart by the year alone, in ASCII, Persian or Arabic-Indic digits.

The one rule, shared by ``idp stats`` (its days) and the registry (birth dates): a year before
1700 is Jalali. Jalali 1700 is Gregorian 2321, and no Gregorian date this project handles is
before 1700, so no date is read in the wrong calendar.
"""
from __future__ import annotations

import datetime as dt

import jdatetime

from .digits import ascii_digits

#: A year before this one is a Jalali year (1405 is 2026); from it on, Gregorian.
JALALI_BEFORE = 1700


def from_ymd(year: int, month: int, day: int) -> tuple[dt.date, bool]:
    """The (Gregorian) date of year-month-day, and whether it was read as Jalali; ValueError when
    it is not a day of its calendar (1370-12-31, 2026-02-30)."""
    if year < JALALI_BEFORE:
        return jdatetime.date(year, month, day).togregorian(), True
    return dt.date(year, month, day), False


def parse_ymd(text: str) -> tuple[dt.date, bool]:
    """``YYYY-MM-DD`` (or ``YYYY/MM/DD``) in either calendar -> (Gregorian date, read as Jalali);
    ValueError when it is not a date."""
    value = ascii_digits(text.strip()).replace("/", "-")
    parts = value.split("-")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError(f"not a date: {text!r}")
    return from_ymd(*(int(p) for p in parts))


def jalali_ymd(day: dt.date) -> str:
    """A Gregorian date as a Jalali ``YYYY-MM-DD`` (2026-11-28 is 1405-09-07)."""
    j = jdatetime.date.fromgregorian(date=day)
    return f"{j.year:04d}-{j.month:02d}-{j.day:02d}"
