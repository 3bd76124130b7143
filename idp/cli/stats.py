"""``idp stats``: the national figures, and their rollup and prune (for cron).

May import: idp.stats, .common.
"""
from __future__ import annotations

import functools
import os
import sys

import click

from ..platform.database import reports
from ..stats.calendars import StatsError, parse_day
from ..stats.chart import plot
from ..stats.exchanges import pair_csv, pair_report, pair_text
from ..stats.report import as_csv, as_text, report
from ..stats.rollups import prune, rollup
from .common import Context, Output, json_output, pass_ctx


def _stats_day(value):
    """A --from/--to/--day/--before value: YYYY-MM-DD, Gregorian or Jalali (year before 1700)."""
    if value is None:
        return None
    try:
        return parse_day(value)
    except StatsError as exc:
        raise click.BadParameter(str(exc)) from None


def _plot_path(ctx, param, value):
    """--plot FILE: its folder must exist, checked before the report is computed (which may take a while)."""
    if value is not None:
        folder = os.path.dirname(os.path.abspath(value))
        if not os.path.isdir(folder):
            raise click.BadParameter(f"no folder {folder} to write {os.path.basename(value)} in")
    return value


def _stats_errors(fn):
    """StatsError -> one line and exit 1."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StatsError as exc:
            click.echo(f"idp: stats: {exc}", err=True)
            sys.exit(1)
    return wrapper


@click.group(invoke_without_command=True)
@click.option("--from", "date_from", callback=lambda c, p, v: _stats_day(v),
              help="First day (YYYY-MM-DD; a year before 1700 is Jalali) [default: 30 days, or 12 months].")
@click.option("--to", "date_to", callback=lambda c, p, v: _stats_day(v), help="Last day [default: today].")
@click.option("--by", type=click.Choice(["day", "month", "agency-pair"]), default="day", show_default=True,
              help="agency-pair: token exchanges between agencies per day and pair.")
@click.option("--calendar", type=click.Choice(["gregorian", "jalali"]), default="gregorian", show_default=True,
              help="Dates, month names and month boundaries.")
@click.option("--agency", help="Only this client_id's logins, unique citizens and new adults.")
@json_output(help="JSON (unique_adults, adult_population, coverage_percent, ...).")
@click.option("--csv", "csv_out", is_flag=True, help="CSV: one line per period, then per period and agency.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), callback=_plot_path,
              help="Also draw daily unique citizens and cumulative unique adults to FILE (.png or .svg).")
@click.pass_context
@_stats_errors
def stats(ctx, date_from, date_to, by, calendar, agency, csv_out, plot_path):
    """The national figures: unique adults, coverage, today, this month, per day or month and agency.

    Subcommands: rollup (closed days into durable tables; run it from cron), prune (raw events
    already rolled up)."""
    if ctx.invoked_subcommand is not None:
        return None
    obj: Context = ctx.obj
    if by == "agency-pair":
        if plot_path:
            raise StatsError("--plot draws days or months, not agency pairs")
        with obj.app.app_context(), reports(obj.app) as replica_lag:
            data = pair_report(date_from, date_to, calendar, agency)
        if csv_out:
            return Output(None, pair_csv(data), nl=False)
        text = pair_text(data)
        if replica_lag is not None:
            data["replica_lag_seconds"] = round(replica_lag, 1)
            text += f"\nread from the replica, {data['replica_lag_seconds']:.1f} s behind the primary"
        return Output(data, text)
    with obj.app.app_context(), reports(obj.app) as replica_lag:
        data = report(date_from, date_to, by=by, calendar=calendar, agency=agency)
        if plot_path:
            try:
                plot(data, plot_path)
            except OSError as exc:  # a folder not writable, a disk full: one line, no exception name
                raise StatsError(f"--plot {plot_path}: {exc.strerror or exc}") from None
    if replica_lag is not None:
        data["replica_lag_seconds"] = round(replica_lag, 1)
    data.pop("_series", None)
    note = f"chart: {plot_path}" if plot_path else None
    if csv_out:  # CSV has no JSON form: it wins over --json
        return Output(None, as_csv(data), note=note, nl=False)
    return Output(data, as_text(data), note=note)


@stats.command("rollup")
@click.option("--day", callback=lambda c, p, v: _stats_day(v),
              help="Recompute this closed day (default: every closed day not rolled up yet).")
@click.option("--population/--no-population", default=None,
              help="Refresh the registry's birth-date snapshot [default: once a day].")
@json_output
@pass_ctx
@_stats_errors
def stats_rollup(obj: Context, day, population):
    """Compute closed days exactly from auth events into the daily rollups, close finished months.
    Idempotent; safe to run from cron on every node at once."""
    with obj.app.app_context():
        data = rollup(day, population)
    lines = [f"{d['day']}: " + (d["skipped"] if "skipped" in d else
                                f"{d['logins']:,} logins, {d['unique_citizens']:,} unique citizens, "
                                f"{d['new_adults']:,} new adults, {d['clients']} agencies ({d['seconds']} s)")
             for d in data["days"]]
    lines += [f"month {m['month']} ({'Jalali' if m['calendar'] == 'j' else 'Gregorian'}) closed: "
              f"{m['unique_citizens']:,} unique citizens" for m in data["months"]]
    if data["population"]:
        p = data["population"]
        lines.append(f"population snapshot: {p['citizens']:,} citizens, {p['birth_dates']:,} birth dates "
                     f"({p['seconds']} s)")
    return data, "\n".join(lines) or "nothing to roll up"


@stats.command("prune")
@click.option("--before", required=True, callback=lambda c, p, v: _stats_day(v),
              help="Delete raw auth events of days before this one (only rolled-up days of closed months).")
@click.option("--batch", default=50000, show_default=True, type=click.IntRange(100, 1000000))
@json_output
@pass_ctx
@_stats_errors
def stats_prune(obj: Context, before, batch):
    """Delete raw auth events whose figures are final (retention of auth_events)."""
    with obj.app.app_context():
        data = prune(before, batch)
    text = f"deleted {data['deleted']:,} auth events before {data['pruned_before']}"
    if data["held_back"]:
        text += f" (not before {data['requested_before']}: {data['held_back']})"
    return data, text
