"""The report ``idp stats`` prints: totals, today, this month, and one row per day or month
(overall or for one agency), as a dict, as text, or as CSV.

May import: idp.platform, idp.citizens, idp.protocol, .calendars, .figures, .models.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
from collections import defaultdict

from sqlalchemy import func, select

from ..citizens.models import AuthEvent, CitizenRow
from ..platform.database import db
from ..platform.settings import settings
from ..protocol.models import Client
from .calendars import (
    CALENDARS,
    JALALI,
    StatsError,
    day_bounds,
    day_labels,
    month_key,
    month_labels,
    month_start,
    next_month,
    today,
)
from .figures import daily_series, live_figures, month_client_uniques, month_uniques, totals
from .models import StatDayClient


def _client_names() -> dict[str, tuple[str, str | None]]:
    return {c: (n, fa) for c, n, fa in db.session.execute(select(Client.client_id, Client.name, Client.name_fa))}


def _seen_client(client_id: str) -> bool:
    """A client_id with figures, though no longer registered."""
    return any(db.session.execute(select(col).where(col == client_id).limit(1)).first() is not None
               for col in (AuthEvent.client_id, StatDayClient.client_id))


def _agency_rows(clients: dict[str, dict[str, int]], names, only: str | None) -> list[dict]:
    rows = []
    for c, v in clients.items():
        if only and c != only:
            continue
        name, name_fa = names.get(c, (c, None))
        rows.append({"client_id": c, "name": name, "name_fa": name_fa, **v})
    return sorted(rows, key=lambda r: (-r["logins"], r["client_id"]))


def report(first: dt.date | None = None, last: dt.date | None = None, by: str = "day",
           calendar: str = "gregorian", agency: str | None = None) -> dict:
    """Everything ``idp stats`` prints: totals, today, this month, and one row per day or month."""
    cal = CALENDARS[calendar]
    now_day = today()
    last = min(last or now_day, now_day)
    if first is None:
        first = last - dt.timedelta(days=29) if by == "day" else month_start(last, cal)
        if by == "month":
            for _ in range(11):
                first = month_start(first - dt.timedelta(days=1), cal)
    if first > last:
        raise StatsError("--from is after --to")
    if by == "month":
        first = month_start(first, cal)
    names = _client_names()
    if agency and agency not in names and not _seen_client(agency):
        raise StatsError(f"no client {agency!r} (and no figures for one)")
    out = totals()
    out.update({"timezone": settings.stats.timezone, "calendar": calendar, "by": by, "agency": agency})

    # today and this month
    live = live_figures(now_day)
    label, label_fa = day_labels(now_day, cal)
    t = {"date": now_day.isoformat(), "label": label, "label_fa": label_fa, "source": live.source,
         "approximate": live.approximate}
    t.update(live.client(agency) if agency else
             {"logins": live.logins, "unique_citizens": live.unique_citizens, "new_adults": live.new_adults})
    t["agencies"] = _agency_rows(live.clients, names, agency)
    out["today"] = t
    m0 = month_start(now_day, cal)
    uniques, source = month_uniques(cal, m0, agency)
    mlabel, mlabel_fa = month_labels(m0, cal)
    out["this_month"] = {"month": month_key(m0, cal), "label": mlabel, "label_fa": mlabel_fa,
                         "unique_citizens": uniques, "exact": True, "source": source}

    # the series, and the cumulative unique-adult curve (counted back from the exact total)
    series = daily_series(first, last)
    cumulative = {}
    if series:
        end_of_range = day_bounds(max(series))[1]
        later = db.session.execute(select(func.count()).select_from(CitizenRow).where(
            CitizenRow.first_adult_authenticated_at >= end_of_range)).scalar_one()
        running = out["unique_adults"] - int(later)
        for d in sorted(series, reverse=True):
            cumulative[d] = running
            running -= series[d].new_adults
    rows = []
    if by == "day":
        for d, f in series.items():
            label, label_fa = day_labels(d, cal)
            base = f.client(agency) if agency else {"logins": f.logins, "unique_citizens": f.unique_citizens,
                                                    "new_adults": f.new_adults}
            rows.append({"period": d.isoformat(), "label": label, "label_fa": label_fa, **base,
                         "cumulative_unique_adults": cumulative[d], "source": f.source, "approximate": f.approximate,
                         "agencies": _agency_rows(f.clients, names, agency)})
    else:
        m = first
        while m <= last:
            nxt = next_month(m, cal)
            ds = [d for d in series if m <= d < nxt]
            if ds:
                logins: dict[str, int] = defaultdict(int)
                new: dict[str, int] = defaultdict(int)
                for d in ds:
                    for c, v in series[d].clients.items():
                        logins[c] += v["logins"]
                        new[c] += v["new_adults"]
                per_client = month_client_uniques(cal, m) if not agency else \
                    {agency: month_uniques(cal, m, agency)[0]}
                clients = {c: {"logins": logins[c], "unique_citizens": per_client.get(c, 0), "new_adults": new[c]}
                           for c in set(logins) | set(per_client)}
                uniq, source = month_uniques(cal, m, agency)
                label, label_fa = month_labels(m, cal)
                row = {"period": month_key(m, cal), "label": label, "label_fa": label_fa,
                       "logins": logins[agency] if agency else sum(series[d].logins for d in ds),
                       "unique_citizens": uniq,
                       "new_adults": new[agency] if agency else sum(series[d].new_adults for d in ds),
                       "cumulative_unique_adults": cumulative[max(ds)], "source": source, "approximate": False,
                       "from": min(ds).isoformat(), "to": max(ds).isoformat(),
                       "agencies": _agency_rows(clients, names, agency)}
                rows.append(row)
            m = nxt
    out["from"], out["to"] = first.isoformat(), last.isoformat()
    out["rows"] = rows
    out["_series"] = {d: (f.unique_citizens, cumulative[d], d == now_day) for d, f in series.items()}
    return out


def _range(r: dict) -> str:
    """The report's range as its reader counts: Gregorian days, or in the Jalali calendar its
    Jalali months or days first (Dey 1404 .. Azar 1405 (1404-10-01 .. 1405-09-13 Jalali, ...))."""
    gregorian = f"{r['from']} .. {r['to']}"
    cal = CALENDARS[r["calendar"]]
    if cal != JALALI:
        return gregorian
    first, last = dt.date.fromisoformat(r["from"]), dt.date.fromisoformat(r["to"])
    days = f"{day_labels(first, cal)[0]} .. {day_labels(last, cal)[0]} Jalali"
    if r["by"] == "month":
        return (f"{month_labels(first, cal)[0]} .. {month_labels(month_start(last, cal), cal)[0]} "
                f"({days}, {gregorian})")
    return f"{days} ({gregorian})"


def as_text(r: dict) -> str:
    lines = [f"unique adults who have authenticated: {r['unique_adults']:,}",
             f"adult population: {r['adult_population']:,}  ({r['adult_population_source']}"
             + (f", snapshot {r['adult_population_snapshot_at']}" if r.get("adult_population_snapshot_at") else "")
             + f"; adults are {r['adult_age']} or older)",
             f"coverage: {r['coverage_percent']:.2f}%"]
    if "replica_lag_seconds" in r:
        lines.append(f"read from the replica, {r['replica_lag_seconds']:.1f} s behind the primary")
    t, m = r["today"], r["this_month"]
    who = f" through {r['agency']}" if r["agency"] else ""
    lines.append(f"today ({t['label']}, {r['timezone']}){who}: {t['unique_citizens']:,} unique citizens"
                 f" ({'live, ~0.8% error' if t['approximate'] else 'exact, from auth events'}), "
                 f"{t['logins']:,} logins, {t['new_adults']:,} new adults")
    lines.append(f"this month ({m['label']}){who}: {m['unique_citizens']:,} unique citizens (exact)")
    if t["agencies"] and not r["agency"]:
        lines.append("")
        lines.append("today by agency:")
        lines += [f"  {a['client_id']:<24} {a['logins']:>10,} logins {a['unique_citizens']:>10,} unique  {a['name']}"
                  for a in t["agencies"]]
    lines.append("")
    lines.append(f"by {r['by']}, {_range(r)}{who}:")
    lines.append(f"  {'period':<17} {'logins':>12} {'unique':>12} {'new adults':>11} {'unique adults':>14}")
    for row in r["rows"]:
        mark = " ~" if row["approximate"] else ""
        lines.append(f"  {row['label']:<17} {row['logins']:>12,} {row['unique_citizens']:>12,} "
                     f"{row['new_adults']:>11,} {row['cumulative_unique_adults']:>14,}{mark}")
    if any(row["approximate"] for row in r["rows"]):
        lines.append("  (~ today's unique count is a live estimate; closed days are exact)")
    return "\n".join(lines)


CSV_FIELDS = ["period", "label", "label_fa", "agency", "logins", "unique_citizens", "new_adults",
              "cumulative_unique_adults", "source"]


def as_csv(r: dict) -> str:
    """One line per period overall (agency empty), then one per period and agency."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in r["rows"]:
        if not r["agency"]:
            w.writerow({**row, "agency": ""})
        for a in row["agencies"]:
            w.writerow({"period": row["period"], "label": row["label"], "label_fa": row["label_fa"],
                        "agency": a["client_id"], "logins": a["logins"], "unique_citizens": a["unique_citizens"],
                        "new_adults": a["new_adults"], "cumulative_unique_adults": "", "source": row["source"]})
    return buf.getvalue()
