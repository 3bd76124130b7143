"""``idp stats --by agency-pair``: token exchanges between agencies (RFC 8693) per day and pair,
issued and refused, from the counts each exchange keeps in its own transaction
(protocol.delegations, table ``exchange_days``): exact, one indexed range read.

May import: idp.platform, idp.protocol, .calendars.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
from collections import defaultdict

from ..platform.settings import settings
from ..protocol.delegations import pair_counts
from .calendars import CALENDARS, StatsError, day_labels, today


def pair_report(first: dt.date | None, last: dt.date | None, calendar: str = "gregorian",
                agency: str | None = None) -> dict:
    """One row per day and pair (``agency``: only pairs it is part of), and the range's totals per pair."""
    cal = CALENDARS[calendar]
    last = min(last or today(), today())
    first = first or last - dt.timedelta(days=29)
    if first > last:
        raise StatsError("--from is after --to")
    rows, totals = [], defaultdict(lambda: {"issued": 0, "refused": 0})
    for c in pair_counts(first, last):
        if agency and agency not in (c.from_client_id, c.to_client_id):
            continue
        label, label_fa = day_labels(c.day, cal)
        rows.append({"period": c.day.isoformat(), "label": label, "label_fa": label_fa, "from": c.from_client_id,
                     "to": c.to_client_id, "issued": c.issued, "refused": c.refused})
        pair = totals[(c.from_client_id, c.to_client_id)]
        pair["issued"] += c.issued
        pair["refused"] += c.refused
    return {"by": "agency-pair", "calendar": calendar, "timezone": settings.stats.timezone, "agency": agency,
            "from": first.isoformat(), "to": last.isoformat(), "rows": rows,
            "pairs": [{"from": a, "to": b, **v} for (a, b), v in sorted(totals.items())]}


def pair_text(r: dict) -> str:
    who = f" involving {r['agency']}" if r["agency"] else ""
    lines = [f"token exchanges by agency pair, {r['from']} .. {r['to']} ({r['timezone']}){who}:"]
    if not r["rows"]:
        return lines[0] + " none"
    lines.append(f"  {'day':<17} {'from':<24} {'to':<24} {'issued':>10} {'refused':>10}")
    lines += [f"  {x['label']:<17} {x['from']:<24} {x['to']:<24} {x['issued']:>10,} {x['refused']:>10,}"
              for x in r["rows"]]
    lines.append("")
    lines.append("totals:")
    lines += [f"  {p['from']:<24} -> {p['to']:<24} {p['issued']:>10,} issued {p['refused']:>10,} refused"
              for p in r["pairs"]]
    lines.append("  (to '-': the audience named no registered agency)" if any(p["to"] == "-" for p in r["pairs"])
                 else "")
    return "\n".join(lines).rstrip()


def pair_csv(r: dict) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["period", "label", "label_fa", "from", "to", "issued", "refused"],
                       lineterminator="\n")
    w.writeheader()
    w.writerows(r["rows"])
    return buf.getvalue()
