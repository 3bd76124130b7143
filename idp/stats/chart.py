"""The chart of ``idp stats --plot``: daily unique citizens and the cumulative unique adults.

matplotlib is imported only when a chart is drawn (a heavy import every other command skips).
May import: .calendars.
"""
from __future__ import annotations

import jdatetime

from .calendars import CALENDARS, JALALI, StatsError


def plot(r: dict, path: str) -> None:
    """PNG or SVG (by the file's extension): daily unique citizens and the cumulative unique adults."""
    # matplotlib only here: over half a second of import that every other command would pay.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates  # matplotlib only here (see above)
    from matplotlib.figure import Figure  # matplotlib only here (see above)
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator  # matplotlib only here (see above)

    fmt = path.rsplit(".", 1)[-1].lower()
    if fmt not in ("png", "svg"):
        raise StatsError("--plot needs a .png or .svg file name")
    cal = CALENDARS[r["calendar"]]
    series = r["_series"]
    ds = sorted(series)
    fig = Figure(figsize=(10, 6.5), dpi=110, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    xs = [mdates.date2num(d) for d in ds]
    uniq = [series[d][0] for d in ds]
    colors = ["#9ecae1" if series[d][2] else "#1f77b4" for d in ds]
    top.bar(xs, uniq, width=0.8, color=colors)
    top.set_ylabel("unique citizens per day")
    top.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(v):,}"))
    top.yaxis.set_major_locator(MaxNLocator(integer=True))
    top.grid(axis="y", alpha=0.3)
    bottom.plot(xs, [series[d][1] for d in ds], color="#d62728", marker="o" if len(ds) <= 45 else None,
                markersize=3, linewidth=2)
    bottom.set_ylabel("unique adults, cumulative")
    bottom.set_ylim(bottom=0)
    bottom.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(v):,}"))
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True))  # people come in whole numbers
    bottom.grid(alpha=0.3)
    pop = r["adult_population"]
    title = (f"National sign-in: {r['unique_adults']:,} unique adults, {r['coverage_percent']:.2f}% of "
             f"{pop:,} adults")
    if r["agency"]:
        title += f"  (daily figures: {r['agency']})"
    fig.suptitle(title)

    def label(v, _):
        d = mdates.num2date(v).date()
        if cal == JALALI:
            j = jdatetime.date.fromgregorian(date=d)
            return f"{j.day} {jdatetime.date.j_months_en[j.month - 1]}\n{j.year}"
        return d.strftime("%-d %b\n%Y")

    if cal == JALALI and ds:  # ticks on Jalali days: month starts, or days of the month for short ranges
        span = (ds[-1] - ds[0]).days
        marks = (range(1, 32, 2) if span <= 14 else (1, 8, 15, 22) if span <= 60 else (1, 16) if span <= 180
                 else (1,))
        ticks = [d for d in ds if jdatetime.date.fromgregorian(date=d).day in marks]
        if span > 400:
            ticks = [d for d in ticks if jdatetime.date.fromgregorian(date=d).month in (1, 4, 7, 10)]
        bottom.xaxis.set_major_locator(FixedLocator([mdates.date2num(d) for d in ticks]))
    else:
        bottom.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=4, maxticks=10))
    bottom.xaxis.set_major_formatter(FuncFormatter(label))
    zone_note = f"days in {r['timezone']}, {'Jalali' if cal == JALALI else 'Gregorian'} calendar"
    if any(series[d][2] for d in ds):
        zone_note += "; light bar = today so far"
    bottom.set_xlabel(zone_note)
    fig.savefig(path, format=fmt)
