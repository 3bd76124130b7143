"""``idp citizens``: add one citizen, import the registry from CSV or JSON lines, link a guardian
to a minor.

May import: idp.citizens, .common.
"""
from __future__ import annotations

import datetime as dt

import click

from ..citizens import guardians
from ..citizens.importer import import_file
from ..citizens.national_id import mask_mobile
from ..citizens.records import add_citizen
from ..platform import audit
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
    family_name, given_name_latin, family_name_latin, guardian_national_id) or JSON lines (one
    object per line with those keys), in one transaction, recorded as one registry_imported
    audit event.

    guardian_national_id names the row's guardians (national IDs separated by spaces or ";"):
    where present it is the minor's whole list, so an empty value removes their links. A row
    naming an unknown guardian, the row's own citizen, or given for someone 18 or older is
    rejected.

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


def _guardian_command(obj: Context, guardian: str, minor: str, linking: bool):
    with obj.app.app_context():
        g, m, changed = (guardians.link if linking else guardians.unlink)(guardian, minor)
        data = {"guardian": g.national_id, "minor": m.national_id, "minor_birth_date": m.birth_date.isoformat(),
                "linked" if linking else "removed": changed}
        if changed:
            audit.record("guardian_linked" if linking else "guardian_unlinked", national_id=g.national_id,
                         minor_fp=audit.fingerprint("nid", m.national_id), **audit.operator())
    guardian_id, minor_id = data["guardian"], data["minor"]
    if linking:
        until = guardians.majority_day(dt.date.fromisoformat(data["minor_birth_date"])).isoformat()
        text = (f"linked: {guardian_id} may act for {minor_id} until {until} (the 18th birthday)"
                if changed else f"already linked: {guardian_id} to {minor_id}")
    else:
        text = f"unlinked: {guardian_id} from {minor_id}" if changed else \
            f"not linked: {guardian_id} to {minor_id} (nothing to remove)"
    return data, text


@citizens.command("link-guardian")
@click.option("--guardian", required=True, help="The guardian's national ID.")
@click.option("--minor", required=True, help="The national ID of the minor (under 18 today).")
@json_output
@pass_ctx
def citizens_link_guardian(obj: Context, guardian, minor):
    """Let a guardian act for a minor at agencies that accept guardians, until the minor's 18th
    birthday (the link then ends by itself)."""
    return _guardian_command(obj, guardian, minor, linking=True)


@citizens.command("unlink-guardian")
@click.option("--guardian", required=True, help="The guardian's national ID.")
@click.option("--minor", required=True, help="The minor's national ID.")
@json_output
@pass_ctx
def citizens_unlink_guardian(obj: Context, guardian, minor):
    """Remove a guardian's link to a minor: from now on the chooser no longer offers the minor
    (a code already issued for them is refused at the token endpoint)."""
    return _guardian_command(obj, guardian, minor, linking=False)
