"""Digits: the one table between ASCII, Persian (۰-۹) and Arabic-Indic (٠-٩) digits.

Citizens type either script; the code stores and compares ASCII; Persian pages and
reports show Persian digits.
"""
from __future__ import annotations

PERSIAN = "۰۱۲۳۴۵۶۷۸۹"
ARABIC_INDIC = "٠١٢٣٤٥٦٧٨٩"
_TO_ASCII = str.maketrans(PERSIAN + ARABIC_INDIC, "0123456789" * 2)
_TO_PERSIAN = str.maketrans("0123456789", PERSIAN)


def ascii_digits(text: str) -> str:
    """``text`` with Persian and Arabic-Indic digits written as ASCII digits."""
    return text.translate(_TO_ASCII)


def persian_digits(text: str) -> str:
    """``text`` with ASCII digits written as Persian digits."""
    return text.translate(_TO_PERSIAN)
