"""The national figures: unique adults, adult population and coverage (more in a later issue)."""
from __future__ import annotations

import datetime as dt

from .citizens import local_date, unique_adults
from .extensions import db, settings
from .models import Citizen, utcnow


def adult_cutoff(today: dt.date, age: int) -> dt.date:
    """The latest birth date of someone who is ``age`` or older on ``today``."""
    try:
        return today.replace(year=today.year - age)
    except ValueError:  # 29 February in a year that has none
        return today.replace(year=today.year - age, day=28)


def adult_population(today: dt.date | None = None) -> int:
    """Adults in the registry today, or the configured figure when one is set."""
    if settings.stats.adult_population:
        return settings.stats.adult_population
    today = today or local_date(utcnow())
    cutoff = adult_cutoff(today, settings.stats.adult_age)
    return int(db.session.execute(db.select(db.func.count()).select_from(Citizen)
                                  .where(Citizen.birth_date <= cutoff)).scalar_one())


def totals() -> dict:
    """unique_adults (exact, one row read), adult_population and coverage_percent."""
    adults = unique_adults()
    population = adult_population()
    coverage = round(100.0 * adults / population, 4) if population else 0.0
    return {"unique_adults": adults, "adult_population": population, "coverage_percent": coverage,
            "as_of": utcnow().isoformat(timespec="seconds")}
