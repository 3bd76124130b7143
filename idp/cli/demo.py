"""Demo data for the embedded default (``idp dev``): citizens and two agency clients."""
from __future__ import annotations

import datetime as dt

from ..citizens.national_id import make_national_id

#: (first nine digits of the national ID, mobile, birth date, given name, family name, latin names)
DEMO_CITIZENS = [
    ("001234567", "+989121234567", dt.date(1985, 3, 21), "سارا", "احمدی", "Sara", "Ahmadi"),
    ("002345678", "+989351112233", dt.date(1990, 7, 2), "علی", "رضایی", "Ali", "Rezaei"),
    ("003456789", "+989129876543", dt.date(1962, 12, 30), "مریم", "کریمی", "Maryam", "Karimi"),
    # A minor: counted as a unique adult only from their first login after turning 18.
    ("004567891", "+989901234567", dt.date.today().replace(year=dt.date.today().year - 16), "امید", "نوری",
     "Omid", "Nouri"),
]

#: (client_id, English name, Persian name, kind for the demo app, host, port). The two agencies
#: are on different hosts (127.0.0.1 and localhost), so they are different pairwise sectors and
#: see different `sub`s for the same citizen, as two real agencies would.
DEMO_AGENCIES = [
    ("demo-report-card", "Ministry of Education: Student report card service",
     "وزارت آموزش و پرورش: سامانه‌ی کارنامه‌ی دانش‌آموز",
     "report-card", "127.0.0.1", 5001),
    ("demo-tax", "National Tax Administration: Tax file service",
     "سازمان امور مالیاتی کشور: سامانه‌ی پرونده‌ی مالیاتی", "tax",
     "localhost", 5002),
]


def demo_citizens():
    """The demo citizens with their full national IDs."""
    return [(make_national_id(nine), *rest) for nine, *rest in DEMO_CITIZENS]
