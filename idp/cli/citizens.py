"""``idp citizens``: add one citizen, or import the registry from CSV or JSON lines.

May import: idp.citizens, .common.
"""
from __future__ import annotations

import click

from ..citizens.importer import import_file
from ..citizens.national_id import mask_mobile
from ..citizens.records import add_citizen
from ..platform.dates import parse_ymd
from .common import Context, Output, json_output, pass_ctx

#: `idp citizens import`: the valid rows were imported, some rows were rejected.
EXIT_ROWS_REJECTED = 3


@click.group()
def citizens():
    """The citizen registry."""


@citizens.command("add")
@click.option("--national-id", required=True)
@click.option("--mobile", required=True)
@click.option("--birth-date", required=True,
              help="YYYY-MM-DD, Gregorian or Jalali (a year before 1700 is Jalali: 1370-01-01 is 1991-03-21).")
@click.option("--given-name")
@click.option("--family-name")
@json_output
@pass_ctx
def citizens_add(obj: Context, national_id, mobile, birth_date, given_name, family_name):
    """Add one citizen."""
    with obj.app.app_context():
        c = add_citizen(national_id=national_id, mobile=mobile, birth_date=birth_date, given_name=given_name,
                        family_name=family_name)
        data = {"national_id": c.national_id, "mobile": c.mobile, "birth_date": c.birth_date.isoformat()}
    born = f"born {data['birth_date']}" + (f" (Jalali {birth_date.strip()})" if parse_ymd(birth_date)[1] else "")
    return data, f"added {data['national_id']} ({mask_mobile(data['mobile'])}), {born}"


@citizens.command("import")
@click.argument("file", type=click.Path())  # checked by import_file: one-line errors, exit 1
@click.option("--report", "report_path", type=click.Path(),
              help="Write the rejected rows here (CSV, or JSON lines for .jsonl/.ndjson/.json) "
                   "[default: FILE.rejected.csv when any row is rejected].")
@json_output
@pass_ctx
def citizens_import(obj: Context, file, report_path):
    """Import citizens from CSV (header: national_id and any of mobile, birth_date, given_name,
    family_name, given_name_latin, family_name_latin) or JSON lines (one object per line with
    those keys), in one transaction, recorded as one registry_imported audit event.

    Only the columns the file holds are written: a column absent from the CSV header, or a key
    absent from a JSON line, keeps its value for a known citizen. An empty name in a present
    column clears it; an empty mobile or birth date rejects the row. A new citizen needs
    national_id, mobile and birth_date. An unknown CSV column refuses the file; an unknown JSON
    key rejects its row. Rejected rows are reported; the valid rows are still imported.

    \b
    Exit status:
      0  every row imported
      3  some rows rejected (the valid ones imported; the report printed, --json too)
      1  nothing imported: the file cannot be read, is refused, or the database failed
      2  usage or configuration error
    """
    with obj.app.app_context():
        r = import_file(file, report_path)
    lines = [f"loaded {r.loaded:,} (inserted {r.inserted:,}, updated {r.updated:,}, unchanged {r.unchanged:,}), "
             f"rejected {r.rejected:,}; {r.rows:,} rows in {r.seconds:.1f} s ({r.rows_per_second:,.0f} rows/s)"]
    lines += [f"  line {x['line']}: {x['reason']}" for x in r.rejections[:20]]
    if r.rejected > 20:
        lines.append(f"  ... and {r.rejected - 20:,} more")
    if r.report_path:
        lines.append(f"rejected rows: {r.report_path}")
    if not r.rejected:
        return r.as_dict(), "\n".join(lines)
    return Output(r.as_dict(), "\n".join(lines), exit_code=EXIT_ROWS_REJECTED,
                  note=f"idp: {r.rejected:,} of {r.rows:,} rows rejected, {r.loaded:,} imported; see {r.report_path}")
