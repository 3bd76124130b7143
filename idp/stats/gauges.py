"""The figures /metrics shows, read at each scrape: registered with ``idp.platform.metrics.gauge``
by create_app (the platform layer cannot import the figures itself).

May import: idp.platform, idp.citizens, .calendars.
"""
from __future__ import annotations

import logging

from ..citizens.counting import unique_adults
from ..platform import metrics
from ..platform.store import store
from .calendars import today

log = logging.getLogger("idp.metrics")


def unique_citizens_today() -> int | None:
    """Today's live estimate, or None when the store has none: a scrape never falls back to
    scanning auth events."""
    try:
        since, _, _, total = store.live_day(today().isoformat())
    except Exception:  # noqa: BLE001 - the exact unique-adult gauge is what matters
        log.exception("today's figure for /metrics failed")
        return None
    return total if since is not None else None


def register() -> None:
    """Give /metrics its two gauges (again at each create_app: a name registered twice is replaced)."""
    metrics.gauge("idp_unique_adults", "Unique adults who have ever authenticated (exact).", unique_adults)
    metrics.gauge("idp_unique_citizens_today", "Unique citizens today in the configured time zone (live estimate).",
                  unique_citizens_today)
