"""The two demo agencies: their names and the small record each one shows.

The records are fake but stable: they are derived from the pairwise ``sub``
the provider gave this agency, so the same citizen sees the same figures
on every visit, and the agency never needs the national ID.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Row:
    """One line of a record: a Persian label, an English label and a value."""

    label_fa: str
    label_en: str
    value: str


@dataclass(frozen=True)
class Agency:
    """What a demo agency is called and how it builds a citizen's record."""

    kind: str
    name_fa: str
    name_en: str
    service_fa: str
    service_en: str
    record_title_fa: str
    record_title_en: str
    record: Callable[[str], list[Row]]


def _rng(sub: str) -> random.Random:
    """A random generator seeded by the subject, so a record never changes."""
    return random.Random(hashlib.sha256(sub.encode()).digest())


def report_card(sub: str) -> list[Row]:
    """A term's grades out of 20, the Iranian school scale, and their average."""
    rng = _rng(sub)
    subjects = [
        ("ریاضی", "Mathematics"),
        ("فیزیک", "Physics"),
        ("شیمی", "Chemistry"),
        ("ادبیات فارسی", "Persian literature"),
        ("زبان انگلیسی", "English"),
    ]
    grades = [rng.randint(28, 40) / 2 for _ in subjects]
    rows = [Row("پایه", "Grade", "10")]
    rows += [Row(fa, en, f"{grade:.2f} / 20") for (fa, en), grade in zip(subjects, grades)]
    rows.append(Row("معدل", "Average", f"{sum(grades) / len(grades):.2f} / 20"))
    return rows


def tax_file(sub: str) -> list[Row]:
    """A tax file number, last year's declared income, the tax due and its status."""
    rng = _rng(sub)
    income = rng.randrange(600, 4800) * 1_000_000
    return [
        Row("شماره‌ی پرونده", "File number", f"{rng.randrange(10**11, 10**12)}"),
        Row("سال مالیاتی", "Tax year", "1403 (2024–25)"),
        Row("درآمد اظهارشده", "Declared income", f"{income:,} IRR"),
        Row("مالیات متعلق", "Tax due", f"{income // 10:,} IRR"),
        Row("وضعیت", "Status", "ثبت شده / Filed"),
    ]


AGENCIES = {
    "report-card": Agency(
        kind="report-card",
        name_fa="وزارت آموزش و پرورش",
        name_en="Ministry of Education",
        service_fa="سامانه‌ی کارنامه‌ی دانش‌آموز",
        service_en="Student report card service",
        record_title_fa="کارنامه‌ی نیم‌سال",
        record_title_en="Term report card",
        record=report_card,
    ),
    "tax": Agency(
        kind="tax",
        name_fa="سازمان امور مالیاتی کشور",
        name_en="National Tax Administration",
        service_fa="سامانه‌ی پرونده‌ی مالیاتی",
        service_en="Tax file service",
        record_title_fa="خلاصه‌ی پرونده‌ی مالیاتی",
        record_title_en="Tax file summary",
        record=tax_file,
    ),
}
