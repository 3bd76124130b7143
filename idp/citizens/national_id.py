"""National IDs and mobile numbers as people type them -> canonical values.

Digits typed in Persian (U+06F0..U+06F9) or Arabic-Indic (U+0660..U+0669) are the same
digits as ASCII ones. A national ID is 10 digits whose last is a check digit; a mobile
number becomes E.164 (``+989xxxxxxxxx``).
"""
from __future__ import annotations

import re

from ..platform.digits import ascii_digits

# Separators people paste or type inside numbers: spaces (incl. no-break and zero-width),
# hyphens, dots, parentheses, and bidi marks that phones insert around digits.
_SEPARATORS = re.compile(r"[\s\-\.\(\)\u200c\u200d\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_MAX_INPUT = 64


class InvalidNationalId(ValueError):
    """The text is not a valid 10-digit national ID."""


class InvalidMobile(ValueError):
    """The text is not an Iranian mobile number in an accepted form."""


def normalize_digits(text: str) -> str:
    """Persian and Arabic-Indic digits -> ASCII digits; separators removed."""
    return _SEPARATORS.sub("", ascii_digits(text))


def check_digit(first_nine: str) -> int:
    """The check digit of a national ID from its first nine digits.

    s = sum(digit[i] * (10 - i)) for i in 0..8; r = s mod 11; check = r if r < 2 else 11 - r.
    """
    s = sum(int(d) * (10 - i) for i, d in enumerate(first_nine))
    r = s % 11
    return r if r < 2 else 11 - r


def parse_national_id(text: str) -> str:
    """A valid national ID as 10 ASCII digits, or :class:`InvalidNationalId`."""
    if not isinstance(text, str) or len(text) > _MAX_INPUT:
        raise InvalidNationalId("not a national ID")
    value = normalize_digits(text)
    if not (len(value) == 10 and value.isascii() and value.isdigit()):
        raise InvalidNationalId("a national ID has 10 digits")
    # All-same-digit numbers pass the arithmetic but are never issued.
    if len(set(value)) == 1:
        raise InvalidNationalId("not an issued national ID")
    if check_digit(value[:9]) != int(value[9]):
        raise InvalidNationalId("the check digit does not match")
    return value


def make_national_id(first_nine: str) -> str:
    """The full national ID for nine leading digits (for demo data and tests)."""
    return first_nine + str(check_digit(first_nine))


_MOBILE_FORMS = (
    re.compile(r"^\+989(\d{9})$"),
    re.compile(r"^00989(\d{9})$"),
    re.compile(r"^989(\d{9})$"),
    re.compile(r"^09(\d{9})$"),
    re.compile(r"^9(\d{9})$"),
)


def parse_mobile(text: str) -> str:
    """An Iranian mobile number in E.164 (``+989xxxxxxxxx``), or :class:`InvalidMobile`.

    Accepted: 09121234567, 9121234567, +989121234567, 00989121234567 (and 989121234567),
    with any of the digit scripts and separators that people type.
    """
    if not isinstance(text, str) or len(text) > _MAX_INPUT:
        raise InvalidMobile("not a mobile number")
    value = normalize_digits(text)
    if not value.isascii():
        raise InvalidMobile("not a mobile number")
    for form in _MOBILE_FORMS:
        if m := form.match(value):
            return "+989" + m.group(1)
    raise InvalidMobile("not a mobile number in an accepted form")


def mask_mobile(e164: str) -> str:
    """The mobile as a person recognises it, masked: ``0912***4567``."""
    local = "0" + e164[3:] if e164.startswith("+98") else e164
    return local[:4] + "***" + local[-4:]


def mask_national_id(national_id: str) -> str:
    """A national ID masked for display: ``***-***-1234``-like, only the last 3 digits shown."""
    return "*******" + national_id[-3:]
